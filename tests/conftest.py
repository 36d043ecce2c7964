"""Shared fixtures: tiny datasets written to temporary folders, and the real data when present."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # The runners' thread settings (--intra_op_threads=1, --inter_op_threads=0), fixed before
    # TensorFlow starts, so that the command lines run in this process (run_runner) train as
    # they would in their own.
    from runners.cli import import_tensorflow_quietly

    tf = import_tensorflow_quietly()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(0)
    config.addinivalue_line(
        "markers", "slow: a long training, statistical or subprocess test; "
                   "python -m pytest -m 'not slow' tests runs the rest (a few minutes on 2 cores)")
SHARED_DATA = ROOT.parent / "shared" / "data"

#: Runners whose flags share names with the training runners' (--split, --resume, ...): they
#: run in a process of their own.
OWN_PROCESS = ("prepare_data", "extract_features")


def run_runner(module: str, *args: str, check: bool = True,
               own_process: bool = False) -> subprocess.CompletedProcess:
    """``python -m runners.<module> *args`` from the repository root, by default in this
    process (``runners.cli.invoke``: the same flags, output and exit status, without a
    TensorFlow import per call); ``own_process`` (and the runners in ``OWN_PROCESS``) in a
    subprocess. Raises with the output when ``check`` and the exit status is not 0."""
    command = [sys.executable, "-m", f"runners.{module}", *args]
    if own_process or module in OWN_PROCESS:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
    else:
        import contextlib
        import importlib
        import io

        from runners import cli

        main = importlib.import_module(f"runners.{module}").main
        out, err = io.StringIO(), io.StringIO()
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            code = cli.invoke(main, [f"runners.{module}", *args])
        proc = subprocess.CompletedProcess(command, code, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"runners.{module} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def model_cases():
    """``(model, backbone)`` of every registered model: each denoised model on every backbone,
    the others with ``None``."""
    from ibmrec_tf.models import MODELS, DenoisedRecommender
    from ibmrec_tf.models.denoised import BACKBONES

    for name, cls in MODELS.items():
        if issubclass(cls, DenoisedRecommender):
            for backbone in BACKBONES:
                yield name, backbone
        else:
            yield name, None


@pytest.fixture
def shared_data() -> pathlib.Path:
    """``../shared/data`` beside the checkout (present in CI); skips the test when it is absent."""
    if not (SHARED_DATA / "tiktok" / "tiktok.inter").is_file():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (CI has it; a fresh clone "
                    f"does not): real-data test skipped")
    return SHARED_DATA


def write_inter(folder: pathlib.Path, name: str, rows, header="userID\titemID\tx_label") -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.inter"
    path.write_text(header + "\n" + "".join("\t".join(str(v) for v in r) + "\n" for r in rows))
    return path


# 4 users, 5 items; every user has a train item, users 0-2 have valid items, users 0, 1, 3 test.
TINY_ROWS = [
    (0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 2),
    (1, 1, 0), (1, 2, 0), (1, 4, 1), (1, 0, 2),
    (2, 3, 0), (2, 4, 0), (2, 0, 1),
    (3, 2, 0), (3, 4, 2),
]


@pytest.fixture
def tiny_dir(tmp_path) -> pathlib.Path:
    """``<tmp>/tiny/tiny.inter`` plus 2 modalities of features (5 items)."""
    folder = tmp_path / "tiny"
    write_inter(folder, "tiny", TINY_ROWS)
    rng = np.random.default_rng(0)
    np.save(folder / "image_feat.npy", rng.normal(size=(5, 6)).astype(np.float16))
    np.save(folder / "text_feat.npy", rng.normal(size=(5, 4)).astype(np.float32))
    return tmp_path


@pytest.fixture(scope="module")
def small():
    """90 users, 60 items, two small modalities: the multimodal models' unit-test data."""
    from ibmrec_tf.data import make_synthetic
    return make_synthetic(seed=0, num_users=90, num_items=60, interactions_per_user=8,
                          modality_dims={"image": 12, "text": 10})


@pytest.fixture(scope="module")
def batch(small):
    """The first 256-triplet batch of ``small``'s first epoch."""
    from ibmrec_tf.data import TripletSampler
    return next(iter(TripletSampler(small, 0).epoch_dataset(1, 256)))
