"""Search spaces for a hyper-parameter search, and their values as a run's flags.

A model's space is the settings it reads (:meth:`Recommender.search_space`, from its
``settings_read``: a backbone's, and each denoiser's as far as its terms apply) that
:data:`RANGES` gives a range for, plus the learning rate. So a search never varies a setting
its model would refuse, and a part added in its own module is searched over the settings it
declares without a line here, as long as they are in :data:`RANGES` (or the caller's own
space: every function here takes a plain ``{field: Range | Choice}`` mapping).

The ranges are this project's, chosen to cover the values that the papers report and the
settings found on TikTok's validation split (BENCHMARKS.md); MRdIB's three weights use the
grid its paper searched, ``{1e-4, 1e-3, 5e-3, 1e-2, 5e-2}``.

:func:`suggest` draws one point from an Optuna trial (``trial.suggest_float`` /
``suggest_int`` / ``suggest_categorical``); the search itself (TPE, pruning, storage) is
``runners.benchmark --study=tune``. Optuna is imported by the caller, not here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json


@dataclasses.dataclass(frozen=True)
class Range:
    """Values from ``low`` to ``high`` (``log``: uniform in the logarithm; ``integer``)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self):
        if not self.low < self.high:
            raise ValueError(f"a range needs low < high, got {self.low}, {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``values``."""

    values: tuple

    def __post_init__(self):
        if len(self.values) < 2:
            raise ValueError(f"a choice needs two or more values, got {self.values}")


#: MRdIB's paper searches each of its weights over this grid
MRDIB_GRID = (1e-4, 1e-3, 5e-3, 1e-2, 5e-2)

#: The ranges a search may vary, by ``ModelConfig`` / ``TrainConfig`` field
RANGES: dict[str, Range | Choice] = {
    "learning_rate": Range(1e-4, 3e-2, log=True),
    "reg_weight": Range(1e-6, 1e-1, log=True),
    "init_stddev": Range(3e-3, 1e-1, log=True),
    "n_layers": Range(1, 4, integer=True),
    "item_layers": Range(1, 3, integer=True),
    "knn_k": Choice((5, 10, 20)),
    "alpha": Range(1e-2, 10.0, log=True),
    "beta": Range(1e-2, 10.0, log=True),
    "tau": Range(0.05, 1.0, log=True),
    "freedom_dropout": Range(0.5, 0.9),
    "freedom_modality_bpr": Range(1e-5, 1e-2, log=True),
    "mgcn_cl_weight": Range(1e-4, 1e-1, log=True),
    "mrdib_kl_weight": Choice(MRDIB_GRID),
    "mrdib_unique_weight": Choice(MRDIB_GRID),
    "mrdib_redundancy_weight": Choice(MRDIB_GRID),
}

#: settings that are always searched (they belong to training, which every model reads)
TRAINING = ("learning_rate",)


def search_space(model: str, config, only=()) -> dict[str, Range | Choice]:
    """Model ``model``'s space under ``config`` (``only``: restrict to these fields).

    Raises:
      ValueError: a field of ``only`` that the model's space does not hold (naming those it
        does).
    """
    from ibmrec_tf.models import MODELS

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
    space = MODELS[model].search_space(config)
    unknown = sorted(set(only) - set(space))
    if unknown:
        raise ValueError(f"model {model} has no searched setting {', '.join(unknown)} "
                         f"(its space: {', '.join(sorted(space))})")
    return {name: dim for name, dim in space.items() if not only or name in only}


def suggest(trial, space: dict) -> dict:
    """One point of ``space`` drawn from an Optuna ``trial``, in the space's order."""
    point = {}
    for name, dim in space.items():
        if isinstance(dim, Choice):
            point[name] = trial.suggest_categorical(name, list(dim.values))
        elif dim.integer:
            point[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
        else:
            point[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
    return point


def as_flags(point: dict) -> list[str]:
    """``point`` as the runners' flags, ``--name=value`` (floats to 4 significant digits, so
    that a run's folder and ``flags.cfg`` read as the value that was trained)."""
    return [f"--{name}={_text(value)}" for name, value in sorted(point.items())]


def rounded(point: dict) -> dict:
    """``point`` with its floats at the precision :func:`as_flags` trains them at."""
    return {k: float(_text(v)) if isinstance(v, float) else v for k, v in point.items()}


def point_key(point: dict) -> str:
    """A short stable name of ``point`` (12 hex digits): the same values, the same run."""
    text = json.dumps({k: _text(v) for k, v in sorted(point.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _text(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
