r"""Trains a model, selects its epoch on validation, reports valid and test, exports a SavedModel.

    python -m runners.train --flagfile=flags/demo.cfg
    python -m runners.train --flagfile=flags/tiktok.cfg --data_dir=../shared/data --seed=1

Writes into --model_dir: flags.cfg (the resolved flags), checkpoints/, logs/ (TensorBoard),
metrics.json and export/ (the SavedModel). An existing --model_dir is refused unless
--overwrite (start afresh) or --resume (continue from its last completed epoch).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import resource
import shutil
import sys
import tempfile

from absl import flags

from runners import common

FLAGS = flags.FLAGS


#: Files only a model directory of ``runners.train`` holds; ``--overwrite`` deletes no other.
RUN_MARKERS = ("flags.cfg", "run_info.json")


def prepare_model_dir(model_dir: str, *, overwrite: bool, resume: bool) -> None:
    if overwrite and resume:
        raise common.UsageError("--overwrite and --resume contradict each other; pick one")
    if resume and not os.path.isfile(os.path.join(model_dir, "flags.cfg")):
        raise common.UsageError(f"--resume: {os.path.join(model_dir, 'flags.cfg')} not found, so "
                                f"there is no run to continue; drop --resume to start one")
    if os.path.exists(model_dir):
        if not os.path.isdir(model_dir):
            raise common.UsageError(f"--model_dir {model_dir} exists and is not a directory")
        if overwrite:
            if os.listdir(model_dir) and not any(
                    os.path.exists(os.path.join(model_dir, marker)) for marker in RUN_MARKERS):
                raise common.UsageError(
                    f"--overwrite: {model_dir} is not a model directory of runners.train (it "
                    f"has no flags.cfg or run_info.json), so it is left alone; remove it by hand "
                    f"or choose another --model_dir")
            shutil.rmtree(model_dir)
        elif not resume and os.listdir(model_dir):
            raise FileExistsError(f"--model_dir {model_dir} already exists; pass --overwrite to "
                                  f"replace it or --resume to continue its training")
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise common.UsageError(f"--model_dir {model_dir} is not writable: {e.strerror}") from None


def format_table(result, ks) -> str:
    header = f"{'split':<6}" + "".join(f"{m + '@' + str(k):>14}" for k in ks
                                       for m in ("recall", "precision", "ndcg"))
    rows = [header]
    for split, metrics in (("valid", result.valid), ("test", result.test)):
        rows.append(f"{split:<6}" + "".join(f"{metrics[m + '@' + str(k)]:>14.4f}" for k in ks
                                            for m in ("recall", "precision", "ndcg")))
    return "\n".join(rows)


def main(argv):
    del argv
    common.check_flags()
    if FLAGS.resume and FLAGS.model_dir is None:
        raise common.UsageError("--resume needs --model_dir")
    model_dir = FLAGS.model_dir or os.path.join(
        "runs", f"{FLAGS.dataset}-{FLAGS.model}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    resume = FLAGS.resume and os.path.exists(os.path.join(model_dir, "flags.cfg"))
    data = common.load_data()
    common.configure_tensorflow()
    strategy = common.make_strategy()
    # Under multi_worker_mirrored only the chief writes --model_dir; the other workers write
    # their checkpoints to a temporary folder (removed at the end) and read the chief's on
    # --resume, so --model_dir must be on storage every worker sees.
    chief = common.is_chief(strategy)
    if chief:
        prepare_model_dir(model_dir, overwrite=FLAGS.overwrite, resume=FLAGS.resume)

    import keras
    from ibmrec_tf import __version__, data as data_lib, export
    from ibmrec_tf.models import build_model
    from ibmrec_tf.training import CHECKPOINT_DIR, Trainer, write_json

    flag_text = common.flags_text()
    if chief and resume:
        from ibmrec_tf.training import checkpoint_path

        checkpoint_path(model_dir, "latest")  # an old-format directory is one clear error
        with open(os.path.join(model_dir, "flags.cfg")) as f:
            saved = f.read()
        if _without(saved, "model_dir") != _without(flag_text, "model_dir"):
            raise common.UsageError(f"--resume: the flags differ from {model_dir}/flags.cfg; "
                                    f"resume with --flagfile={model_dir}/flags.cfg --resume")
    elif chief:
        with open(os.path.join(model_dir, "flags.cfg"), "w") as f:
            f.write(flag_text)
        from ibmrec_tf.config import write_configs

        write_configs(model_dir, FLAGS.model, common.data_config(), common.model_config(),
                      common.train_config())
        checksums = (data_lib.file_checksums(data.source) if os.path.isdir(data.source) else {})
        write_json(os.path.join(model_dir, "run_info.json"), {
            "ibmrec_tf_version": __version__, "command": " ".join(sys.argv),
            "dataset": data.summary(), "data_source": data.source, "data_sha256": checksums,
            "notes": list(data.notes)})

    if chief:
        print(data.summary())
    if strategy is not None and chief:
        print(f"{FLAGS.distribution_strategy}: {strategy.num_replicas_in_sync} replicas, "
              f"{FLAGS.batch_size // strategy.num_replicas_in_sync} triplets each per step")
    keras.utils.set_random_seed(FLAGS.seed)
    try:
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = build_model(FLAGS.model, data, common.model_config())
    except ValueError as e:  # a model/flag combination that makes no sense
        if isinstance(e, data_lib.DataError):
            raise
        raise common.UsageError(str(e)) from None
    work_dir = model_dir if chief else tempfile.mkdtemp(prefix="ibmrec_tf-worker-")
    trainer = Trainer(model, data, common.train_config(), work_dir, strategy=strategy,
                      write_logs=chief, echo=print if chief else (lambda _: None),
                      restore_dir=os.path.join(model_dir, CHECKPOINT_DIR))
    try:
        result = trainer.fit(resume=resume)
    finally:
        if not chief:
            shutil.rmtree(work_dir, ignore_errors=True)
    if not chief:
        return

    users, items = model.final_embeddings()
    export_dir = export.export_saved_model(
        os.path.join(model_dir, "export"), users.numpy(), items.numpy(),
        data.interaction_matrix("train"), top_k=min(FLAGS.export_top_k, data.num_items),
        metadata={"model": FLAGS.model, "dataset": data.name, "best_epoch": result.best_epoch})
    write_json(os.path.join(model_dir, "metrics.json"), {
        "model": FLAGS.model, "dataset": data.name, "seed": FLAGS.seed,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early, "seconds_per_epoch": result.seconds_per_epoch,
        "eval_seconds": result.eval_seconds, "valid": result.valid, "test": result.test,
        "epoch_seconds": [round(t, 3) for t in trainer.state["train_seconds"]],
        "train_interactions": int(len(data.train)),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "device": common.device_name(),
        "notes": list(data.notes)})

    from ibmrec_tf.training import write_hparams

    write_hparams(os.path.join(model_dir, "logs", "hparams"),
                  {"model": FLAGS.model, "dataset": data.name, "seed": FLAGS.seed,
                   **common.model_config().to_dict(), **common.train_config().to_dict()},
                  {**{f"hparams/valid_{k}": v for k, v in result.valid.items() if "@" in k},
                   **{f"hparams/test_{k}": v for k, v in result.test.items() if "@" in k},
                   "hparams/best_epoch": result.best_epoch,
                   "hparams/seconds_per_epoch": result.seconds_per_epoch},
                  trial_id=os.path.basename(os.path.normpath(model_dir)))
    ks = common.parse_ks()
    print()
    print(f"{FLAGS.model} on {data.name}: best epoch {result.best_epoch} of {result.epochs_run} "
          f"(selected on valid {trainer.config.select_metric}), "
          f"{result.seconds_per_epoch:.2f} s/epoch, {result.eval_seconds:.2f} s per evaluation")
    print(format_table(result, ks))
    for note in data.notes:
        print(f"NOTE: {note}")
    print(f"model dir:   {model_dir}  (flags.cfg, metrics.json, checkpoints/)")
    print(f"SavedModel:  {export_dir}")
    print(f"TensorBoard: tensorboard --logdir {os.path.join(model_dir, 'logs')}")


def _without(flag_text: str, name: str) -> str:
    return "\n".join(line for line in flag_text.splitlines() if not line.startswith(f"--{name}="))


def console_main():
    """The ``ibmrec-train`` console script (the same as ``python -m runners.train``)."""
    common.run(main)


if __name__ == "__main__":
    console_main()
