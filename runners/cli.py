"""What every runner shares that defines no flag: one-line errors with exit status 2, and a
quiet TensorFlow start.

:func:`run` is ``absl.app.run`` that turns the library's expected errors (bad data, bad
configuration, an existing output, a missing optional extra) into one line on stderr and exit
status 2. Runners with flags of their own import this module alone; the training flags live in
:mod:`runners.common`.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from absl import app, flags

FLAGS = flags.FLAGS


class UsageError(ValueError):
    """A flag value that cannot work; reported as one line with exit status 2."""


#: TensorFlow's start-up lines that say nothing on a machine without an NVIDIA GPU: the CUDA
#: probe's failure, the CPU build's notices. Only whole lines holding one of these are dropped.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "cpu_feature_guard",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions",
)


def has_nvidia_device() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.isdir("/proc/driver/nvidia")


def import_tensorflow_quietly():
    """Imports TensorFlow and lists its devices; on a machine without an NVIDIA GPU, the start-up
    lines in ``STARTUP_NOISE`` are dropped from stderr and every other line is passed on.

    TensorFlow's C++ start-up writes to file descriptor 2 before its log level applies, so
    ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them; this captures the descriptor while TensorFlow
    imports and probes for GPUs. On a machine with one, nothing is captured: a failed CUDA probe
    there is a real error.
    """
    if "tensorflow" in sys.modules or has_nvidia_device():
        import tensorflow as tf

        tf.config.list_physical_devices()
        return tf
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if line.strip() and not any(noise in line for noise in STARTUP_NOISE):
                    print(line, file=sys.stderr)
    return tf


def _guarded(main: Callable) -> Callable:
    """``main`` with the library's expected errors turned into one line and exit status 2."""

    def wrapped(argv):
        from ibmrec_tf.config import ConfigError
        from ibmrec_tf.data import DataError
        from ibmrec_tf.memory import MemoryBudgetError

        if len(argv) > 1:
            print(f"error: unexpected arguments {argv[1:]} (flags are --name=value)", file=sys.stderr)
            sys.exit(2)
        from absl import logging as absl_logging

        if not FLAGS["verbosity"].present:
            absl_logging.set_verbosity(absl_logging.WARNING)

        try:
            return main(argv)
        except ConfigError as e:
            print(f"error: {e.as_flag()}", file=sys.stderr)
            sys.exit(2)
        except (UsageError, DataError, FileExistsError, MemoryBudgetError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except ImportError as e:
            from ibmrec_tf.features.encoders import MissingExtra

            if not isinstance(e, MissingExtra):
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except ValueError as e:
            from ibmrec_tf.training import CheckpointError

            if not isinstance(e, CheckpointError):
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except RuntimeError as e:
            from ibmrec_tf.training import NumericalError

            if not isinstance(e, NumericalError):
                raise
            model_dir = FLAGS["model_dir"].value if "model_dir" in FLAGS else "the model directory"
            print(f"error: {e}; training stopped, the last good checkpoint is kept in "
                  f"{model_dir}/checkpoints", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("interrupted: the last completed epoch's checkpoint is kept; continue with "
                  "--resume", file=sys.stderr)
            sys.exit(130)

    return wrapped


def _parse_flags(argv):
    # absl's own parser exits 1 with its usage text on a bad value (an enum's unknown choice, a
    # bound); every bad flag is one line and exit status 2 here.
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(main: Callable) -> None:
    """``app.run(main)`` that turns expected errors into one line on stderr and exit status 2."""
    app.run(_guarded(main), flags_parser=_parse_flags)


def invoke(main: Callable, argv: list[str]) -> int:
    """Runs a runner's ``main`` in this process as its command line would, and returns the exit
    status: every flag reset to its default, then ``argv`` parsed (``argv[0]`` is the
    program's name), the same one-line errors and exit statuses as :func:`run`.

    For tests and notebooks that call several runners without a new process (and a new
    TensorFlow import) each. TensorFlow's thread pools and logical devices are fixed when it
    starts, so ``--intra_op_threads`` and ``--inter_op_threads`` keep the process's values and
    ``--cpu_replicas`` is refused once TensorFlow has started (see
    :func:`runners.common.configure_tensorflow`). The runners that define flags of the same
    name (``runners.prepare_data`` and ``runners.extract_features`` beside the training
    runners) cannot share one process.
    """
    FLAGS.unparse_flags()
    saved, sys.argv = sys.argv, list(argv)
    try:
        _guarded(main)(_parse_flags(sys.argv))
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
