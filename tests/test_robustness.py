"""Interruption, reproducibility and bad input, exercised through the real command line."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ibmrec_tf.data import DataError, load_dataset
from ibmrec_tf.metrics import ranking_metrics
from tests.conftest import ROOT, run_runner, write_inter

pytestmark = pytest.mark.slow  # subprocesses and trainings: CI runs them, -m "not slow" does not


TRAIN = [sys.executable, "-m", "runners.train", "--dataset=synthetic", "--model=lightgcn",
         "--n_layers=1", "--learning_rate=5e-3", "--epochs=8", "--patience=20", "--seed=3",
         "--verbose=1"]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


def _epochs_done(model_dir) -> int:
    from ibmrec_tf.training import checkpointed_epoch

    try:
        return checkpointed_epoch(str(model_dir))
    except Exception:  # being replaced right now
        return 0


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    run_runner("train", *TRAIN[3:], f"--model_dir={straight}")  # in this process
    killed = tmp_path / "killed"
    proc = subprocess.Popen(TRAIN + [f"--model_dir={killed}"], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _epochs_done(killed) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _epochs_done(killed)
    assert 3 <= done < 8, f"the kill should land mid-run (after epoch {done})"
    resumed = subprocess.run(TRAIN + [f"--model_dir={killed}", "--resume"], cwd=ROOT, env=_env(),
                             check=True, capture_output=True, text=True, timeout=600)
    assert f"after epoch {done}" in resumed.stdout
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert a["best_epoch"] == b["best_epoch"] and b["epochs_run"] == 8
    for split in ("valid", "test"):
        for key, value in a[split].items():
            assert b[split][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (split, key)


def test_unwritable_model_dir_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/ibmrec_tf_cannot_write_here"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = str(locked / "run")
    proc = run_runner("train", *TRAIN[3:], f"--model_dir={target}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: --model_dir {target} is not writable")


# -- property-based tests ---------------------------------------------------------------------

interactions = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 8), st.integers(0, 2)), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=interactions)
def test_random_valid_inter_round_trips(tmp_path_factory, rows):
    folder = tmp_path_factory.mktemp("h")
    # A pair may sit in one split only: keep each pair's first label.
    first = {}
    for u, i, x in rows:
        first.setdefault((u, i), x)
    if 0 not in first.values():
        return
    write_inter(folder / "d", "d", [(u, i, x) for (u, i), x in first.items()])
    ds = load_dataset(str(folder), "d")
    for label, split in enumerate(("train", "valid", "test")):
        expected = sorted((u, i) for (u, i), x in first.items() if x == label)
        assert sorted(map(tuple, ds.split(split).tolist())) == expected
    assert ds.num_users == max(u for u, _ in first) + 1
    assert ds.num_items == max(i for _, i in first) + 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=interactions.filter(lambda r: any(x == 0 for *_, x in r)),
       line=st.integers(0, 39), bad=st.sampled_from(["-1", "x", "1.5", ""]),
       column=st.integers(0, 2))
def test_random_corruption_is_rejected_with_its_line(tmp_path_factory, rows, line, bad, column):
    folder = tmp_path_factory.mktemp("c")
    rows = [list(map(str, r)) for r in rows]
    line = line % len(rows)
    rows[line][column] = bad
    write_inter(folder / "d", "d", rows)
    with pytest.raises(DataError) as err:
        load_dataset(str(folder), "d")
    assert f"d.inter:{line + 2}:" in str(err.value)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), users=st.integers(1, 6), k_max=st.integers(1, 8))
def test_metrics_in_unit_interval_and_match_brute_force(data, users, k_max):
    hits = np.array(data.draw(st.lists(st.lists(st.booleans(), min_size=k_max, max_size=k_max),
                                       min_size=users, max_size=users)), bool)
    targets = np.array([data.draw(st.integers(max(1, int(h.sum())), 10)) for h in hits])
    ks = sorted(set(data.draw(st.lists(st.integers(1, k_max), min_size=1, max_size=3))))
    out = ranking_metrics(hits, targets, ks)
    for k in ks:
        recall = np.mean([h[:k].sum() / t for h, t in zip(hits, targets)])
        dcg = [sum(1 / np.log2(r + 2) for r in range(k) if h[r]) for h in hits]
        idcg = [sum(1 / np.log2(r + 2) for r in range(min(t, k))) for t in targets]
        assert out[f"recall@{k}"] == pytest.approx(recall)
        assert out[f"ndcg@{k}"] == pytest.approx(np.mean(np.array(dcg) / np.array(idcg)))
        for name in ("recall", "precision", "ndcg"):
            assert 0.0 <= out[f"{name}@{k}"] <= 1.0 + 1e-12


@pytest.mark.parametrize("args, message", [
    (["--model=vlattice", "--knn_k=900"], "--knn_k must be < the number of items (900)"),
    (["--model=ibmrec", "--sigma2_fib=0"], "--sigma2_fib must be > 0"),
    (["--model=ibmrec", "--sigma2_gib=-1"], "--sigma2_gib must be > 0"),
    (["--ks=0,20"], "--ks values must be >= 1"),
    (["--export_top_k=0"], "--export_top_k must be >= 1"),
    (["--ks=20,5000"], "--ks: K=5000 exceeds the number of items (900)"),
    (["--model=lightgcn", "--fib"], "--fib is not read by --model=lightgcn"),
    (["--model=vlattice", "--alpha=3"], "--alpha is not read by --model=vlattice"),
    (["--model=ibmrec", "--backbone=vbpr", "--gib"], "GIB does not apply to backbone 'vbpr'"),
])
def test_flag_values_out_of_range(tmp_path, args, message):
    proc = run_runner("train", *TRAIN[3:], f"--model_dir={tmp_path / 'm'}", *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    """A save that dies after writing part of its files leaves the previous epoch's checkpoint
    in force: a resume continues after it."""
    import keras
    import tensorflow as tf
    from ibmrec_tf import training
    from ibmrec_tf.data import make_synthetic
    from ibmrec_tf.models import ModelConfig, build_model

    ds = make_synthetic(seed=0, num_users=60, num_items=40, interactions_per_user=6)

    def trainer(epochs):
        keras.utils.set_random_seed(0)
        model = build_model("bprmf", ds, ModelConfig(embedding_dim=4))
        config = training.TrainConfig(epochs=epochs, batch_size=64, ks=(10, 20), verbose=0)
        return training.Trainer(model, ds, config, str(tmp_path))

    first = trainer(1)
    first.fit()
    weights = first.model.user_embedding.numpy()
    real_write = tf.train.Checkpoint._write

    def dies_half_way(self, file_prefix, *args, **kwargs):
        with open(f"{file_prefix}.index", "wb") as f:  # the first file, then the process dies
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.train.Checkpoint, "_write", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        trainer(2).fit(resume=True)
    monkeypatch.setattr(tf.train.Checkpoint, "_write", real_write)
    assert training.checkpointed_epoch(str(tmp_path)) == 1
    again = trainer(1)
    assert again.resume() and again.state["epoch"] == 1
    np.testing.assert_array_equal(again.model.user_embedding.numpy(), weights)


def test_evaluate_warns_when_data_changed(tmp_path):
    # 10 users x 60 items; user u has items 6u..6u+5: 4 train, 1 valid, 1 test.
    rows = [(u, 6 * u + j, [0, 0, 0, 0, 1, 2][j]) for u in range(10) for j in range(6)]
    write_inter(tmp_path / "data" / "tiny", "tiny", rows)
    model_dir = tmp_path / "m"
    run_runner("train", f"--data_dir={tmp_path / 'data'}", "--dataset=tiny", "--model=bprmf",
               "--epochs=1", f"--model_dir={model_dir}")
    same = run_runner("evaluate", f"--model_dir={model_dir}", check=False)
    assert same.returncode == 0 and "differs" not in same.stderr
    write_inter(tmp_path / "data" / "tiny", "tiny", rows[:-1] + [(9, 20, 2)])
    changed = run_runner("evaluate", f"--model_dir={model_dir}", check=False)
    assert "WARNING: data in" in changed.stderr and "tiny.inter" in changed.stderr
