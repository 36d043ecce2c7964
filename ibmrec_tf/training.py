"""The training loop: epochs of ``model.train_step``, validation, early stopping, checkpoints.

The loop knows nothing model-specific: every update rule lives in the model's ``train_step``.
Each epoch it

1. feeds the epoch's BPR triplets (a pure function of ``(seed, epoch)``) to the compiled
   ``train_step``, logging every loss term to TensorBoard;
2. evaluates full-ranking metrics on the validation split;
3. keeps the best weights by ``select_metric`` (validation only) and stops after ``patience``
   epochs without improvement;
4. writes a checkpoint atomically (model, optimizers, loop state), so a killed run restarted
   with ``resume=True`` continues after the last completed epoch.

At the end the best weights are restored and evaluated once on validation and once on test.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import sys
import time
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
import keras

from ibmrec_tf.data import Dataset, TripletSampler
from ibmrec_tf.evaluation import Evaluator
from ibmrec_tf.models.base import Recommender

logger = logging.getLogger("ibmrec_tf")

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.npz"
BEST = "best.npz"


class NumericalError(RuntimeError):
    """A loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
      epochs: the maximum number of epochs.
      batch_size: triplets per step.
      learning_rate: Adam's learning rate (every optimizer of the model).
      patience: epochs without a better validation ``select_metric`` before stopping.
      seed: seeds the weights' initialization (by the caller) and the triplet sampler.
      ks: cut-offs of the reported metrics.
      select_metric: the validation metric that selects the epoch.
      log_every: steps between TensorBoard loss summaries.
      eval_batch_size: users per full-ranking batch.
      verbose: 0 silent, 1 a progress bar and a line per epoch.
    """

    epochs: int = 1000
    batch_size: int = 1024
    learning_rate: float = 5e-4
    patience: int = 10
    seed: int = 0
    ks: Sequence[int] = (10, 20, 50)
    select_metric: str = "recall@20"
    log_every: int = 10
    eval_batch_size: int = 512
    verbose: int = 1


@dataclasses.dataclass
class TrainResult:
    best_epoch: int
    epochs_run: int
    valid: dict
    test: dict
    seconds_per_epoch: float
    eval_seconds: float
    stopped_early: bool
    history: list


def _atomic_savez(path: str, **arrays) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def model_state(model: Recommender, with_optimizers: bool = True) -> dict[str, np.ndarray]:
    state = {f"model/{i}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)}
    if with_optimizers:
        for name, opt in model.optimizers.items():
            for i, v in enumerate(opt.variables):
                state[f"opt/{name}/{i}"] = np.asarray(v.numpy())
    return state


def restore_model_state(model: Recommender, state, with_optimizers: bool = True) -> None:
    weights = model.weights
    count = sum(1 for k in state.keys() if k.startswith("model/"))
    if count != len(weights):
        raise ValueError(f"checkpoint holds {count} model variables, the model has {len(weights)}")
    for i, v in enumerate(weights):
        value = state[f"model/{i}"]
        if tuple(value.shape) != tuple(v.shape):
            raise ValueError(f"checkpoint variable {i} ({v.path}) has shape {value.shape}, "
                             f"the model expects {tuple(v.shape)}")
        v.assign(value)
    if with_optimizers:
        for name, opt in model.optimizers.items():
            for i, v in enumerate(opt.variables):
                v.assign(state[f"opt/{name}/{i}"])


def load_weights(model: Recommender, path: str) -> None:
    """Loads the model variables of a checkpoint file (``best.npz`` or ``latest.npz``)."""
    with np.load(path) as state:
        restore_model_state(model, state, with_optimizers=False)


class Trainer:
    """Trains one model on one dataset into ``model_dir`` (see the module docstring)."""

    def __init__(self, model: Recommender, dataset: Dataset, config: TrainConfig, model_dir: str,
                 *, echo: Callable[[str], None] = print):
        if config.select_metric.split("@")[0] not in ("recall", "precision", "ndcg"):
            raise ValueError(f"select_metric {config.select_metric!r} is not a ranking metric")
        self.model = model
        self.dataset = dataset
        self.config = config
        self.model_dir = model_dir
        self.echo = echo if config.verbose else (lambda _: None)
        self.ckpt_dir = os.path.join(model_dir, CHECKPOINT_DIR)
        os.makedirs(self.ckpt_dir, exist_ok=True)
        self.sampler = TripletSampler(dataset, config.seed)
        self.valid_evaluator = Evaluator(dataset, "valid", ks=config.ks,
                                         batch_size=config.eval_batch_size)
        if config.select_metric not in [f"{m}@{k}" for m in ("recall", "precision", "ndcg")
                                        for k in self.valid_evaluator.ks]:
            raise ValueError(f"select_metric {config.select_metric!r} needs its cut-off in ks")
        if not model.optimizers:
            model.create_optimizers(config.learning_rate)
        self._train_step = tf.function(model.train_step, reduce_retracing=True)
        self.writers = {s: tf.summary.create_file_writer(os.path.join(model_dir, "logs", s))
                        for s in ("train", "valid")}
        self.state = {"epoch": 0, "best_epoch": 0, "best_value": -math.inf, "wait": 0,
                      "history": [], "train_seconds": []}

    # -- checkpoints --------------------------------------------------------------------------
    def _save(self, best: bool) -> None:
        trainer_state = np.frombuffer(json.dumps(self.state).encode(), dtype=np.uint8)
        if best:
            _atomic_savez(os.path.join(self.ckpt_dir, BEST), **model_state(self.model, False))
        _atomic_savez(os.path.join(self.ckpt_dir, LATEST), trainer_state=trainer_state,
                      **model_state(self.model))

    def resume(self) -> bool:
        """Restores the latest checkpoint if there is one; returns whether it did."""
        path = os.path.join(self.ckpt_dir, LATEST)
        if not os.path.exists(path):
            return False
        with np.load(path) as state:
            restore_model_state(self.model, state)
            self.state = json.loads(state["trainer_state"].tobytes().decode())
        self.echo(f"resumed from {path} after epoch {self.state['epoch']}")
        return True

    # -- the loop -----------------------------------------------------------------------------
    def _run_epoch(self, epoch: int) -> dict:
        cfg = self.config
        steps = self.sampler.steps_per_epoch(cfg.batch_size)
        # A live bar on a terminal; in logs (not a TTY) the per-epoch line is the progress output.
        show_bar = bool(cfg.verbose) and sys.stdout.isatty()
        bar = keras.utils.Progbar(steps, verbose=1 if show_bar else 0, unit_name="step")
        sums: dict[str, float] = {}
        step0 = (epoch - 1) * steps
        with self.writers["train"].as_default():
            for i, batch in enumerate(self.sampler.epoch_dataset(epoch, cfg.batch_size)):
                terms = self._train_step(batch)
                values = {k: float(v) for k, v in terms.items() if not v.shape.rank}
                for name, value in values.items():
                    if not math.isfinite(value):
                        raise NumericalError(f"loss term {name!r} is {value} at epoch {epoch}, "
                                             f"step {i + 1}")
                    sums[name] = sums.get(name, 0.0) + value
                if (step0 + i) % cfg.log_every == 0:
                    for name, value in values.items():
                        tf.summary.scalar(f"train/{name}", value, step=step0 + i)
                    for name, tensor in terms.items():
                        if tensor.shape.rank:
                            tf.summary.histogram(name, tensor, step=step0 + i)
                if show_bar and (i % 10 == 0 or i + 1 == steps):
                    bar.update(i + 1, values=[("loss", values["loss"])], finalize=i + 1 == steps)
        return {k: v / steps for k, v in sums.items()}

    def evaluate(self, split: str) -> dict:
        evaluator = self.valid_evaluator if split == "valid" else Evaluator(
            self.dataset, split, ks=self.config.ks, batch_size=self.config.eval_batch_size)
        users, items = self.model.final_embeddings()
        return evaluator.evaluate(users, items)

    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.config
        if resume:
            self.resume()
        s = self.state
        stopped_early = s["wait"] >= cfg.patience
        while s["epoch"] < cfg.epochs and not stopped_early:
            epoch = s["epoch"] + 1
            start = time.perf_counter()
            train_losses = self._run_epoch(epoch)
            train_seconds = time.perf_counter() - start
            start = time.perf_counter()
            valid = self.evaluate("valid")
            eval_seconds = time.perf_counter() - start
            value = valid[cfg.select_metric]
            improved = value > s["best_value"]
            if improved:
                s.update(best_value=value, best_epoch=epoch, wait=0)
            else:
                s["wait"] += 1
            s["epoch"] = epoch
            s["train_seconds"].append(train_seconds)
            s["history"].append({"epoch": epoch, "train_seconds": round(train_seconds, 4),
                                 "eval_seconds": round(eval_seconds, 4),
                                 **{f"train/{k}": v for k, v in train_losses.items()},
                                 **{f"valid/{k}": v for k, v in valid.items()
                                    if "@" in k}})
            with self.writers["valid"].as_default():
                for name, v in valid.items():
                    if "@" in name:
                        tf.summary.scalar(f"metrics/{name}", v, step=epoch)
                tf.summary.scalar("time/train_seconds_per_epoch", train_seconds, step=epoch)
                tf.summary.scalar("time/eval_seconds", eval_seconds, step=epoch)
            for w in self.writers.values():
                w.flush()
            self._save(best=improved)
            stopped_early = s["wait"] >= cfg.patience
            self.echo(f"epoch {epoch:4d}  loss {train_losses.get('loss', float('nan')):.4f}  "
                      f"valid {cfg.select_metric} {value:.4f}  ndcg@20 {valid.get('ndcg@20', 0):.4f}"
                      f"  best {s['best_value']:.4f} @ {s['best_epoch']}"
                      f"  ({train_seconds:.2f}s train, {eval_seconds:.2f}s eval)"
                      + ("  *" if improved else ""))
        return self.finish(stopped_early)

    def finish(self, stopped_early: bool) -> TrainResult:
        s = self.state
        best_path = os.path.join(self.ckpt_dir, BEST)
        if os.path.exists(best_path):
            load_weights(self.model, best_path)
        start = time.perf_counter()
        valid = self.evaluate("valid")
        eval_seconds = time.perf_counter() - start
        test = self.evaluate("test")
        seconds = s["train_seconds"]
        # The first epoch includes tracing; report the median of the others when there are any.
        per_epoch = float(np.median(seconds[1:] if len(seconds) > 1 else seconds)) if seconds else 0.0
        return TrainResult(best_epoch=s["best_epoch"], epochs_run=s["epoch"], valid=valid,
                           test=test, seconds_per_epoch=per_epoch, eval_seconds=eval_seconds,
                           stopped_early=stopped_early, history=s["history"])


def write_json(path: str, payload) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with io.open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
