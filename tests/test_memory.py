"""The peak-memory estimate: its parts follow the shapes and settings, a run that would not fit
stops before building anything, and the estimate is near a measured peak."""

import dataclasses
import json
import os

import pytest

from ibmrec_tf.config import ModelConfig, TrainConfig
from ibmrec_tf.memory import (GIB, KNN_BLOCK_ROWS, MemoryBudgetError, Shapes, available_bytes,
                              check_fits, estimate_peak_memory, estimate_run, peak_rss_bytes)
from tests.conftest import run_runner

ELEC = Shapes(num_users=192403, num_items=63001, train=1245800, interactions=1689408,
              modality_dims={"image": 4096, "text": 384})


def test_each_part_follows_its_shape_or_setting():
    config, train = ModelConfig(n_layers=1), TrainConfig(batch_size=2048)
    vlattice = estimate_peak_memory("vlattice", ELEC, config, train).parts
    lightgcn = estimate_peak_memory("lightgcn", ELEC, config, train).parts
    # Features: the file mapping (read by the loader's check) and the model's scaled float32
    # copy, which ID-only models do not make.
    assert vlattice["features"] == 2 * 63001 * (4096 + 384) * 4
    assert lightgcn["features"] == 63001 * (4096 + 384) * 4 and lightgcn["build"] == 0
    # The kNN block is built only for item-item models: 2048 rows of every item.
    vbpr = estimate_peak_memory("vbpr", ELEC, config, train).parts
    assert vlattice["build"] - vbpr["build"] == KNN_BLOCK_ROWS * 63001 * 16
    # The evaluation block is linear in --eval_batch_size; the tables do not depend on it.
    wide = estimate_peak_memory("vlattice", ELEC, config,
                                dataclasses.replace(train, eval_batch_size=1024)).parts
    embeddings = (192403 + 63001) * 64 * 3 * 4
    assert wide["evaluation"] - embeddings == pytest.approx(
        2 * (vlattice["evaluation"] - embeddings))
    assert wide["tables"] == vlattice["tables"]
    # Content models hold C (users x d per modality) with its Adam slots and gradient.
    assert vlattice["tables"] - lightgcn["tables"] >= 4 * 4 * 192403 * 64 * 2
    # A denoiser on a backbone is estimated as that backbone (plus MRdIB's noise bank).
    ibmrec = estimate_peak_memory("ibmrec", ELEC, dataclasses.replace(config, backbone="freedom"),
                                  train)
    assert ibmrec.parts == estimate_peak_memory("freedom", ELEC, config, train).parts
    mrdib = estimate_peak_memory("mrdib", ELEC, dataclasses.replace(config, backbone="freedom"),
                                 train)
    assert mrdib.parts["tables"] - ibmrec.parts["tables"] == (1 << 16) * 64 * 4
    assert mrdib.peak >= ibmrec.peak


def test_a_run_over_the_limit_is_refused_naming_what_lowers_it():
    config, train = ModelConfig(), TrainConfig()
    estimate = check_fits("vlattice", ELEC, config, train, limit_gb=-1)  # no check
    assert estimate.peak > 5 * GIB
    with pytest.raises(MemoryBudgetError) as e:
        check_fits("vlattice", ELEC, config, train, limit_gb=3.0)
    message = str(e.value)
    assert "\n" not in message and "exceeds the 3.0 GiB --memory_limit_gb" in message
    # Dropping the 4096-d image modality saves most; each named setting does lower the estimate.
    assert "--modalities=text" in message.split("lower it with ")[1].split(",")[0]
    assert check_fits("vlattice", dataclasses.replace(ELEC, modality_dims={"text": 384}),
                      config, train, limit_gb=-1).peak < estimate.peak
    assert check_fits("vlattice", ELEC, config, train, limit_gb=estimate.peak / GIB + 0.01) \
        is not None
    available = available_bytes()
    assert available is None or 0 < available < 1 << 50


def test_the_peak_is_the_process_own_not_its_parent():
    """A child started by a process that once held 600 MB reports its own small peak: the
    figure in metrics.json is the run's, whatever started it."""
    import subprocess
    import sys

    script = ("import subprocess, sys\n"
              "block = bytearray(600 * 2 ** 20)\n"
              "block[::4096] = b'x' * len(block[::4096])\n"
              "del block\n"
              "child = subprocess.run([sys.executable, '-c', 'from ibmrec_tf.memory import "
              "peak_rss_bytes; print(peak_rss_bytes())'], capture_output=True, text=True, "
              "check=True)\n"
              "from ibmrec_tf.memory import peak_rss_bytes\n"
              "print(peak_rss_bytes(), child.stdout.strip())\n")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    parent, child = int(out[0]), int(out[1])
    assert parent > 600 * 2 ** 20
    assert 0 < child < 200 * 2 ** 20, (parent, child)
    assert 0 < peak_rss_bytes()


def test_the_runner_stops_before_building_and_writes_nothing(tmp_path):
    model_dir = tmp_path / "run"
    proc = run_runner("train", "--dataset=synthetic", "--model=vlattice", "--epochs=1",
                      f"--model_dir={model_dir}", "--memory_limit_gb=0.5", check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "estimated peak memory" in lines[0] and "--memory_limit_gb" in lines[0]
    assert not model_dir.exists()


@pytest.mark.slow
def test_the_estimate_is_near_a_measured_peak(tmp_path):
    """At the demo's size the runtime dominates; the measured peak is the process's own
    (``VmHWM``, not the ``ru_maxrss`` a subprocess inherits from its parent)."""
    model_dir = tmp_path / "run"
    run_runner("train", "--dataset=synthetic", "--model=ibmrec", "--epochs=1",
               f"--model_dir={model_dir}", "--verbose=0", own_process=True)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    ratio = metrics["peak_rss_mb"] / metrics["estimated_peak_mb"]
    assert 0.6 < ratio < 1.6, metrics
    assert os.path.isdir(model_dir / "export")
    # The run's estimate, recomputed from its config.json alone.
    assert estimate_run(str(model_dir)).peak / 2 ** 20 == pytest.approx(
        metrics["estimated_peak_mb"], abs=0.1)
