r"""Writes a dataset folder with seeded STAND-IN item features, for scale and speed runs.

    python -m runners.prepare_data --data_dir=../shared/data --dataset=sports --out_dir=data/standin

makes <out_dir>/<dataset>/ holding links to the dataset's interaction files, one
<modality>_feat.npy per --standin_dims entry (float32, N(0, 1), seeded), and a STAND_IN_FEATURES
marker. Every run that reads the folder repeats a warning that the features are stand-ins.
Model quality on such a folder means nothing; its timings and memory are those of real
features of the same shapes.
"""

from __future__ import annotations

import os

from absl import flags

from runners import common

flags.DEFINE_string("out_dir", None, "Folder to create <out_dir>/<dataset>/ in.")
flags.DEFINE_list("standin_dims", ["image:4096", "text:1024"],
                  "modality:dimension pairs of the stand-in features (the Amazon sets' shapes).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if not FLAGS.out_dir:
        raise common.UsageError("give --out_dir")
    dims = {}
    for spec in FLAGS.standin_dims:
        name, _, dim = spec.partition(":")
        if not name or not dim.isdigit() or int(dim) < 1:
            raise common.UsageError(f"--standin_dims entry {spec!r} is not modality:dimension")
        dims[name] = int(dim)

    import numpy as np
    from ibmrec_tf.data import STANDIN_MARKER, load_dataset

    data = load_dataset(FLAGS.data_dir, FLAGS.dataset, modalities=[], fmt=FLAGS.data_format)
    source = os.path.abspath(os.path.join(FLAGS.data_dir, FLAGS.dataset))
    target = os.path.join(FLAGS.out_dir, FLAGS.dataset)
    if os.path.exists(target) and not FLAGS.overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
    os.makedirs(target, exist_ok=True)
    for entry in (f"{FLAGS.dataset}.inter", "5-core"):
        src, dst = os.path.join(source, entry), os.path.join(target, entry)
        if os.path.exists(src):
            if os.path.lexists(dst):
                os.remove(dst)
            os.symlink(src, dst)
    rng = np.random.default_rng(FLAGS.seed)
    for modality, dim in dims.items():
        features = rng.standard_normal((data.num_items, dim), dtype=np.float32)
        np.save(os.path.join(target, f"{modality}_feat.npy"), features)
    with open(os.path.join(target, STANDIN_MARKER), "w") as f:
        f.write(f"seeded N(0,1) stand-ins (seed {FLAGS.seed}) for {FLAGS.dataset}: "
                + ", ".join(f"{m} {d}-d" for m, d in dims.items()) + "\n")
    print(f"{target}: {data.num_items} items, stand-in features "
          + ", ".join(f"{m}_feat.npy {data.num_items}x{d}" for m, d in dims.items())
          + f"; interactions linked from {source}")


if __name__ == "__main__":
    common.run(main)
