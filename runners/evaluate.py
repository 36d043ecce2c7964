r"""Full-ranking evaluation of a trained model on the valid or test split.

    python -m runners.evaluate --model_dir=runs/demo --split=test
    python -m runners.evaluate --saved_model=runs/demo/export --dataset=synthetic --split=valid
    python -m runners.evaluate --model_dir=runs/demo --weights=latest --split=valid

With --model_dir, the flags recorded in <model_dir>/flags.cfg are used unless given on the
command line, and the SavedModel in <model_dir>/export is evaluated; --weights=best or
--weights=latest instead rebuilds the model from those flags and evaluates the weights of that
checkpoint (an interrupted run has checkpoints but no SavedModel yet). A warning is printed
when the data files differ from those the model was trained on.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from runners import common

flags.DEFINE_string("saved_model", None, "An exported SavedModel: a version folder, or a base "
                    "folder whose newest version is read (default: <model_dir>/export).")
flags.DEFINE_enum("split", "test", ["valid", "test"], "Split to evaluate.")
flags.DEFINE_enum("weights", "export", ["export", "best", "latest"],
                  "What to evaluate: the SavedModel (<model_dir>/export or --saved_model), or the "
                  "model rebuilt from <model_dir>/flags.cfg with its best or latest checkpoint.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.model_dir is None and FLAGS.saved_model is None:
        raise common.UsageError("give --model_dir or --saved_model")
    if FLAGS.model_dir is not None:
        common.adopt_saved_flags(FLAGS.model_dir)
    common.check_flags()
    from_checkpoint = FLAGS.weights != "export"
    if from_checkpoint and FLAGS.model_dir is None:
        raise common.UsageError(f"--weights={FLAGS.weights} needs --model_dir")
    saved_model = FLAGS.saved_model or os.path.join(FLAGS.model_dir, "export")
    data = common.load_data()

    common.configure_tensorflow()
    from ibmrec_tf import data as data_lib, export

    if not from_checkpoint:
        found = export.resolve_saved_model(saved_model)
        if found is None:
            raise common.UsageError(f"{saved_model}: no saved_model.pb there nor in a version "
                                    f"folder (was the training finished? --weights=latest "
                                    f"evaluates its latest checkpoint)")
        saved_model = found
    from ibmrec_tf.evaluation import Evaluator

    if FLAGS.model_dir is not None:
        info_path = os.path.join(FLAGS.model_dir, "run_info.json")
        if os.path.isfile(info_path) and os.path.isdir(data.source):
            with open(info_path) as f:
                trained_on = json.load(f).get("data_sha256", {})
            now = data_lib.file_checksums(data.source)
            changed = sorted(k for k in set(trained_on) | set(now) if trained_on.get(k) != now.get(k))
            if changed:
                print(f"WARNING: data in {data.source} differs from what the model was trained on: "
                      f"{', '.join(changed)}", file=sys.stderr)
    if from_checkpoint:
        from ibmrec_tf.models import build_model
        from ibmrec_tf.training import checkpoint_path, load_weights

        path = checkpoint_path(FLAGS.model_dir, FLAGS.weights)
        if path is None:
            raise common.UsageError(f"{FLAGS.model_dir}/checkpoints/{FLAGS.weights}: no "
                                    f"checkpoint (no epoch finished yet?)")
        model = build_model(FLAGS.model, data, common.model_config())
        load_weights(model, path)
        users, items = (t.numpy() for t in model.final_embeddings())
        saved_model = path
    else:
        users, items = export.load_embeddings(saved_model)
    if users.shape[0] != data.num_users or items.shape[0] != data.num_items:
        raise common.UsageError(
            f"{saved_model} scores {users.shape[0]} users x {items.shape[0]} items, but "
            f"{data.name} has {data.num_users} x {data.num_items}")
    # float32 scores under every precision: what the SavedModel serves and training reports.
    result = Evaluator(data, FLAGS.split, ks=common.parse_ks(),
                       batch_size=FLAGS.eval_batch_size).evaluate(users, items)
    print(json.dumps({"split": FLAGS.split, "weights": saved_model, **result}, indent=2))


def console_main():
    """The ``ibmrec-evaluate`` console script (the same as ``python -m runners.evaluate``)."""
    common.run(main)


if __name__ == "__main__":
    console_main()
