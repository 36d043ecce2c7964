r"""Writes item features into a dataset folder from item images and item texts.

    python -m runners.extract_features --dataset_dir=data/mine/shop \
        --images=catalog/images --texts=catalog/texts.tsv

* --images: a folder of files named by raw item id (``B0001.jpg``), or a CSV with a header
  line and ``item id,path`` rows; encoded by --image_model (default VGG16's 4096-d fc2
  output) into ``image_feat.npy``.
* --texts: a TSV with a header line, the raw item id in the first column and the title /
  description after it; encoded by --text_encoder (a KerasHub preset, mean-pooled, default
  bert_base_en_uncased, 768-d; or ``tfidf``: TF-IDF + truncated SVD to --text_dim, no download,
  the weaker choice) into ``text_feat.npy``.

Rows follow the folder's item ids (``item_ids.tsv`` from ``runners.prepare_data``). Features
are written in chunks: an interrupted run continues with --resume. Items without a usable image
or text get a zero row, are marked in ``<modality>_missing.npy`` (read by the loaders) and
listed in ``extract_report.json``; more than --max_missing of them is an error (exit 2).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from runners import cli

flags.DEFINE_string("dataset_dir", None, "The dataset folder to write the features into "
                    "(holding <name>.inter and, from prepare_data, item_ids.tsv).")
flags.DEFINE_string("images", None, "A folder of item images named <raw item id>.<ext> "
                    "(jpg, jpeg, png, gif, bmp, webp), or a CSV of 'item id,path' rows with a "
                    "header line.")
flags.DEFINE_string("texts", None, "A TSV of item texts with a header line: raw item id, then "
                    "the text (further columns are joined).")
flags.DEFINE_enum("image_model", "vgg16", ["vgg16", "resnet50", "efficientnetv2b0",
                                           "efficientnetv2s"],
                  "Keras Applications network: vgg16 (fc2, 4096-d, as the Amazon sets' "
                  "features), resnet50 (pooled, 2048-d), efficientnetv2b0 / efficientnetv2s "
                  "(pooled, 1280-d).")
flags.DEFINE_string("image_weights", "imagenet", "imagenet (downloaded on first use into "
                    "~/.keras/models), none (random, seeded by --seed), or a .weights.h5 path.")
flags.DEFINE_integer("image_size", None, "Input side in pixels (default: the network's own, "
                     "224; 384 for efficientnetv2s; vgg16 needs 224).", lower_bound=32)
flags.DEFINE_string("text_encoder", "bert_base_en_uncased",
                    "A KerasHub preset name or local preset folder (mean-pooled token "
                    "embeddings), or tfidf (TF-IDF + truncated SVD; no download).")
flags.DEFINE_string("text_weights", "preset", "preset (the preset's weights, downloaded on "
                    "first use), none (random, seeded by --seed), or a .weights.h5 path; "
                    "not read by tfidf.")
flags.DEFINE_integer("text_dim", 384, "tfidf: the SVD's width.", lower_bound=1)
flags.DEFINE_integer("text_max_length", 128, "KerasHub: tokens kept per text.", lower_bound=2)
flags.DEFINE_integer("extract_batch_size", 32, "Images or texts per network call.",
                     lower_bound=1)
flags.DEFINE_integer("chunk_size", 1024, "Items per saved chunk (the unit of --resume).",
                     lower_bound=1)
flags.DEFINE_float("max_missing", 0.2, "The largest share of items allowed without a usable "
                   "image or text (missing, empty, or not decodable); more is an error.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_boolean("resume", False, "Continue an interrupted extraction from its saved "
                     "chunks (same encoder, same sources).")
flags.DEFINE_boolean("overwrite", False, "Replace existing feature files and discard an "
                     "interrupted run's chunks.")
flags.DEFINE_integer("seed", 0, "Seeds random weights (--image_weights=none, "
                     "--text_weights=none) and the TF-IDF SVD.")
flags.DEFINE_boolean("progress", True, "Print a progress bar with items per second.")
FLAGS = flags.FLAGS


def _weights(flag: str, allowed: tuple[str, ...]) -> str:
    value = FLAGS[flag].value
    if value not in allowed and not os.path.isfile(value):
        raise cli.UsageError(f"--{flag}={value}: not {' or '.join(allowed)}, and no such file")
    return value


def main(argv):
    del argv
    if not FLAGS.dataset_dir:
        raise cli.UsageError("give --dataset_dir, the dataset folder to write features into")
    if not os.path.isdir(FLAGS.dataset_dir):
        raise cli.UsageError(f"--dataset_dir={FLAGS.dataset_dir}: no such folder")
    if not FLAGS.images and not FLAGS.texts:
        raise cli.UsageError("give --images and/or --texts")
    if FLAGS.resume and FLAGS.overwrite:
        raise cli.UsageError("--resume and --overwrite exclude each other")
    if FLAGS.image_model == "vgg16" and FLAGS.image_size not in (None, 224):
        raise cli.UsageError(f"--image_size={FLAGS.image_size}: vgg16's fc2 features need 224")
    if FLAGS.images:
        _weights("image_weights", ("imagenet", "none"))
    if FLAGS.texts and FLAGS.text_encoder != "tfidf":
        _weights("text_weights", ("preset", "none"))
    cli.import_tensorflow_quietly()
    from ibmrec_tf import features as feats

    raw_ids = feats.item_raw_ids(FLAGS.dataset_dir)
    print(f"{FLAGS.dataset_dir}: {len(raw_ids)} items")
    jobs = []
    if FLAGS.images:
        sources, reasons = feats.image_sources(FLAGS.images, raw_ids)
        encoder = feats.ImageEncoder(model=FLAGS.image_model, weights=FLAGS.image_weights,
                                     image_size=FLAGS.image_size,
                                     batch_size=FLAGS.extract_batch_size, seed=FLAGS.seed)
        jobs.append(("image", sources, reasons, lambda encoder=encoder: encoder))
    if FLAGS.texts:
        texts, reasons = feats.text_sources(FLAGS.texts, raw_ids)

        def text_encoder():
            if FLAGS.text_encoder == "tfidf":
                return feats.TfidfTextEncoder(dim=FLAGS.text_dim, seed=FLAGS.seed)
            return feats.KerasHubTextEncoder(preset=FLAGS.text_encoder,
                                             weights=FLAGS.text_weights,
                                             max_length=FLAGS.text_max_length,
                                             batch_size=FLAGS.extract_batch_size,
                                             seed=FLAGS.seed)

        jobs.append(("text", texts, reasons, text_encoder))
    for modality, sources, reasons, make_encoder in jobs:
        result = feats.extract(
            FLAGS.dataset_dir, modality, sources, make_encoder(), reasons=reasons,
            raw_ids=raw_ids, chunk_size=FLAGS.chunk_size, resume=FLAGS.resume,
            overwrite=FLAGS.overwrite, max_missing=FLAGS.max_missing,
            progress=FLAGS.progress)
        rate = (f", {result.items_per_second:.1f} items/s" if result.encoded else "")
        print(f"{result.feature_file}: {result.num_items}x{result.dim} float32, "
              f"{len(result.missing)} missing (zero rows, marked in {modality}_missing.npy)"
              f"; {result.encoded} encoded this run in {result.seconds:.1f} s{rate}"
              + (f", {result.resumed_chunks} chunk(s) reused" if result.resumed_chunks else ""))
    print(f"report: {os.path.join(FLAGS.dataset_dir, feats.REPORT)}", file=sys.stdout)


def console_main():
    """The ``ibmrec-extract-features`` console script (the same as ``python -m runners.extract_features``)."""
    cli.run(main)


if __name__ == "__main__":
    console_main()
