r"""Re-exports a trained model's best checkpoint as a serving SavedModel.

    python -m runners.export --model_dir=runs/demo --export_dir=/tmp/demo_k100 --export_top_k=100

The model and data flags come from <model_dir>/flags.cfg unless given on the command line.
"""

from __future__ import annotations

import os

from absl import flags

from runners import common

flags.DEFINE_string("export_dir", None, "Where to write the SavedModel (default: <model_dir>/export).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.model_dir is None:
        raise common.UsageError("give --model_dir (a directory written by runners.train)")
    common.adopt_saved_flags(FLAGS.model_dir)
    common.check_flags()
    common.configure_tensorflow()
    from ibmrec_tf import export
    from ibmrec_tf.models import build_model
    from ibmrec_tf.training import checkpoint_path, load_weights

    best = checkpoint_path(FLAGS.model_dir, "best")
    if best is None:
        raise common.UsageError(f"{FLAGS.model_dir}/checkpoints/best: no checkpoint (no epoch "
                                f"finished yet?)")
    data = common.load_data()

    model = build_model(FLAGS.model, data, common.model_config())
    load_weights(model, best)
    users, items = model.final_embeddings()
    path = export.export_saved_model(
        FLAGS.export_dir or os.path.join(FLAGS.model_dir, "export"), users.numpy(), items.numpy(),
        data.interaction_matrix("train"), top_k=min(FLAGS.export_top_k, data.num_items),
        metadata={"model": FLAGS.model, "dataset": data.name})
    print(f"SavedModel written to {path}")


def console_main():
    """The ``ibmrec-export`` console script (the same as ``python -m runners.export``)."""
    common.run(main)


if __name__ == "__main__":
    console_main()
