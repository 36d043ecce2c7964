"""The tune study: a seeded hyper-parameter search on validation, then its best points on new
seeds, and only then test.

* **The search.** Optuna's TPE sampler (seeded by ``--seed``) over the model's search space
  (:func:`ibmrec_tf.tuning.search_space`; ``--tune_params`` narrows it), maximizing the
  validation ``--select_metric`` of the epoch each trial selects. Every trial is a real
  ``runners.train`` process at seed ``--seed``, in ``<bench_dir>/tune/<study>_p<point>-s<seed>``
  (``<point>``: a hash of the trial's values), and this process reads the run's
  ``history.json`` as it trains: Optuna's median pruner stops a trial whose validation curve
  falls below the median of the earlier trials' at the same epoch (after
  ``--tune_warmup_epochs``).
* **Resumable.** The study is stored in ``<bench_dir>/tune.sqlite3`` under a name made of the
  model, the searched settings and the shared flags, so an interrupted search continues where
  it stopped: finished trials are kept, a trial whose process was killed is retried with the
  same values (Optuna's heartbeat and ``RetryHeartbeatStaleTrialCallback``) and its run resumes from
  its last completed epoch. ``--trials`` is the total of finished (complete or pruned) trials
  over every session; ``--jobs`` trials train at once, sharing the storage.
* **Confirmation.** The ``--tune_top`` best complete trials are trained again on the
  ``--seeds`` seeds after ``--seed`` (which none of them was chosen on); the table gives their
  validation and test means with standard errors, and the point chosen is the one with the
  best confirmation-seed validation mean. Test is read only here.

Optuna is an optional extra: ``pip install -e ".[tune]"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
import warnings

from absl import flags

from ibmrec_tf import tuning
from ibmrec_tf.training import HISTORY_FILE
from runners import common
from runners.bench.runs import flag_differences, run_one, settings_for

FLAGS = flags.FLAGS

flags.DEFINE_integer("trials", 20, "tune study: finished (complete or pruned) trials in all, "
                     "over every session.", lower_bound=1)
flags.DEFINE_list("tune_params", [], "tune study: the settings searched (empty: every one of "
                  "the model's space, ibmrec_tf.tuning.RANGES).")
flags.DEFINE_integer("tune_top", 3, "tune study: the best complete trials trained again on "
                     "--seeds new seeds.", lower_bound=1)
flags.DEFINE_integer("tune_warmup_epochs", 3, "tune study: epochs before the median pruner "
                     "may stop a trial.", lower_bound=0)

#: seconds between two reads of a training trial's history.json
POLL_SECONDS = 2.0


def _optuna():
    try:
        import optuna
    except ImportError:
        raise common.UsageError('the tune study needs Optuna: pip install -e ".[tune]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def study_name(common_flags: list[str], space: dict) -> str:
    """The model, and a hash of the searched settings with their ranges and the shared flags:
    another flagfile or space is another study."""
    text = json.dumps({"model": FLAGS.model, "space": {k: repr(v) for k, v in space.items()},
                       "flags": sorted(common_flags), "seed": FLAGS.seed}, sort_keys=True)
    return f"{FLAGS.model}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _space() -> dict:
    try:
        return tuning.search_space(FLAGS.model, common.model_config(), only=FLAGS.tune_params)
    except ValueError as e:
        raise common.UsageError(f"--tune_params: {e}") from None


def _history(model_dir: str) -> list[dict]:
    try:
        with open(os.path.join(model_dir, HISTORY_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):  # not written yet
        return []


def _trial_run(trial, optuna, name, common_flags, space) -> float:
    point = tuning.rounded(tuning.suggest(trial, space))
    key = tuning.point_key(point)
    trial.set_user_attr("key", key)
    label = f"{name}_p{key}"
    extra = [f"--model={FLAGS.model}", *tuning.as_flags(point)]
    model_dir = os.path.join(FLAGS.bench_dir, "tune", f"{label}-s{FLAGS.seed}")
    metric = f"valid/{FLAGS.select_metric}"
    metrics_path = os.path.join(model_dir, "metrics.json")
    run_flags = [*settings_for(extra, common_flags), *extra, f"--seed={FLAGS.seed}"]
    reported = 0

    def report_new():
        nonlocal reported
        for entry in _history(model_dir)[reported:]:
            trial.report(entry[metric], entry["epoch"])
            reported += 1

    if not os.path.exists(metrics_path):
        resumable = (os.path.isdir(os.path.join(model_dir, "checkpoints", "latest"))
                     and not flag_differences(os.path.join(model_dir, "flags.cfg"), run_flags))
        cmd = [sys.executable, "-m", "runners.train", *run_flags, f"--model_dir={model_dir}",
               "--resume" if resumable else "--overwrite", "--verbose=0"]
        start = time.perf_counter()
        log_path = model_dir + ".log"
        os.makedirs(os.path.dirname(model_dir), exist_ok=True)
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            try:
                while proc.poll() is None:
                    time.sleep(POLL_SECONDS)
                    report_new()
                    if trial.should_prune():
                        proc.terminate()
                        proc.wait()
                        print(f"  trial {trial.number} ({label}): pruned at epoch {reported}, "
                              f"{time.perf_counter() - start:.0f} s", flush=True)
                        raise optuna.TrialPruned()
            finally:
                if proc.poll() is None:  # this process interrupted: the run stops with it
                    proc.terminate()
                    proc.wait()
        if proc.returncode != 0:
            with open(log_path) as f:
                tail = (f.read().strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"trial {trial.number} ({label}) failed: {tail}")
    report_new()
    with open(metrics_path) as f:
        value = json.load(f)["valid"][FLAGS.select_metric]
    print(f"  trial {trial.number} ({label}): valid {FLAGS.select_metric} {value:.4f} "
          f"after {reported} epochs", flush=True)
    return value


def tune_study(common_flags: list[str]) -> list[dict]:
    """Runs (or, with ``--report_only``, reads) the search and its confirmation; returns one
    dict per trial (``kind='trial'``) and per confirmation run (``kind='confirm'``)."""
    optuna = _optuna()
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    space = _space()
    name = study_name(common_flags, space)
    os.makedirs(FLAGS.bench_dir, exist_ok=True)
    path = os.path.join(FLAGS.bench_dir, "tune.sqlite3")
    if FLAGS.report_only and not os.path.exists(path):
        raise common.UsageError(f"no tune study in {FLAGS.bench_dir} yet")
    with warnings.catch_warnings():  # the heartbeat is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            f"sqlite:///{path}", heartbeat_interval=30, grace_period=90,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=FLAGS.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5,
                                           n_warmup_steps=FLAGS.tune_warmup_epochs))
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(states=finished))
    print(f"tune study {name} ({path}): {done} of {FLAGS.trials} trials finished; searching "
          f"{', '.join(space)}", flush=True)
    if not FLAGS.report_only and done < FLAGS.trials:
        study.optimize(
            lambda trial: _trial_run(trial, optuna, name, common_flags, space),
            n_trials=FLAGS.trials - done, n_jobs=FLAGS.jobs, catch=(RuntimeError,),
            callbacks=[optuna.study.MaxTrialsCallback(FLAGS.trials, states=finished)])
    trials = study.get_trials(deepcopy=False)
    out = [{"kind": "trial", "study": name, "number": t.number, "state": t.state.name,
            "value": t.value, "params": dict(t.params), "key": t.user_attrs.get("key"),
            "epochs": max(t.intermediate_values, default=0)} for t in trials]
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                      key=lambda t: -t.value)
    # Keep the best of each distinct point (a retried trial repeats its values).
    top, seen = [], set()
    for t in complete:
        if t.user_attrs.get("key") not in seen:
            seen.add(t.user_attrs.get("key"))
            top.append(t)
    for rank, t in enumerate(top[:FLAGS.tune_top], 1):
        extra = [f"--model={FLAGS.model}", *tuning.as_flags(t.params)]
        for seed in range(FLAGS.seed + 1, FLAGS.seed + 1 + FLAGS.seeds):
            r = run_one(f"{name}_p{t.user_attrs['key']}", extra, seed, common_flags)
            if r is not None:
                out.append({**r, "kind": "confirm", "rank": rank, "number": t.number,
                            "search_value": t.value, "params": dict(t.params)})
    return out


def _mean_se(values):
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _params(params: dict) -> str:
    return ", ".join(f"{k}={tuning.rounded({k: v})[k]}" for k, v in sorted(params.items()))


def tune_table(results: list[dict]) -> str:
    metric = FLAGS.select_metric
    trials = [r for r in results if r["kind"] == "trial"]
    lines = [f"Study {trials[0]['study'] if trials else '?'}: {len(trials)} trials "
             f"({sum(t['state'] == 'COMPLETE' for t in trials)} complete, "
             f"{sum(t['state'] == 'PRUNED' for t in trials)} pruned), seed {FLAGS.seed}, "
             f"validation {metric}.", "",
             f"| trial | state | epochs | valid {metric} | settings |", "|---|---|---|---|---|"]
    for t in trials:
        value = "" if t["value"] is None else f"{t['value']:.4f}"
        if value and t["state"] == "PRUNED":  # Optuna keeps the last reported value
            value = f"({value} when pruned)"
        lines.append(f"| {t['number']} | {t['state'].lower()} | {t['epochs']} | {value} | "
                     f"{_params(t['params'])} |")
    confirm = [r for r in results if r["kind"] == "confirm"]
    if confirm:
        seeds = sorted({r["seed"] for r in confirm})
        lines += ["", f"The best {max(r['rank'] for r in confirm)} trials on seeds "
                  f"{', '.join(map(str, seeds))} (not chosen on), mean ± standard error:", "",
                  f"| rank | trial | search valid | valid {metric} | test {metric} | "
                  f"test ndcg@20 | seeds | settings |", "|---|---|---|---|---|---|---|---|"]
        best = None
        for rank in sorted({r["rank"] for r in confirm}):
            rows = [r for r in confirm if r["rank"] == rank]
            v, vse = _mean_se([r["valid"][metric] for r in rows])
            t, tse = _mean_se([r["test"][metric] for r in rows])
            n, nse = _mean_se([r["test"]["ndcg@20"] for r in rows])
            if best is None or v > best[1]:
                best = (rank, v)
            lines.append(f"| {rank} | {rows[0]['number']} | {rows[0]['search_value']:.4f} | "
                         f"{v:.4f} ± {vse:.4f} | {t:.4f} ± {tse:.4f} | {n:.4f} ± {nse:.4f} | "
                         f"{len(rows)} | {_params(rows[0]['params'])} |")
        lines += ["", f"Chosen on the confirmation seeds' validation mean: rank {best[0]}."]
    return "\n".join(lines)
