r"""Trains a model, selects its epoch on validation, reports valid and test, exports a SavedModel.

    python -m runners.train --flagfile=flags/demo.cfg
    python -m runners.train --flagfile=flags/tiktok.cfg --data_dir=../shared/data --seed=1

Writes into --model_dir: flags.cfg (the resolved flags), checkpoints/, logs/ (TensorBoard),
metrics.json and export/ (the SavedModel). An existing --model_dir is refused unless
--overwrite (start afresh) or --resume (continue from its last completed epoch).
"""

from __future__ import annotations

import datetime
import os
import shutil
import sys

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
    from ibmrec_tf import memory

    # Before --model_dir is touched (--overwrite would have deleted it): run() checks again.
    memory.check_fits(FLAGS.model, memory.Shapes.of(data), common.model_config(),
                      common.train_config(), FLAGS.memory_limit_gb)
    common.configure_tensorflow()
    strategy = common.make_strategy()
    # Under multi_worker_mirrored only the chief writes --model_dir; the other workers write
    # their checkpoints to a temporary folder (removed at the end) and read the chief's on
    # --resume, so --model_dir must be on storage every worker sees.
    chief = common.is_chief(strategy)
    if chief:
        prepare_model_dir(model_dir, overwrite=FLAGS.overwrite, resume=FLAGS.resume)

    from ibmrec_tf.orchestration import BuildError, run

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

    if chief:
        print(data.summary())
    if strategy is not None and chief:
        print(f"{FLAGS.distribution_strategy}: {strategy.num_replicas_in_sync} replicas, "
              f"{FLAGS.batch_size // strategy.num_replicas_in_sync} triplets each per step")
    try:
        outcome = run(model=FLAGS.model, data=data, data_config=common.data_config(),
                      model_config=common.model_config(), train_config=common.train_config(),
                      model_dir=model_dir, strategy=strategy, resume=resume,
                      export_top_k=FLAGS.export_top_k, echo=print, command=" ".join(sys.argv))
    except BuildError as e:  # a model/flag combination that makes no sense
        raise common.UsageError(str(e)) from None
    if not chief:
        return
    result, export_dir = outcome.train, outcome.export_dir
    ks = common.parse_ks()
    print()
    print(f"{FLAGS.model} on {data.name}: best epoch {result.best_epoch} of {result.epochs_run} "
          f"(selected on valid {common.train_config().select_metric}), "
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
