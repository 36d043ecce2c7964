"""One typed entry point for a whole run: :func:`run` trains, selects, checkpoints, exports and
reports, from configs (it never reads flags). ``runners.train`` is a thin command line over it.

From Python (``ibmrec_tf.run`` is this function)::

    import ibmrec_tf
    from ibmrec_tf.config import DataConfig, ModelConfig, TrainConfig

    result = ibmrec_tf.run(model="ibmrec", data=DataConfig(dataset="synthetic"),
                           model_config=ModelConfig(knn_k=5),
                           train_config=TrainConfig(epochs=3), model_dir="runs/notebook")
    result.metrics["test"]["recall@20"], result.export_dir

What it writes into ``model_dir``: ``config.json`` (the resolved configs,
:func:`ibmrec_tf.config.read_configs`), ``run_info.json`` (version, data checksums),
``checkpoints/``, ``logs/`` (TensorBoard, HParams), ``metrics.json`` and the SavedModel under
``export/``. Under a multi-worker strategy only the chief writes it; the other workers train
into a temporary folder and resume from the chief's checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from typing import Callable

import keras
import tensorflow as tf

from ibmrec_tf import __version__, export, memory
from ibmrec_tf.config import DataConfig, ModelConfig, TrainConfig, read_configs, write_configs
from ibmrec_tf.data import Dataset, DataError, file_checksums
from ibmrec_tf.models import Recommender, build_model
from ibmrec_tf.training import (CHECKPOINT_DIR, TrainResult, Trainer, write_hparams,
                                write_json)


class BuildError(ValueError):
    """The model cannot be built from these settings on this data (one line, naming why)."""


@dataclasses.dataclass
class RunResult:
    """What :func:`run` gives back: the trained model (at the epoch selected on validation),
    the trainer's result, where it wrote, and the ``metrics.json`` payload (None on a
    non-chief worker)."""

    model: Recommender
    train: TrainResult
    model_dir: str
    export_dir: str | None
    metrics: dict | None


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether this process writes the model directory: always, except a non-chief task of a
    multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def run(*, model: str, data: Dataset | DataConfig, model_dir: str,
        model_config: ModelConfig | None = None, train_config: TrainConfig | None = None,
        data_config: DataConfig | None = None,
        strategy: tf.distribute.Strategy | None = None, resume: bool = False,
        export_top_k: int = 50, echo: Callable[[str], None] = print,
        command: str = "") -> RunResult:
    """Trains ``model`` on ``data`` into ``model_dir`` and exports the epoch selected on
    validation.

    Args:
      model: a name of :data:`ibmrec_tf.models.MODELS`.
      data: a loaded :class:`~ibmrec_tf.data.Dataset`, or a :class:`DataConfig` to load (with
        ``train_config.seed``).
      model_dir: the run's folder. A folder that holds checkpoints is refused unless
        ``resume`` (which continues from its last completed epoch; the model, data and model
        settings must be those of its ``config.json``, the training settings may change).
      model_config, train_config: the settings (defaults when None).
      data_config: what ``config.json`` records for ``data`` when ``data`` is a Dataset.
      strategy: a ``tf.distribute`` strategy to build and train under (None: the default
        device).
      export_top_k: the SavedModel's ``serving_default`` list length (at most the items).
      echo: where progress lines go (``lambda _: None`` for none).
      command: the command line recorded in ``run_info.json``.

    Raises:
      BuildError: the model cannot be built from these settings (``ConfigError`` for a setting
        the model does not read, or a bad combination); DataError: the data cannot be read.
      FileExistsError, ValueError: ``model_dir`` holds another run, or ``resume`` with a
        different model, data or model settings.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    if isinstance(data, DataConfig):
        data_config, dataset = data, data.load(seed=train_config.seed)
    else:
        dataset = data
    # Before anything large is built or written: the estimate from the shapes alone.
    estimate = memory.check_fits(model, memory.Shapes.of(dataset), model_config, train_config,
                                 train_config.memory_limit_gb)
    chief = is_chief(strategy)
    if chief:
        _prepare(model_dir, model, data_config, model_config, train_config, dataset, resume,
                 command)
    keras.utils.set_random_seed(train_config.seed)
    build_start = time.perf_counter()
    try:
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            recommender = build_model(model, dataset, model_config, seed=train_config.seed)
    except ValueError as e:  # ConfigError included
        if isinstance(e, DataError):
            raise
        raise BuildError(str(e)) from None
    build_seconds = time.perf_counter() - build_start  # its graphs (kNN included) and tables
    work_dir = model_dir if chief else tempfile.mkdtemp(prefix="ibmrec_tf-worker-")
    trainer = Trainer(recommender, dataset, train_config, work_dir, strategy=strategy,
                      write_logs=chief, echo=echo if chief else (lambda _: None),
                      restore_dir=os.path.join(model_dir, CHECKPOINT_DIR))
    try:
        result = trainer.fit(resume=resume and _has_checkpoints(model_dir))
    finally:
        if not chief:
            shutil.rmtree(work_dir, ignore_errors=True)
    if not chief:
        return RunResult(recommender, result, model_dir, None, None)

    users, items = recommender.final_embeddings()
    export_dir = export.export_saved_model(
        os.path.join(model_dir, "export"), users.numpy(), items.numpy(),
        dataset.interaction_matrix("train"), top_k=min(export_top_k, dataset.num_items),
        metadata={"model": model, "dataset": dataset.name, "best_epoch": result.best_epoch})
    metrics = {
        "model": model, "dataset": dataset.name, "seed": train_config.seed,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early, "seconds_per_epoch": result.seconds_per_epoch,
        "eval_seconds": result.eval_seconds, "build_seconds": round(build_seconds, 3),
        "estimated_peak_mb": round(estimate.peak / 2 ** 20, 1),
        "valid": result.valid, "test": result.test,
        "epoch_seconds": [round(t, 3) for t in trainer.state["train_seconds"]],
        "train_interactions": int(len(dataset.train)),
        "peak_rss_mb": round(memory.peak_rss_bytes() / 2 ** 20, 1),
        "device": device_name(),
        "notes": list(dataset.notes)}
    write_json(os.path.join(model_dir, "metrics.json"), metrics)
    write_hparams(os.path.join(model_dir, "logs", "hparams"),
                  {"model": model, "dataset": dataset.name, "seed": train_config.seed,
                   **model_config.to_dict(), **train_config.to_dict()},
                  {**{f"hparams/valid_{k}": v for k, v in result.valid.items() if "@" in k},
                   **{f"hparams/test_{k}": v for k, v in result.test.items() if "@" in k},
                   "hparams/best_epoch": result.best_epoch,
                   "hparams/seconds_per_epoch": result.seconds_per_epoch},
                  trial_id=os.path.basename(os.path.normpath(model_dir)))
    return RunResult(recommender, result, model_dir, export_dir, metrics)


def _has_checkpoints(model_dir: str) -> bool:
    folder = os.path.join(model_dir, CHECKPOINT_DIR)
    return os.path.isdir(folder) and bool(os.listdir(folder))


def _prepare(model_dir, model, data_config, model_config, train_config, dataset, resume,
             command) -> None:
    """Creates ``model_dir`` and writes ``config.json`` and ``run_info.json``; on ``resume``,
    checks the configs against the saved ones instead."""
    os.makedirs(model_dir, exist_ok=True)
    saved = os.path.join(model_dir, "config.json")
    if resume and os.path.exists(saved):
        # What the checkpoints were trained as must match; the training settings may change
        # (more epochs, another patience), and config.json then records the new ones.
        then = read_configs(model_dir)
        now = (model, data_config or then[1], model_config)
        for what, a, b in zip(("model", "data", "model_config"), then, now):
            if a != b:
                raise ValueError(f"resume: {what} differs from {saved}; resume with the saved "
                                 f"configs (ibmrec_tf.config.read_configs)")
        write_configs(model_dir, model, now[1], model_config, train_config)
        return
    if _has_checkpoints(model_dir) and not resume:
        raise FileExistsError(f"{model_dir} holds checkpoints of another run; pass "
                              f"resume=True to continue it, or choose a new model_dir")
    write_configs(model_dir, model, data_config or DataConfig(dataset=dataset.name),
                  model_config, train_config)
    checksums = file_checksums(dataset.source) if os.path.isdir(dataset.source) else {}
    write_json(os.path.join(model_dir, "run_info.json"), {
        "ibmrec_tf_version": __version__, "command": command,
        "dataset": dataset.summary(), "data_source": dataset.source, "data_sha256": checksums,
        "notes": list(dataset.notes)})


def device_name() -> str:
    """The GPU TensorFlow trains on, else the CPU's model name (for timing tables)."""
    import platform

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"CPU {model} ({os.cpu_count()} cores)"
