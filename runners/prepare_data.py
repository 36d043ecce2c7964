r"""Makes dataset folders: from a raw interaction log, or with seeded stand-in item features.

From a raw log (CSV, TSV or JSON lines, optionally gzipped; see :mod:`ibmrec_tf.data.raw`):

    python -m runners.prepare_data --raw_interactions=reviews.json.gz --out_dir=data/mine \
        --dataset=shop --k_core=5 --split=random

writes <out_dir>/<dataset>/ with <dataset>.inter, user_ids.tsv, item_ids.tsv, dataset.json and
README.md, after dropping repeated pairs, an optional rating threshold (--min_rating) and the
iterated k-core filter, and prints what each step removed. Nothing is written unless every step
succeeds.

A synthetic dataset at a large catalog's shape (planted preferences, long tails matched to
the Amazon sets, features with irrelevant dimensions; see :mod:`ibmrec_tf.data.scaled`):

    python -m runners.prepare_data --synthetic --synthetic_shape=elec --out_dir=data/big
    python -m runners.prepare_data --synthetic --num_users=50000 --num_items=20000 \
        --num_interactions=500000 --modality_dims=image:4096,text:384 --out_dir=data/big \
        --dataset=mine

Stand-in features, for scale and speed runs:

    python -m runners.prepare_data --data_dir=../shared/data --dataset=sports --out_dir=data/standin

makes <out_dir>/<dataset>/ holding links to the dataset's interaction files, one
<modality>_feat.npy per --standin_dims entry (float32, N(0, 1), seeded), and a STAND_IN_FEATURES
marker. Every run that reads the folder repeats a warning that the features are stand-ins.
Model quality on such a folder means nothing; its timings and memory are those of real
features of the same shapes.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from runners import common

flags.DEFINE_string("out_dir", None, "Folder to create <out_dir>/<dataset>/ in.")
flags.DEFINE_list("standin_dims", ["image:4096", "text:1024"],
                  "modality:dimension pairs of the stand-in features (the Amazon sets' shapes).")
flags.DEFINE_string("raw_interactions", None,
                    "A raw interaction log (CSV, TSV or JSON lines; .gz read through) to turn "
                    "into <out_dir>/<dataset>/; without it, stand-in features are written.")
flags.DEFINE_enum("raw_format", "auto", ["auto", "csv", "tsv", "jsonl"],
                  "The log's format; auto: from the extension (.csv, .tsv/.txt, .json/.jsonl).")
flags.DEFINE_string("raw_encoding", "utf-8", "The log's text encoding.")
flags.DEFINE_string("user_column", "reviewerID", "The log's user column (a CSV/TSV header name "
                    "or a JSON key); the default fits the Amazon review files.")
flags.DEFINE_string("item_column", "asin", "The log's item column.")
flags.DEFINE_string("rating_column", "overall", "The log's rating column, used where present "
                    "(written to the .inter file; needed by --min_rating); '' for none.")
flags.DEFINE_string("timestamp_column", "unixReviewTime",
                    "The log's timestamp column (seconds, or ISO dates), used where present "
                    "(needed by --split=chronological); '' for none.")
flags.DEFINE_float("min_rating", None, "Keep only interactions rated at least this.")
flags.DEFINE_integer("k_core", 5, "Iterated k-core filter: drop users and items with fewer "
                     "than this many interactions until none is left (the field's usual 5; "
                     "0 or 1: no filter).", lower_bound=0)
flags.DEFINE_enum("split", "random", ["random", "chronological"],
                  "Per user: random (seeded by --seed; LATTICE's and MMHCL's protocol) or "
                  "chronological (the latest interactions to test, as MMRec does).")
flags.DEFINE_list("split_ratios", ["0.8", "0.1", "0.1"], "Train, valid, test shares per user.")
flags.DEFINE_boolean("synthetic", False, "Draw a synthetic dataset at a large catalog's shape "
                     "(ibmrec_tf.data.scaled): --synthetic_shape, or --num_users, --num_items, "
                     "--num_interactions and --modality_dims.")
flags.DEFINE_enum("synthetic_shape", None, ["elec", "microlens1m", "sports"],
                  "A named shape for --synthetic (Amazon Electronics, MicroLens-1M, Amazon "
                  "Sports); --num_* flags given beside it replace its sizes.")
flags.DEFINE_integer("num_users", None, "--synthetic: users.", lower_bound=1)
flags.DEFINE_integer("num_items", None, "--synthetic: items.", lower_bound=1)
flags.DEFINE_integer("num_interactions", None, "--synthetic: interactions (at least 5 per "
                     "user).", lower_bound=1)
flags.DEFINE_list("modality_dims", None, "--synthetic: modality:dimension pairs (default "
                  "image:4096,text:384, or the shape's).")
FLAGS = flags.FLAGS


def prepare_raw_log() -> None:
    from ibmrec_tf.data import raw

    if not FLAGS["dataset"].present:
        raise common.UsageError("give --dataset=NAME, the name of the dataset folder to write")
    try:
        ratios = tuple(float(v) for v in FLAGS.split_ratios)
    except ValueError:
        raise common.UsageError(f"--split_ratios must be three numbers, got "
                                f"{','.join(FLAGS.split_ratios)}") from None
    if (len(ratios) != 3 or min(ratios) < 0 or ratios[0] <= 0
            or abs(sum(ratios) - 1.0) > 1e-6):
        raise common.UsageError(f"--split_ratios must be three non-negative shares summing to "
                                f"1 with a positive train share, got {','.join(FLAGS.split_ratios)}")
    name = FLAGS.dataset
    if not name or "/" in name or name.startswith("."):
        raise common.UsageError(f"--dataset must be a plain folder name, got {name!r}")
    for flag in ("user_column", "item_column"):
        if not FLAGS[flag].value:
            raise common.UsageError(f"--{flag} must name a column")
    prepared = raw.prepare_raw(
        FLAGS.raw_interactions, FLAGS.out_dir, name, user_column=FLAGS.user_column,
        item_column=FLAGS.item_column, rating_column=FLAGS.rating_column or None,
        timestamp_column=FLAGS.timestamp_column or None, fmt=FLAGS.raw_format,
        encoding=FLAGS.raw_encoding, min_rating=FLAGS.min_rating, k=FLAGS.k_core,
        split=FLAGS.split, ratios=ratios, seed=FLAGS.seed, overwrite=FLAGS.overwrite,
        command=" ".join(["python -m runners.prepare_data"] + sys.argv[1:]))
    steps = prepared.card["steps"]
    print(f"read {steps['rows_read']} rows ({steps['users_read']} users, {steps['items_read']} "
          f"items); dropped {steps['duplicate_pairs_dropped']} duplicate pairs"
          + (f", {steps['below_min_rating_dropped']} rated below {FLAGS.min_rating}"
             if "below_min_rating_dropped" in steps else ""))
    core = steps["k_core"]
    print(f"{core['k']}-core filter: {len(core['rounds'])} round(s), "
          f"{core['interactions_removed']} interactions removed")
    for r in core["rounds"]:
        print(f"  round {r['round']}: {r['users_removed']} users, {r['items_removed']} items, "
              f"{r['interactions_removed']} interactions")
    print(prepared.summary())
    print(f"card: {os.path.join(prepared.folder, 'dataset.json')}; next: python -m "
          f"runners.extract_features --dataset_dir={prepared.folder} --images=... --texts=...")


def _dims(entries, flag: str) -> dict[str, int]:
    dims = {}
    for spec in entries:
        name, _, dim = spec.partition(":")
        if not name or not dim.isdigit() or int(dim) < 1:
            raise common.UsageError(f"--{flag} entry {spec!r} is not modality:dimension")
        dims[name] = int(dim)
    return dims


def prepare_synthetic() -> None:
    from ibmrec_tf.data import scaled

    base = scaled.SHAPES.get(FLAGS.synthetic_shape)
    sizes = {}
    for flag in ("num_users", "num_items", "num_interactions"):
        value = FLAGS[flag].value
        if value is None and base is None:
            raise common.UsageError(f"--synthetic needs --synthetic_shape or --{flag}")
        sizes[flag] = value if value is not None else getattr(base, flag)
    dims = (_dims(FLAGS.modality_dims, "modality_dims") if FLAGS.modality_dims is not None
            else dict(base.modality_dims) if base else {"image": 4096, "text": 384})
    shape = scaled.Shape(**sizes, modality_dims=dims,
                         source=base.source if base and not FLAGS["num_users"].present else "")
    name = FLAGS.dataset if FLAGS["dataset"].present else (FLAGS.synthetic_shape or "scaled")
    if not name or "/" in name or name.startswith("."):
        raise common.UsageError(f"--dataset must be a plain folder name, got {name!r}")
    target = os.path.join(FLAGS.out_dir, name)
    if os.path.exists(target):
        raise FileExistsError(f"{target} already exists; remove it or choose another --dataset")
    try:
        scaled.check_shape(shape)
    except ValueError as e:
        raise common.UsageError(f"--synthetic: {e}") from None
    print(f"drawing {shape.num_interactions:,} interactions of {shape.num_users:,} users and "
          f"{shape.num_items:,} items (seed {FLAGS.seed})", flush=True)
    data = scaled.make_scaled(shape, seed=FLAGS.seed, echo=lambda line: print(line, flush=True))
    folder = scaled.write_scaled(data, FLAGS.out_dir, name, echo=lambda line: print(line, flush=True),
                                 command=" ".join(["python -m runners.prepare_data"] + sys.argv[1:]))
    with open(os.path.join(folder, "dataset.json")) as f:
        stats = json.load(f)["statistics"]
    print(f"{folder}: {len(data.users):,} interactions, "
          + ", ".join(f"{m}_feat.npy {shape.num_items:,}x{d}" for m, d in dims.items())
          + f"; user degree tail exponent {stats['user']['tail_exponent_above_5']}, item "
          f"{stats['item']['tail_exponent_above_5']} (dataset.json)")
    print(f"next: python -m runners.train --dataset={name} --data_dir={FLAGS.out_dir} ...")


def main(argv):
    del argv
    if not FLAGS.out_dir:
        raise common.UsageError("give --out_dir")
    if FLAGS.synthetic and FLAGS.raw_interactions:
        raise common.UsageError("--synthetic and --raw_interactions contradict each other")
    if FLAGS.synthetic:
        return prepare_synthetic()
    if FLAGS.raw_interactions:
        return prepare_raw_log()
    dims = _dims(FLAGS.standin_dims, "standin_dims")

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


def console_main():
    """The ``ibmrec-prepare-data`` console script (the same as ``python -m runners.prepare_data``)."""
    common.run(main)


if __name__ == "__main__":
    console_main()
