"""The search spaces, and the tune study: seeded, resumable, pruned on validation, confirmed on
new seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ibmrec_tf import tuning
from ibmrec_tf.config import ModelConfig
from ibmrec_tf.models import MODELS, settings_read
from tests.conftest import ROOT, run_runner

optuna = pytest.importorskip("optuna", reason='the tune study needs Optuna (pip install -e ".[tune]")')

SETTINGS = [(name, ModelConfig(backbone=backbone))
            for name in sorted(MODELS)
            for backbone in (("vbpr", "vlattice", "freedom")
                             if name in ("ibmrec", "mrdib", "ibmrec_mrdib") else ("vlattice",))]


@pytest.mark.parametrize("name,config", SETTINGS,
                         ids=[f"{n}-{c.backbone}" for n, c in SETTINGS])
def test_a_space_holds_only_what_its_model_reads(name, config):
    space = tuning.search_space(name, config)
    assert "learning_rate" in space
    assert set(space) - set(tuning.TRAINING) <= settings_read(name, config)
    # Every searched value is one the model accepts (build_model's check).
    from ibmrec_tf.models import check_settings
    for field, dim in space.items():
        if field in tuning.TRAINING:
            continue
        value = dim.values[-1] if isinstance(dim, tuning.Choice) else (
            int(dim.high) if dim.integer else dim.high)
        check_settings(name, config.replace(**{field: value}))


def test_the_spaces_follow_the_parts():
    assert "alpha" not in tuning.search_space("vlattice", ModelConfig())
    assert {"alpha", "beta", "tau"} <= set(tuning.search_space("ibmrec", ModelConfig()))
    # IBMRec without FIB does not search its coefficient.
    assert "alpha" not in tuning.search_space("ibmrec", ModelConfig(fib=False))
    mrdib = tuning.search_space("mrdib", ModelConfig(backbone="freedom"))
    assert mrdib["mrdib_kl_weight"] == tuning.Choice(tuning.MRDIB_GRID)
    assert {"freedom_dropout", "knn_k"} <= set(mrdib)
    assert list(tuning.search_space("mrdib", ModelConfig(backbone="freedom"),
                                    only=["mrdib_kl_weight"])) == ["mrdib_kl_weight"]
    with pytest.raises(ValueError, match="has no searched setting alpha"):
        tuning.search_space("lightgcn", ModelConfig(), only=["alpha"])
    with pytest.raises(ValueError, match="low < high"):
        tuning.Range(1.0, 1.0)


def test_a_point_is_drawn_written_and_named():
    space = tuning.search_space("ibmrec", ModelConfig())
    point = tuning.suggest(optuna.trial.FixedTrial(
        {"learning_rate": 0.00123456, "alpha": 0.3, "beta": 2.0, "tau": 0.2, "n_layers": 3,
         "item_layers": 1, "knn_k": 20, "reg_weight": 1e-4, "init_stddev": 0.01}), space)
    assert list(point) == list(space)
    flags = tuning.as_flags(point)
    assert "--learning_rate=0.001235" in flags and "--knn_k=20" in flags
    assert flags == sorted(flags)
    assert tuning.rounded(point)["learning_rate"] == 0.001235
    key = tuning.point_key(tuning.rounded(point))
    assert len(key) == 12 and key == tuning.point_key(dict(reversed(list(point.items()))))
    assert key != tuning.point_key({**point, "alpha": 0.31})


def test_without_optuna_the_study_says_what_to_install(monkeypatch):
    from runners import common
    from runners.bench import tune

    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(common.UsageError, match=r'pip install -e "\.\[tune\]"'):
        tune._optuna()


PRUNE_SCRIPT = """
import json, sys
import optuna
from absl import flags
import runners.benchmark  # the study's flags
from runners.bench import tune

flags.FLAGS(["benchmark", "--study=tune", "--dataset=synthetic", "--model=lightgcn",
             "--epochs=30", "--patience=30", "--bench_dir=" + sys.argv[1]])

class PrunedAfterTwo(optuna.trial.FixedTrial):
    reports = []
    def report(self, value, step):
        self.reports.append((step, value))
    def should_prune(self):
        return len(self.reports) >= 2
    def set_user_attr(self, key, value):
        pass

trial = PrunedAfterTwo({"learning_rate": 1e-3, "n_layers": 1, "reg_weight": 1e-4, "init_stddev": 0.01})
space = tune._space()
try:
    tune._trial_run(trial, optuna, "prune-test", [], space)
    print(json.dumps({"pruned": False}))
except optuna.TrialPruned:
    print(json.dumps({"pruned": True, "reports": trial.reports}))
"""


@pytest.mark.slow
def test_a_trial_is_stopped_when_the_pruner_says_so(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", PRUNE_SCRIPT, str(tmp_path)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["pruned"]
    steps = [step for step, _ in out["reports"]]
    assert steps[:2] == [1, 2]
    (run_dir,) = [p for p in (tmp_path / "tune").iterdir() if p.is_dir()]
    history = json.loads((run_dir / "history.json").read_text())
    # The run was stopped long before its 30 epochs, and left no final metrics.
    assert 2 <= len(history) < 30 and not (run_dir / "metrics.json").exists()
    assert [e["valid/recall@20"] for e in history[:2]] == [v for _, v in out["reports"][:2]]


@pytest.mark.slow
def test_the_study_searches_resumes_and_confirms_on_new_seeds(tmp_path):
    bench = tmp_path / "bench"
    common = ["--study=tune", "--dataset=synthetic", "--model=lightgcn", "--epochs=2",
              "--seeds=1", "--tune_top=1", f"--bench_dir={bench}"]
    first = run_runner("benchmark", *common, "--trials=2")
    assert "0 of 2 trials finished" in first.stdout
    report = json.loads((bench / "tune.json").read_text())["runs"]
    trials = [r for r in report if r["kind"] == "trial"]
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE"]
    # Each trial's value is its run's validation recall at the epoch it selected.
    for t in trials:
        run_dir = next(p for p in (bench / "tune").iterdir() if t["key"] in p.name
                       and p.name.endswith("-s0") and p.is_dir())
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert t["value"] == pytest.approx(metrics["valid"]["recall@20"])
    (confirm,) = [r for r in report if r["kind"] == "confirm"]
    best = max(trials, key=lambda t: t["value"])
    assert confirm["seed"] == 1 and confirm["number"] == best["number"]
    assert confirm["model_dir"].endswith(f"_p{best['key']}-s1")
    # Resumed: the two finished trials are kept, one more is drawn; the confirmation reused.
    second = run_runner("benchmark", *common, "--trials=3")
    assert "2 of 3 trials finished" in second.stdout
    again = [r for r in json.loads((bench / "tune.json").read_text())["runs"]
             if r["kind"] == "trial"]
    assert len(again) == 3 and again[:2] == trials
    if max(again, key=lambda t: t["value"])["number"] == best["number"]:
        assert "seed 1:" not in second.stdout  # the confirmation run is reused, not retrained
    only = run_runner("benchmark", *common, "--trials=3", "--report_only")
    assert "3 of 3 trials finished" in only.stdout and "| rank |" in only.stdout
