"""Training one run of a study as its own ``runners.train`` process, or reusing a finished one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import flags

from runners import common
from runners.bench.floor import floor_data, step_floor
from runners.bench.studies import FLOOR_STUDIES

FLAGS = flags.FLAGS


def run_one(label: str, extra: list[str], seed: int, common_flags: list[str]) -> dict:
    model_dir = os.path.join(FLAGS.bench_dir, FLAGS.study, f"{label.replace('/', '_').replace(' ', '_')}-s{seed}")
    metrics_path = os.path.join(model_dir, "metrics.json")
    if FLAGS.report_only and not os.path.exists(metrics_path):
        print(f"  {label} seed {seed}: not run yet", flush=True)
        return None
    differences = {}
    floor_path = os.path.join(model_dir, "floor.json")
    floor = None
    if FLAGS.study in FLOOR_STUDIES and not FLAGS.report_only:
        # The floor is timed alone just before the run, on the same cores, with the same threads.
        data = floor_data()
        model = next(a.split("=", 1)[1] for a in extra if a.startswith("--model="))
        floor = {"parts": step_floor(data, model, extra),
                 "steps_per_epoch": -(-len(data.train) // FLAGS.batch_size)}
    common_flags = settings_for(extra, common_flags)
    if not os.path.exists(metrics_path):
        # An unfinished run of the same flags (a study killed mid-run) continues from its last
        # completed epoch; anything else in the folder is replaced.
        resumable = (os.path.isdir(os.path.join(model_dir, "checkpoints", "latest"))
                     and os.path.exists(os.path.join(model_dir, "flags.cfg"))
                     and not flag_differences(os.path.join(model_dir, "flags.cfg"),
                                              [*common_flags, *extra, f"--seed={seed}"]))
        cmd = [sys.executable, "-m", "runners.train", *common_flags, *extra, f"--seed={seed}",
               f"--model_dir={model_dir}", "--resume" if resumable else "--overwrite",
               "--verbose=0"]
        if resumable:
            print(f"  {label} seed {seed}: resuming the unfinished run in {model_dir}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if resumable and proc.returncode == 2 and "flags differ" in proc.stderr:
            print(f"  {label} seed {seed}: its flags.cfg differs; starting afresh", flush=True)
            cmd[cmd.index("--resume")] = "--overwrite"
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise common.UsageError(f"run {label} seed {seed} failed: {tail}")
        print(f"  {label} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    else:
        differences = flag_differences(os.path.join(model_dir, "flags.cfg"),
                                       [*common_flags, *extra, f"--seed={seed}"])
        if differences:
            print(f"  {label} seed {seed}: reusing the finished run in {model_dir}, whose flags "
                  "differ from this study's: " + ", ".join(
                      f"{name}={had} (study: {want})" for name, (had, want) in differences.items()),
                  flush=True)
    if floor is not None:
        with open(floor_path, "w") as f:
            json.dump(floor, f, indent=2)
    elif os.path.exists(floor_path):
        with open(floor_path) as f:
            floor = json.load(f)
    with open(metrics_path) as f:
        result = {"label": label, "seed": seed, "flags": extra, "model_dir": model_dir,
                  **json.load(f)}
    if floor is not None:
        result["floor"] = floor
    if differences:
        result["flag_differences"] = {name: list(pair) for name, pair in differences.items()}
    return result


def settings_for(extra: list[str], common_flags: list[str]) -> list[str]:
    """``common_flags`` less the model settings that this run's model does not read.

    A study trains several models from one flagfile (the shared setting); a model refuses a
    setting it does not read (``ibmrec_tf.models.check_settings``), so each run is given only
    the shared settings its model reads, under the run's own flags (``extra``: ``--model``,
    ``--backbone``, ``--nofib``, ...). The others stay at their defaults, which that model
    does not read either.
    """
    import dataclasses

    from ibmrec_tf.config import ModelConfig
    from ibmrec_tf.models import settings_read

    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    values = {name: FLAGS[name].value for name in fields if name in FLAGS}
    for _, name, value in common.parse_flag_lines([*common_flags, *extra]):
        if name in fields:
            values[name] = FLAGS[name].parser.parse(value) if name in FLAGS else value
    model = FLAGS.model
    for _, name, value in common.parse_flag_lines(extra):
        if name == "model":
            model = value
    config = common.config_values(ModelConfig, values)
    read = settings_read(model, config)
    kept = []
    for flag in common_flags:
        entries = common.parse_flag_lines([flag])
        if entries and entries[0][1] in fields and entries[0][1] not in read:
            continue
        kept.append(flag)
    return kept


def _same_value(name: str, a: str, b: str) -> bool:
    if a == b:
        return True
    if name.endswith("_dir"):  # the same folder spelled two ways
        return os.path.realpath(a) == os.path.realpath(b)
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def flag_differences(flags_cfg: str, requested: list[str]) -> dict[str, tuple[str, str]]:
    """The requested flags that a finished run's ``flags.cfg`` records with another value.

    A finished run is reused as it is (runs may be shared between studies by copying their
    folders); this says where such a run was trained with other flags, for instance an
    IB coefficient that its model does not read. ``{name: (the run's value, requested value)}``.
    """
    if not os.path.exists(flags_cfg):
        return {}
    with open(flags_cfg) as f:
        had = {name: value for _, name, value in common.parse_flag_lines(f)}
    asked = {name: value for _, name, value in common.parse_flag_lines(requested)}  # last wins
    ignored = {"model_dir", "overwrite", "verbose", "resume"}
    return {name: (had[name], want) for name, want in asked.items()
            if name in had and name not in ignored and not _same_value(name, had[name], want)}


