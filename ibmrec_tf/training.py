"""The training loop: epochs of ``model.train_step``, validation, early stopping, checkpoints.

The loop knows nothing model-specific: every update rule lives in the model's ``train_step``.
Each epoch it

1. feeds the epoch's BPR triplets (a pure function of ``(seed, epoch)``) to the compiled
   step, which also accumulates every scalar loss term and records the first non-finite one
   on the device; the host reads them every ``log_every`` steps (TensorBoard) and at the end
   of the epoch, so it does not wait for the device after every step;
2. evaluates full-ranking metrics on the validation split;
3. keeps the best weights by ``select_metric`` (validation only) and stops after ``patience``
   epochs without improvement;
4. saves the training state with ``tf.train.CheckpointManager``: ``checkpoints/latest/`` holds
   the model, every optimizer and the loop's own state (epoch, best metric and epoch, epochs
   without improvement, history) after the last completed epoch, ``checkpoints/best/`` the
   model's weights at the best epoch. Variables are matched by their object path
   (``model/backbone/user_embedding``, ``optimizers/main/adam.vlattice_P_momentum``), never by
   creation order. A killed run restarted with ``resume=True`` continues after the last
   completed epoch and ends exactly where the uninterrupted run ends;
5. writes ``history.json``: every completed epoch's seconds, mean loss terms and validation
   metrics, replaced whole (never half-written), for whatever watches the run while it trains
   (the tuner's pruner reads it).

At the end the best weights are restored and evaluated once on validation and once on test.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import re
import sys
import time

import numpy as np
import tensorflow as tf
import keras

from ibmrec_tf.config import TrainConfig  # noqa: F401  (re-exported)
from ibmrec_tf.data import Dataset, TripletSampler
from ibmrec_tf.evaluation import Evaluator
from ibmrec_tf.models.base import Recommender

logger = logging.getLogger("ibmrec_tf")

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
BEST = "best"
#: the per-epoch curve, rewritten after every epoch (see the module docstring)
HISTORY_FILE = "history.json"
_OLD_FORMAT = ("latest.npz", "best.npz")
#: Slots of the device-side sums of an epoch's scalar loss terms (more terms are an error).
TERM_SLOTS = 64


class NumericalError(RuntimeError):
    """A loss became NaN or infinite."""


class CheckpointError(ValueError):
    """A model directory whose checkpoints cannot be read; one line saying what to do."""


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


# -- checkpoints -----------------------------------------------------------------------------------
def named_optimizer_state(optimizer: keras.optimizers.Optimizer) -> tf.train.Checkpoint:
    """The optimizer's own variables keyed by name (``adam.iteration``, ``adam.vlattice_P_momentum``).

    Keras 3's optimizer tracks its slots in a list, so a plain ``tf.train.Checkpoint(optimizer=
    opt)`` keys them by position; the slots' names carry the path of the variable they belong
    to, so keying by name keeps every slot with its variable whatever the creation order. The
    key is the variable's path with the optimizer instance's number dropped (``adam_3`` ->
    ``adam``), which keeps a loss-scale optimizer's own variables apart from its inner Adam's.
    """
    slots = {}
    for variable in optimizer.variables:
        key = ".".join(re.sub(r"_\d+$", "", part) for part in variable.path.split("/"))
        if key in slots:
            raise ValueError(f"two optimizer variables are both named {key!r}: give the model's "
                             f"variables distinct paths")
        slots[key] = variable
    return tf.train.Checkpoint(**slots)


class TrainerState(tf.Module):
    """The loop's state as checkpointable variables (the history as a JSON string)."""

    def __init__(self):
        super().__init__(name="trainer_state")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_value = tf.Variable(-math.inf, dtype=tf.float64, trainable=False)
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.record = tf.Variable("{}", dtype=tf.string, trainable=False)

    def store(self, state: dict) -> None:
        self.epoch.assign(state["epoch"])
        self.best_epoch.assign(state["best_epoch"])
        self.best_value.assign(state["best_value"])
        self.wait.assign(state["wait"])
        self.record.assign(json.dumps({"history": state["history"],
                                       "train_seconds": state["train_seconds"]}))

    def load(self) -> dict:
        record = json.loads(self.record.numpy().decode())
        return {"epoch": int(self.epoch.numpy()), "best_epoch": int(self.best_epoch.numpy()),
                "best_value": float(self.best_value.numpy()), "wait": int(self.wait.numpy()),
                "history": record.get("history", []),
                "train_seconds": record.get("train_seconds", [])}


def _check_not_old_format(ckpt_dir: str) -> None:
    old = [name for name in _OLD_FORMAT if os.path.exists(os.path.join(ckpt_dir, name))]
    if old:
        raise CheckpointError(
            f"{os.path.join(ckpt_dir, old[0])}: a checkpoint of the old .npz format, which this "
            f"version no longer reads (its variables were matched by position); retrain into a "
            f"new --model_dir, or with --overwrite")


def checkpoint_path(model_dir: str, which: str = BEST) -> str | None:
    """The newest ``which`` (``'best'`` or ``'latest'``) checkpoint of ``model_dir``, or None."""
    ckpt_dir = os.path.join(model_dir, CHECKPOINT_DIR)
    _check_not_old_format(ckpt_dir)
    return tf.train.latest_checkpoint(os.path.join(ckpt_dir, which))


def untracked_variables(root) -> list[str]:
    """Paths of ``root.variables`` that a ``tf.train.Checkpoint`` of ``root`` would not save.

    Keras 3 does not track layers kept in a plain Python list for ``tf.train.Checkpoint``: their
    variables would be silently left out of every save and restore. The trainer refuses such a
    model.
    """
    tracked = {id(obj) for obj in tf.train.TrackableView(root).descendants()}
    return [v.path for v in root.variables if id(v) not in tracked]


def require_tracked(model) -> None:
    """Raises :class:`CheckpointError` if a checkpoint of ``model`` would miss a variable."""
    untracked = untracked_variables(model)
    if untracked:
        raise CheckpointError(f"the model's variables {untracked} are not tracked for "
                              f"checkpoints (layers kept in a plain Python list?)")


def load_weights(model: Recommender, path: str) -> None:
    """Restores the model variables of a checkpoint (``best`` or ``latest``), matched by path.

    Every variable of the model must have a value in the checkpoint: a checkpoint of another
    model or configuration is an error, not a partial restore.
    """
    require_tracked(model)
    status = tf.train.Checkpoint(model=model).read(path)
    status.expect_partial()  # a 'latest' checkpoint also holds optimizers and the loop's state
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise CheckpointError(f"{path}: does not hold every variable of this model (a checkpoint "
                              f"of another model or configuration?): {str(e).splitlines()[0]}") from None


class Trainer:
    """Trains one model on one dataset into ``model_dir`` (see the module docstring)."""

    def __init__(self, model: Recommender, dataset: Dataset, config: TrainConfig, model_dir: str,
                 *, echo=print, strategy: tf.distribute.Strategy | None = None,
                 restore_dir: str | None = None, write_logs: bool = True):
        """``strategy``: a ``tf.distribute`` strategy whose scope the model was built in (the
        trainer builds the optimizers in it and checks every variable); None trains on the
        default device. ``restore_dir`` (default ``<model_dir>/checkpoints``): where
        ``resume`` reads the checkpoints; with ``write_logs=False`` no TensorBoard logs. A
        multi-worker run's non-chief workers train into a temporary ``model_dir`` and resume
        from the chief's checkpoints."""
        self.strategy = strategy or tf.distribute.get_strategy()
        self.model = model
        self.dataset = dataset
        self.config = config
        self.model_dir = model_dir
        self.echo = echo if config.verbose else (lambda _: None)
        self.ckpt_dir = os.path.join(model_dir, CHECKPOINT_DIR)
        self.restore_dir = restore_dir or self.ckpt_dir
        _check_not_old_format(self.restore_dir)
        os.makedirs(self.ckpt_dir, exist_ok=True)
        self.sampler = TripletSampler(dataset, config.seed)
        self.valid_evaluator = Evaluator(dataset, "valid", ks=config.ks,
                                         batch_size=config.eval_batch_size,
                                         score_dtype=model.score_dtype)
        self._check_scope(model.variables)  # first: Keras would build slots beside them
        if not model.optimizers:
            with self.strategy.scope():
                model.create_optimizers(config.learning_rate, config.optimizer)
        self._check_scope([w for o in model.optimizers.values() for w in o.variables])
        require_tracked(model)
        self.trainer_state = TrainerState()
        optimizers = tf.train.Checkpoint(**{name: named_optimizer_state(opt)
                                            for name, opt in model.optimizers.items()})
        self.latest = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=model, optimizers=optimizers, trainer=self.trainer_state),
            os.path.join(self.ckpt_dir, LATEST), max_to_keep=1)
        self.best = tf.train.CheckpointManager(
            tf.train.Checkpoint(model=model), os.path.join(self.ckpt_dir, BEST), max_to_keep=1)
        self._step = None           # the compiled step, made by the first run_step
        self._term_names: list[str] | None = None
        self._term_sums = None      # float64 [terms]: this epoch's sums of the scalar loss terms
        self._first_bad = None      # int64 [2]: (step, term index) of the first non-finite term
        self._bad_value = None      # float32: its value
        self.write_logs = write_logs
        self._profiling = False
        self.writers = {s: tf.summary.create_file_writer(os.path.join(model_dir, "logs", s))
                        if write_logs else tf.summary.create_noop_writer()
                        for s in ("train", "valid")}
        self.state = {"epoch": 0, "best_epoch": 0, "best_value": -math.inf, "wait": 0,
                      "history": [], "train_seconds": []}

    def _check_scope(self, variables) -> None:
        outside = [v.path for v in variables
                   if not self.strategy.extended.variable_created_in_scope(getattr(v, "value", v))]
        if outside:
            # An optimizer built outside the scope trains silently wrong (its step count
            # advances once per replica).
            raise ValueError(f"variables created outside the distribution strategy's scope: "
                             f"{outside[:3]}; build the model (and its optimizers) in "
                             f"strategy.scope()")

    # -- checkpoints --------------------------------------------------------------------------
    def _save(self, best: bool) -> None:
        epoch = self.state["epoch"]
        if best:
            self.best.save(checkpoint_number=epoch)
        self.trainer_state.store(self.state)
        self.latest.save(checkpoint_number=epoch)

    def resume(self) -> bool:
        """Restores the latest checkpoint if there is one; returns whether it did."""
        path = tf.train.latest_checkpoint(os.path.join(self.restore_dir, LATEST))
        if path is None:
            return False
        # The save counter is made before the read, so the read restores it now. Made later
        # (by the first save), it would be restored then, from ``path``: a non-chief worker's
        # path is the chief's checkpoint, which the chief may have replaced by then.
        _ = self.latest.checkpoint.save_counter
        status = self.latest.checkpoint.read(path)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            raise CheckpointError(f"{path}: does not hold every variable of this model and its "
                                  f"optimizers: {str(e).splitlines()[0]}") from None
        self.state = self.trainer_state.load()
        self.echo(f"resumed from {path} after epoch {self.state['epoch']}")
        return True

    # -- the compiled step ----------------------------------------------------------------------
    def _step_and_record(self, batch, step):
        """One ``train_step`` on every replica, then its scalar terms added to the epoch's sums.

        Every replica gets the whole (global) batch and trains on its share (see
        ``Recommender.compute_losses``); the replicas' shares of each term are summed. The
        first non-finite term (in name order) and its step are recorded once, on the device;
        the host reads the record with the sums, every ``log_every`` steps and at the end of
        the epoch.
        """
        strategy = self.strategy
        per_replica = strategy.run(self.model.train_step, args=(batch,))
        terms = {}
        for name, value in per_replica.items():
            first = strategy.experimental_local_results(value)[0]
            if strategy.num_replicas_in_sync == 1:
                terms[name] = first
            elif first.shape.rank == 0:
                terms[name] = strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            else:  # histograms: every replica computed the same values
                terms[name] = first
        scalars = {name: t for name, t in terms.items() if t.shape.rank == 0}
        if self._term_names is None:  # the first trace names the terms
            self._term_names = sorted(scalars)
        values = tf.stack([tf.cast(scalars[name], tf.float32) for name in self._term_names])
        # The terms are known only once traced, and a variable created inside the trace would
        # make TensorFlow trace the step twice: the sums have TERM_SLOTS slots, the first used.
        if len(self._term_names) > TERM_SLOTS:
            raise ValueError(f"{len(self._term_names)} loss terms; the trainer sums at most "
                             f"{TERM_SLOTS} (training.TERM_SLOTS)")
        self._term_sums.assign_add(tf.pad(tf.cast(values, tf.float64),
                                          [[0, TERM_SLOTS - len(self._term_names)]]))
        finite = tf.math.is_finite(values)
        # As float32: ArgMin has no GPU kernel for int32 (gpu_audit).
        bad_term = tf.argmin(tf.cast(finite, tf.float32), output_type=tf.int64)
        first = tf.logical_and(tf.logical_not(tf.reduce_all(finite)), self._first_bad[0] < 0)
        self._first_bad.assign(tf.where(first, tf.stack([tf.cast(step, tf.int64), bad_term]),
                                        self._first_bad))
        self._bad_value.assign(tf.where(first, values[bad_term], self._bad_value))
        return terms

    def run_step(self, batch, step: int) -> dict:
        """One compiled training step on ``batch`` (the ``step``-th of its epoch, from 1, for the
        non-finite record); returns its terms. The epoch's sums start at the epoch's start."""
        if self._step is None:
            self._compile(tf.nest.map_structure(tf.TensorSpec.from_tensor, batch))
        return self._step(batch, tf.constant(step, tf.int64))

    def _compile(self, batch_spec) -> None:
        """Makes the compiled step and its accumulators, so that it is traced once.

        The batch dimension is left open (an epoch's last batch is shorter, and would be traced
        again) and the accumulators exist before the first trace (TensorFlow traces a function
        that creates variables twice). Autograph is off: the step has no Python control flow
        on tensors, and converting the model's code took about half of each trace (cProfile of
        ``flags/demo.cfg``).
        """
        open_batch = tf.nest.map_structure(
            lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype), batch_spec)
        self._term_sums = tf.Variable(tf.zeros([TERM_SLOTS], tf.float64), trainable=False)
        self._first_bad = tf.Variable([-1, -1], dtype=tf.int64, trainable=False)
        self._bad_value = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        self._step = tf.function(self._step_and_record, autograph=False, input_signature=[
            open_batch, tf.TensorSpec([], tf.int64)])

    def _raise_if_bad(self, epoch: int) -> None:
        step, term = (int(x) for x in self._first_bad.numpy())
        if step >= 0:
            value = float(self._bad_value.numpy())
            raise NumericalError(f"loss term {self._term_names[term]!r} is {value} at epoch "
                                 f"{epoch}, step {step}")

    # -- the loop -----------------------------------------------------------------------------
    def _run_epoch(self, epoch: int) -> dict:
        cfg = self.config
        steps = self.sampler.steps_per_epoch(cfg.batch_size)
        # A live bar on a terminal; in logs (not a TTY) the per-epoch line is the progress output.
        show_bar = bool(cfg.verbose) and sys.stdout.isatty()
        bar = keras.utils.Progbar(steps, verbose=1 if show_bar else 0, unit_name="step")
        step0 = (epoch - 1) * steps
        self.model.on_epoch_start(epoch, cfg.seed)
        if self._term_sums is not None:  # made zero with the compiled step (run_step)
            self._term_sums.assign(tf.zeros_like(self._term_sums))
            self._first_bad.assign([-1, -1])
        with self.writers["train"].as_default():
            for i, batch in enumerate(self.sampler.epoch_dataset(epoch, cfg.batch_size)):
                self._profile(step0 + i + 1, starting=True)
                terms = self.run_step(batch, i + 1)
                self._profile(step0 + i + 1, starting=False)
                log = (step0 + i) % cfg.log_every == 0
                if log or (show_bar and (i % 10 == 0 or i + 1 == steps)):
                    self._raise_if_bad(epoch)  # reads the device's record: one wait, not per step
                    if log:
                        for name, tensor in terms.items():
                            if tensor.shape.rank:
                                tf.summary.histogram(name, tensor, step=step0 + i)
                            else:
                                tf.summary.scalar(f"train/{name}", tensor, step=step0 + i)
                    if show_bar:
                        bar.update(i + 1, values=[("loss", float(terms["loss"]))],
                                   finalize=i + 1 == steps)
        self._raise_if_bad(epoch)
        sums = self._term_sums.numpy()
        return {name: float(total) / steps for name, total in zip(self._term_names, sums)}

    def _profile(self, step: int, *, starting: bool) -> None:
        """TensorBoard's profiler over steps ``profile_steps`` (``logs/profile``, chief only)."""
        steps = self.config.profile_steps
        if not steps or not self.write_logs:
            return
        if starting and step == steps[0]:
            tf.profiler.experimental.start(os.path.join(self.model_dir, "logs", "profile"))
            self._profiling = True
        elif not starting and step == steps[1] and self._profiling:
            tf.profiler.experimental.stop()
            self._profiling = False
            self.echo(f"profile of steps {steps[0]}-{steps[1]}: "
                      f"tensorboard --logdir {os.path.join(self.model_dir, 'logs')} (Profile tab)")

    def evaluate(self, split: str) -> dict:
        evaluator = self.valid_evaluator if split == "valid" else Evaluator(
            self.dataset, split, ks=self.config.ks, batch_size=self.config.eval_batch_size,
            score_dtype=self.model.score_dtype)
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
            if self.write_logs:  # the curve so far, for a watcher (the tuner's pruner, a user)
                write_json(os.path.join(self.model_dir, HISTORY_FILE), s["history"])
            stopped_early = s["wait"] >= cfg.patience
            self.echo(f"epoch {epoch:4d}  loss {train_losses.get('loss', float('nan')):.4f}  "
                      f"valid {cfg.select_metric} {value:.4f}  ndcg@20 {valid.get('ndcg@20', 0):.4f}"
                      f"  best {s['best_value']:.4f} @ {s['best_epoch']}"
                      f"  ({train_seconds:.2f}s train, {eval_seconds:.2f}s eval)"
                      + ("  *" if improved else ""))
        return self.finish(stopped_early)

    def finish(self, stopped_early: bool) -> TrainResult:
        if self._profiling:  # training ended before the profile's last step
            tf.profiler.experimental.stop()
            self._profiling = False
        s = self.state
        best_path = (self.best.latest_checkpoint  # this run's, else the one it resumed from
                     or tf.train.latest_checkpoint(os.path.join(self.restore_dir, BEST)))
        if best_path is not None:
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


def write_hparams(log_dir: str, hparams: dict, metrics: dict, *, trial_id: str = "") -> None:
    """One trial of TensorBoard's HParams tab: ``hparams`` (name -> bool, int, float or str;
    ``None`` is written as the string ``'None'``, tuples as comma-joined strings) and the
    run's final ``metrics`` (name -> float, written as scalars at step 0), in ``log_dir``.
    Point TensorBoard at a folder holding several runs' ``logs/`` to compare them there."""
    from tensorboard.plugins.hparams import api as hp

    def plain(value):
        if value is None:
            return "None"
        if isinstance(value, (tuple, list)):
            return ",".join(str(v) for v in value)
        return value

    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        hp.hparams({name: plain(v) for name, v in hparams.items()}, trial_id=trial_id or None)
        for name, value in metrics.items():
            tf.summary.scalar(name, float(value), step=0)
    writer.flush()
    writer.close()


def checkpointed_epoch(model_dir: str) -> int:
    """The last completed epoch saved in ``model_dir``'s latest checkpoint (0 if none)."""
    path = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR, LATEST))
    if path is None:
        return 0
    return int(tf.train.load_checkpoint(path).get_tensor(
        "trainer/epoch/.ATTRIBUTES/VARIABLE_VALUE"))


def write_json(path: str, payload) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with io.open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
