"""Flags shared by the runners, and the one place where flags become typed configs.

Library code never reads flags: runners call :func:`model_config`, :func:`train_config` and
:func:`load_data` and pass plain values down.
"""

from __future__ import annotations

import logging
import os
import sys

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

from absl import flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from ibmrec_tf import config as config_lib  # noqa: E402  (no TensorFlow import)
from runners.cli import (STARTUP_NOISE, UsageError, has_nvidia_device,  # noqa: E402,F401
                         import_tensorflow_quietly, run)

FLAGS = flags.FLAGS

MODEL_NAMES = ["bprmf", "lightgcn", "vbpr", "vlightgcn", "lattice", "vlattice", "freedom", "mgcn",
               "ibmrec", "mrdib", "ibmrec_mrdib"]

#: Every flag defined here, in order: the flags a run records in ``flags.cfg`` (and compares
#: on ``--resume``), less ``INVOCATION_FLAGS``.
DEFINED: list[str] = []
#: Flags that say what to do with a model directory this time, not what the run is.
INVOCATION_FLAGS = ("overwrite", "resume", "verbose", "distribution_strategy", "cpu_replicas",
                    "profile_steps")


def _define(definer, name, default, help_text, **kwargs) -> None:
    definer(name, default, help=help_text, **kwargs)
    DEFINED.append(name)


def define_config_flags(cls) -> None:
    """One flag per field of config dataclass ``cls``: its name, default, help and choices."""
    import typing

    for field, type_ in ((f, cls.field_types()[f.name]) for f in config_lib.flag_fields(cls)):
        if field.name in DEFINED:
            continue  # a field two configs share (none today) keeps its first definition
        meta, default = field.metadata, field.default
        args = typing.get_args(type_)
        if meta.get("choices"):
            _define(flags.DEFINE_enum, field.name, default, meta["help"], enum_values=list(meta["choices"]))
        elif type_ is bool or (bool in args and type(None) in args):
            _define(flags.DEFINE_boolean, field.name, default, meta["help"])
        elif type_ is int:
            _define(flags.DEFINE_integer, field.name, default, meta["help"])
        elif type_ is float:
            _define(flags.DEFINE_float, field.name, default, meta["help"])
        elif type_ is str:
            _define(flags.DEFINE_string, field.name, default, meta["help"])
        else:  # tuples, optional tuples: a comma-separated list
            _define(flags.DEFINE_list, field.name, None if default is None else [str(v) for v in default],
                    meta["help"])


def _config_from_flags(cls, **overrides):
    values = {field.name: FLAGS[field.name].value for field in config_lib.flag_fields(cls)}
    values.update(overrides)
    return config_values(cls, values)


def config_values(cls, values: dict):
    """Config ``cls`` from flag values (lists as absl gives them), checked: a bad value is a
    UsageError naming the flag."""
    import typing

    types = cls.field_types()
    converted = {}
    for name, value in values.items():
        if isinstance(value, list):
            item_type = typing.get_args(types[name])
            item_type = next((t for t in item_type if t not in (type(None), Ellipsis)), str)
            item_type = typing.get_args(item_type)[0] if typing.get_args(item_type) else item_type
            try:
                value = tuple(item_type(v) for v in value)
            except ValueError:
                raise UsageError(f"--{name} must be a comma-separated list of "
                                 f"{item_type.__name__} values, got {','.join(value)}") from None
        converted[name] = value
    try:
        return cls(**converted)
    except config_lib.ConfigError as e:
        raise UsageError(e.as_flag()) from None


# -- data and run --------------------------------------------------------------------------------
def _define_all() -> None:
    from ibmrec_tf.config import DataConfig
    from ibmrec_tf.config import ModelConfig
    from ibmrec_tf.config import TrainConfig

    define_config_flags(DataConfig)
    _define(flags.DEFINE_string, "model_dir", None,
            "Output folder: flags, checkpoints, logs, metrics, export.")
    _define(flags.DEFINE_boolean, "overwrite", False, "Delete an existing --model_dir and start afresh.")
    _define(flags.DEFINE_boolean, "resume", False,
            "Continue training from the latest checkpoint in --model_dir.")
    _define(flags.DEFINE_integer, "intra_op_threads", 1,
            "Threads inside one TensorFlow op (0 = TensorFlow's default, all cores). One thread "
            "per op with ops running side by side was fastest on 2 cores (an IBMRec TikTok epoch "
            "5.1 -> 3.7 s, LightGCN unchanged); raise it on large machines.")
    _define(flags.DEFINE_integer, "inter_op_threads", 0,
            "Ops TensorFlow runs side by side (0 = its default, the number of cores).")
    _define(flags.DEFINE_enum, "distribution_strategy", "off",
            "off: one device. mirrored: one replica per visible GPU (or per --cpu_replicas "
            "logical CPU device) of this machine. multi_worker_mirrored: the workers that "
            "TF_CONFIG lists, each with its local devices. --batch_size stays the global batch; "
            "the result equals one replica's within float rounding.",
            enum_values=["off", "mirrored", "multi_worker_mirrored"])
    _define(flags.DEFINE_integer, "cpu_replicas", 0,
            "Split the CPU into this many logical devices and replicate over them (mirrored: "
            "replicas on a CPU-only machine, for tests and checks; 0 = no split).")
    _define(flags.DEFINE_enum, "model", "lightgcn", "Model to train.", enum_values=MODEL_NAMES)
    define_config_flags(ModelConfig)
    define_config_flags(TrainConfig)
    _define(flags.DEFINE_integer, "export_top_k", 50, "K of the SavedModel's serving_default signature.")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def recorded_flags() -> list[str]:
    """The flags a run records in ``flags.cfg``: every flag defined here but the invocation's."""
    return [name for name in DEFINED if name not in INVOCATION_FLAGS]


def check_flags(model_settings: bool = True) -> None:
    """Checks every flag (the configs' own checks included); raises UsageError naming the flag.

    ``model_settings=False`` skips the check that ``--model`` reads every model setting given
    (``runners.benchmark``, whose runs each check their own model)."""
    f = FLAGS
    _check(f.intra_op_threads >= 0 and f.inter_op_threads >= 0,
           "--intra_op_threads and --inter_op_threads must be >= 0")
    _check(f.export_top_k >= 1, f"--export_top_k must be >= 1, got {f.export_top_k}")
    _check(f.cpu_replicas >= 0, f"--cpu_replicas must be >= 0, got {f.cpu_replicas}")
    _check(f.cpu_replicas == 0 or f.distribution_strategy != "off",
           "--cpu_replicas needs --distribution_strategy=mirrored or multi_worker_mirrored")
    data_config(), train_config()
    if model_settings:
        check_model_settings(f.model, model_config())
    else:
        model_config()


def check_model_settings(model: str, config) -> None:
    """The library's check that every setting ``model`` does not read is at its default
    (:func:`ibmrec_tf.models.check_settings`), as a one-line flag error."""
    import_tensorflow_quietly()  # the models import TensorFlow
    from ibmrec_tf.models import check_settings

    try:
        check_settings(model, config)
    except config_lib.ConfigError as e:
        raise UsageError(e.as_flag().replace(f"model {model}", f"--model={model}", 1)) from None
    except ValueError as e:  # a term asked for where the backbone has no place for it
        raise UsageError(str(e)) from None


def parse_ks() -> tuple[int, ...]:
    return train_config().ks


def data_config():
    from ibmrec_tf.config import DataConfig

    return _config_from_flags(DataConfig)


def model_config():
    from ibmrec_tf.config import ModelConfig

    return _config_from_flags(ModelConfig)


def train_config():
    from ibmrec_tf.config import TrainConfig

    return _config_from_flags(TrainConfig)


def load_data():
    data = data_config().load(seed=FLAGS.seed)
    for note in data.notes:
        logging.warning("%s", note)
        print(f"WARNING: {note}", file=sys.stderr)
    ks = parse_ks()
    _check(max(ks) <= data.num_items,
           f"--ks: K={max(ks)} exceeds the number of items ({data.num_items})")
    _check(FLAGS.knn_k < data.num_items or FLAGS.model in ("bprmf", "lightgcn"),
           f"--knn_k must be < the number of items ({data.num_items}), got {FLAGS.knn_k}")
    return data


def flags_text(names=None) -> str:
    """``--name=value`` lines of this project's flags, loadable with ``--flagfile``."""
    lines = []
    for name in names or recorded_flags():
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


def device_name() -> str:
    """The GPU TensorFlow trains on, else the CPU's model name (for timing tables)."""
    from ibmrec_tf.orchestration import device_name as name

    return name()


def configure_tensorflow() -> None:
    """Sizes TensorFlow's thread pools and splits the CPU for --cpu_replicas; call once, after
    the checks, before any TensorFlow op."""
    tf = import_tensorflow_quietly()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    except RuntimeError:  # TensorFlow already runs in this process (runners.cli.invoke)
        absl_logging.warning("TensorFlow has started in this process before: its thread pools "
                             "stay as they are (--intra_op_threads, --inter_op_threads unused)")
    if FLAGS.cpu_replicas:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_replicas)
        except RuntimeError:
            raise UsageError("--cpu_replicas splits the CPU when TensorFlow starts, and it has "
                             "started in this process before: run the command in a process "
                             "of its own") from None


def read_tf_config():
    """``TF_CONFIG`` read by ``tf.distribute.cluster_resolver.TFConfigClusterResolver``, checked
    with one-line errors: a cluster with a ``worker`` list and this task among them. Returns the
    resolver."""
    import tensorflow as tf

    if not os.environ.get("TF_CONFIG"):
        raise UsageError("--distribution_strategy=multi_worker_mirrored needs TF_CONFIG, e.g. "
                         "TF_CONFIG='{\"cluster\": {\"worker\": [\"127.0.0.1:12345\", "
                         "\"127.0.0.1:12346\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}'")
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    try:
        cluster = resolver.cluster_spec().as_dict()
        task_type, task_id = resolver.task_type, resolver.task_id
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"TF_CONFIG is not a cluster spec with a 'worker' list and a 'task' "
                         f"with an 'index' ({type(e).__name__}: {e})") from None
    workers = cluster.get("worker")
    if not isinstance(workers, list) or not workers or not all(isinstance(w, str) for w in workers):
        raise UsageError("TF_CONFIG: cluster.worker must be a non-empty list of host:port")
    if task_type is None or task_id is None:
        raise UsageError("TF_CONFIG is not a cluster spec with a 'worker' list and a 'task' "
                         "with an 'index'")
    if task_type not in ("worker", "chief") or not 0 <= int(task_id) < len(workers):
        raise UsageError(f"TF_CONFIG: task {{'type': {task_type!r}, 'index': {task_id}}} is not "
                         f"one of the {len(workers)} workers")
    return resolver


def is_chief(strategy) -> bool:
    """Whether this process writes --model_dir (:func:`ibmrec_tf.orchestration.is_chief`)."""
    from ibmrec_tf.orchestration import is_chief as chief

    return chief(strategy)


def make_strategy():
    """The ``tf.distribute`` strategy of --distribution_strategy (None for 'off'), checked.

    Call after :func:`configure_tensorflow`. ``mirrored`` replicates over the --cpu_replicas
    logical CPU devices when given, else over every visible GPU.
    """
    import tensorflow as tf

    kind = FLAGS.distribution_strategy
    if kind == "off":
        return None
    if kind == "mirrored":
        if FLAGS.cpu_replicas:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        else:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
            if not devices:
                raise UsageError("--distribution_strategy=mirrored found no GPU; on a CPU-only "
                                 "machine give --cpu_replicas=N")
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        resolver = read_tf_config()
        if FLAGS.cpu_replicas and FLAGS.cpu_replicas != 1:
            raise UsageError("--cpu_replicas with multi_worker_mirrored must be 0 or 1 "
                             "(one replica per worker on a CPU)")
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    replicas = strategy.num_replicas_in_sync
    _check(FLAGS.batch_size % replicas == 0,
           f"--batch_size={FLAGS.batch_size} is not divisible by the {replicas} replicas of "
           f"--distribution_strategy={kind}")
    return strategy


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


_define_all()
