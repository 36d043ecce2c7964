"""Flags shared by the runners, and the one place where flags become typed configs.

Library code never reads flags: runners call :func:`model_config`, :func:`train_config` and
:func:`load_data` and pass plain values down.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _keep_freed_memory() -> None:
    """Stops glibc from returning large freed blocks to the OS between training steps.

    TensorFlow's CPU tensors of a few MB are otherwise mmap-ed and page-faulted afresh on every
    allocation; keeping them in the heap cut a TikTok LightGCN step from ~27 ms to ~22 ms on
    2 cores. Runners own the process, so they set this; the library never does.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 30)
        libc.mallopt(m_top_pad, 256 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


_keep_freed_memory()

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS

MODEL_NAMES = ["bprmf", "lightgcn", "vbpr", "vlightgcn", "lattice", "vlattice", "ibmrec"]

# -- data and run --------------------------------------------------------------------------------
flags.DEFINE_string("dataset", "synthetic",
                    "Dataset folder name under --data_dir, or 'synthetic' for the built-in data.")
flags.DEFINE_string("data_dir", "data", "Folder holding one sub-folder per dataset.")
flags.DEFINE_enum("data_format", "auto", ["auto", "inter", "json"],
                  "Interactions file: <dataset>.inter, 5-core/*.json, or auto (.inter if present).")
flags.DEFINE_list("modalities", None,
                  "Item feature modalities to read (<modality>_feat.npy); default: all present.")
flags.DEFINE_integer("feature_noise_dims", 0, "Append this many seeded noise dimensions to every "
                     "modality (the irrelevant-feature experiment).")
flags.DEFINE_float("train_fraction", 1.0, "Keep this seeded fraction of the training "
                   "interactions (the scaling benchmark); valid and test stay whole.")
flags.DEFINE_string("model_dir", None, "Output folder: flags, checkpoints, logs, metrics, export.")
flags.DEFINE_boolean("overwrite", False, "Delete an existing --model_dir and start afresh.")
flags.DEFINE_boolean("resume", False, "Continue training from the checkpoint in --model_dir.")
flags.DEFINE_integer("seed", 0, "Seed of the initialization, the sampler and the synthetic data.")
flags.DEFINE_integer("verbose", 1, "0: quiet; 1: progress bar and one line per epoch.")
flags.DEFINE_integer("intra_op_threads", 1,
                     "Threads inside one TensorFlow op (0 = TensorFlow's default, all cores). One "
                     "thread per op with ops running side by side was fastest on 2 cores (an IBMRec "
                     "TikTok epoch 5.1 -> 3.7 s, LightGCN unchanged); raise it on large machines.")
flags.DEFINE_integer("inter_op_threads", 0,
                     "Ops TensorFlow runs side by side (0 = its default, the number of cores).")

# -- model -----------------------------------------------------------------------------------------
flags.DEFINE_enum("model", "lightgcn", MODEL_NAMES, "Model to train.")
flags.DEFINE_integer("embedding_dim", 64, "ID embedding size (and projected size per modality).")
flags.DEFINE_integer("n_layers", 2, "User-item graph propagation layers.")
flags.DEFINE_float("reg_weight", 1e-4, "L2 regularization weight lambda on batch ego embeddings.")
flags.DEFINE_float("init_stddev", 0.01, "Std of the N(0, s^2) initializer of the ID embeddings.")
flags.DEFINE_integer("knn_k", 10, "Neighbours per item in each modality's kNN item-item graph.")
flags.DEFINE_integer("item_layers", 1, "Item-item graph propagation layers (LATTICE models).")
flags.DEFINE_integer("projection_layers", 0,
                     "Hidden layers of each modality's projection MLP; 0 = one affine map.")
flags.DEFINE_string("projection_activation", "leaky_relu", "Activation of the projection's hidden "
                    "layers (any Keras activation name).")
flags.DEFINE_boolean("straightforward", False,
                     "Train with the straightforward formulation: every node propagated and every "
                     "item projected each step, then the batch's rows gathered. Same results, "
                     "slower; the reference of the speed benchmark.")
flags.DEFINE_enum("backbone", "vlattice", ["vbpr", "vlightgcn", "lattice", "vlattice"],
                  "IBMRec's backbone.")
flags.DEFINE_boolean("fib", None, "IBMRec: feature-level information bottleneck (alpha * HSIC(Z, M)); "
                     "default: wherever the backbone supports it (vbpr, vlightgcn, vlattice).")
flags.DEFINE_boolean("gib", None, "IBMRec: graph-level information bottleneck (beta * HSIC(Y', Y)); "
                     "default: wherever the backbone supports it (lattice, vlattice).")
flags.DEFINE_boolean("second_stage", None, "IBMRec: the second update, InfoNCE(c_a, z_i) on C and Z; "
                     "default: wherever the backbone has C (vbpr, vlightgcn, vlattice).")
flags.DEFINE_integer("hsic_items", 256, "IBMRec: distinct batch items the HSIC terms use (0 = all).")
flags.DEFINE_float("alpha", 1.0, "IBMRec: FIB coefficient.")
flags.DEFINE_float("sigma2_fib", 0.2, "IBMRec: RBF kernel width sigma^2 of the FIB HSIC.")
flags.DEFINE_float("beta", 0.5, "IBMRec: GIB coefficient.")
flags.DEFINE_float("sigma2_gib", 0.25, "IBMRec: RBF kernel width sigma^2 of the GIB HSIC.")
flags.DEFINE_float("tau", 0.2, "IBMRec: InfoNCE temperature.")
flags.DEFINE_float("mask_temperature", 0.5, "IBMRec: RelaxedBernoulli temperature of edge masks.")
flags.DEFINE_boolean("hard_mask", False, "IBMRec: straight-through hard 0/1 edge masks.")
flags.DEFINE_integer("masker_hidden", 8, "IBMRec: hidden units of the edge-masking MLP.")

# -- training --------------------------------------------------------------------------------------
flags.DEFINE_integer("epochs", 1000, "Maximum number of epochs.")
flags.DEFINE_integer("batch_size", 1024, "BPR triplets per step.")
flags.DEFINE_float("learning_rate", 5e-4, "Adam learning rate.")
flags.DEFINE_integer("patience", 10, "Epochs without a better valid Recall@20 before stopping.")
flags.DEFINE_list("ks", ["10", "20", "50"], "Cut-offs K of Recall/Precision/NDCG@K.")
flags.DEFINE_integer("eval_batch_size", 512, "Users per full-ranking evaluation batch (512: the "
                     "fastest measured on 2 cores; see --study=eval of runners.benchmark).")
flags.DEFINE_integer("export_top_k", 50, "K of the SavedModel's serving_default signature.")

OWN_FLAGS = ["dataset", "data_dir", "data_format", "modalities", "feature_noise_dims",
             "train_fraction", "model_dir", "seed", "model",
             "embedding_dim", "n_layers", "reg_weight", "init_stddev", "knn_k", "item_layers",
             "projection_layers", "projection_activation", "straightforward", "backbone", "fib", "gib", "second_stage",
             "alpha", "sigma2_fib", "beta", "sigma2_gib", "tau", "mask_temperature", "hard_mask",
             "masker_hidden", "hsic_items", "intra_op_threads", "inter_op_threads", "epochs",
             "batch_size", "learning_rate", "patience", "ks", "eval_batch_size", "export_top_k"]


class UsageError(ValueError):
    """A flag value that cannot work; reported as one line with exit status 2."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def check_flags() -> None:
    """Bounds every numeric flag; raises UsageError naming the flag."""
    f = FLAGS
    _check(f.intra_op_threads >= 0 and f.inter_op_threads >= 0,
           "--intra_op_threads and --inter_op_threads must be >= 0")
    _check(f.feature_noise_dims >= 0, f"--feature_noise_dims must be >= 0, got {f.feature_noise_dims}")
    _check(0.0 < f.train_fraction <= 1.0, f"--train_fraction must be in (0, 1], got {f.train_fraction}")
    _check(f.embedding_dim >= 1, f"--embedding_dim must be >= 1, got {f.embedding_dim}")
    _check(0 <= f.n_layers <= 16, f"--n_layers must be in [0, 16], got {f.n_layers}")
    _check(f.reg_weight >= 0, f"--reg_weight must be >= 0, got {f.reg_weight}")
    _check(f.init_stddev > 0, f"--init_stddev must be > 0, got {f.init_stddev}")
    _check(f.knn_k >= 1, f"--knn_k must be >= 1, got {f.knn_k}")
    _check(f.epochs >= 1, f"--epochs must be >= 1, got {f.epochs}")
    _check(f.batch_size >= 1, f"--batch_size must be >= 1, got {f.batch_size}")
    _check(f.learning_rate > 0, f"--learning_rate must be > 0, got {f.learning_rate}")
    _check(f.patience >= 1, f"--patience must be >= 1, got {f.patience}")
    _check(f.eval_batch_size >= 1, f"--eval_batch_size must be >= 1, got {f.eval_batch_size}")
    _check(f.export_top_k >= 1, f"--export_top_k must be >= 1, got {f.export_top_k}")
    _check(0 <= f.item_layers <= 16, f"--item_layers must be in [0, 16], got {f.item_layers}")
    _check(f.projection_layers >= 0, f"--projection_layers must be >= 0, got {f.projection_layers}")
    for name in ("alpha", "beta"):
        _check(f[name].value >= 0, f"--{name} must be >= 0, got {f[name].value}")
    for name in ("sigma2_fib", "sigma2_gib", "tau", "mask_temperature"):
        _check(f[name].value > 0, f"--{name} must be > 0, got {f[name].value}")
    _check(f.masker_hidden >= 1, f"--masker_hidden must be >= 1, got {f.masker_hidden}")
    _check(f.hsic_items >= 0, f"--hsic_items must be >= 0, got {f.hsic_items}")
    if f.model != "ibmrec":
        for name in ("fib", "gib", "second_stage"):
            _check(f[name].value is None, f"--{name} applies to --model=ibmrec only "
                   f"(got --model={f.model})")
    ks = parse_ks()
    _check(20 in ks, "--ks must include 20 (epochs are selected on valid Recall@20)")


def parse_ks() -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(k) for k in FLAGS.ks}))
    except ValueError:
        raise UsageError(f"--ks must be a comma-separated list of integers, got {FLAGS.ks}") from None
    _check(all(k >= 1 for k in ks) and ks, f"--ks values must be >= 1, got {FLAGS.ks}")
    return ks


def model_config():
    from ibmrec_tf.models import ModelConfig

    f = FLAGS
    return ModelConfig(
        embedding_dim=f.embedding_dim, n_layers=f.n_layers, reg_weight=f.reg_weight,
        init_stddev=f.init_stddev, knn_k=f.knn_k, item_layers=f.item_layers,
        projection_layers=f.projection_layers, projection_activation=f.projection_activation,
        fib=f.fib, gib=f.gib, second_stage=f.second_stage, alpha=f.alpha, sigma2_fib=f.sigma2_fib,
        beta=f.beta, sigma2_gib=f.sigma2_gib, tau=f.tau, mask_temperature=f.mask_temperature,
        hard_mask=f.hard_mask, masker_hidden=f.masker_hidden, backbone=f.backbone,
        hsic_items=f.hsic_items, straightforward=f.straightforward)


def train_config():
    from ibmrec_tf.training import TrainConfig

    f = FLAGS
    return TrainConfig(epochs=f.epochs, batch_size=f.batch_size, learning_rate=f.learning_rate,
                       patience=f.patience, seed=f.seed, ks=parse_ks(),
                       eval_batch_size=f.eval_batch_size, verbose=f.verbose)


def load_data():
    from ibmrec_tf.data import get_dataset, with_noise_dims, with_train_fraction

    data = get_dataset(FLAGS.dataset, FLAGS.data_dir, modalities=FLAGS.modalities,
                       fmt=FLAGS.data_format, seed=FLAGS.seed)
    data = with_noise_dims(data, FLAGS.feature_noise_dims, seed=FLAGS.seed)
    data = with_train_fraction(data, FLAGS.train_fraction, seed=FLAGS.seed)
    for note in data.notes:
        logging.warning("%s", note)
        print(f"WARNING: {note}", file=sys.stderr)
    _check(max(parse_ks()) <= data.num_items,
           f"--ks: K={max(parse_ks())} exceeds the number of items ({data.num_items})")
    _check(FLAGS.knn_k < data.num_items or FLAGS.model in ("bprmf", "lightgcn"),
           f"--knn_k must be < the number of items ({data.num_items}), got {FLAGS.knn_k}")
    return data


def flags_text(names=None) -> str:
    """``--name=value`` lines of this project's flags, loadable with ``--flagfile``."""
    lines = []
    for name in names or OWN_FLAGS:
        value = FLAGS[name].value
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, list):
            lines.append(f"--{name}={','.join(str(v) for v in value)}")
        else:
            lines.append(f"--{name}={value}")
    return "\n".join(lines) + "\n"


def configure_tensorflow() -> None:
    """Sizes TensorFlow's thread pools; call once, after the checks, before any TensorFlow op."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)


def parse_flag_lines(lines) -> list[tuple[int, str, str]]:
    """``(line number, name, value)`` of each ``--name=value``, ``--name`` or ``--noname`` line.

    The form ``flags_text`` writes and ``--flagfile`` reads; a bare boolean gives ``"true"``,
    its ``--no`` form ``"false"``. Lines not starting with ``--`` are skipped.
    """
    items = []
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line.startswith("--"):
            continue
        name, eq, value = line[2:].partition("=")
        if not eq and name.startswith("no") and name[2:] in FLAGS and name not in FLAGS:
            name, value = name[2:], "false"
        elif not eq:
            value = "true"
        items.append((lineno, name, value))
    return items


def adopt_saved_flags(model_dir: str) -> None:
    """Sets every flag recorded in ``<model_dir>/flags.cfg`` that the command line did not set."""
    path = os.path.join(model_dir, "flags.cfg")
    if not os.path.isfile(path):
        raise UsageError(f"{path}: not found; is --model_dir a directory written by runners.train?")
    with open(path) as f:
        for lineno, name, value in parse_flag_lines(f):
            if name not in FLAGS:
                raise UsageError(f"{path}:{lineno}: unknown flag --{name}")
            if not FLAGS[name].present:
                FLAGS[name].parse(value)


def run(main: Callable) -> None:
    """``app.run(main)`` that turns expected errors into one line on stderr and exit status 2."""

    def wrapped(argv):
        from ibmrec_tf.data import DataError

        if len(argv) > 1:
            print(f"error: unexpected arguments {argv[1:]} (flags are --name=value)", file=sys.stderr)
            sys.exit(2)
        from absl import logging as absl_logging

        if not FLAGS["verbosity"].present:
            absl_logging.set_verbosity(absl_logging.WARNING)

        try:
            return main(argv)
        except (UsageError, DataError, FileExistsError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except RuntimeError as e:
            from ibmrec_tf.training import NumericalError

            if not isinstance(e, NumericalError):
                raise
            print(f"error: {e}; training stopped, the last good checkpoint is kept in "
                  f"{FLAGS.model_dir}/checkpoints", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("interrupted: the last completed epoch's checkpoint is kept; continue with "
                  "--resume", file=sys.stderr)
            sys.exit(130)

    app.run(wrapped)
