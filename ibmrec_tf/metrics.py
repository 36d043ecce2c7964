"""Top-K ranking metrics as pure functions of a hit matrix (MMRec's definitions).

For a user with target set ``T`` (``|T| >= 1``) and a ranked list whose ``r``-th item is a hit
when it is in ``T`` (``hits[:, r]``, ``r = 0 .. K-1``):

* ``Recall@K = (#hits in top K) / |T|``
* ``Precision@K = (#hits in top K) / K``
* ``NDCG@K = DCG@K / IDCG@K`` with ``DCG@K = sum_{r<K} hit_r / log2(r + 2)`` and the ideal
  ``IDCG@K = sum_{r < min(|T|, K)} 1 / log2(r + 2)``: the best list puts all targets first.
  (Computing the ideal from the retrieved list's own hits, as LATTICE's code does, inflates
  NDCG; see ``tests/test_metrics.py``.)

Each metric is averaged over the users passed in; users without targets must be left out by
the caller.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

METRIC_NAMES = ("recall", "precision", "ndcg")


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def recall_at_k(hits: np.ndarray, num_targets: np.ndarray, k: int) -> np.ndarray:
    """Per-user Recall@k from a ``[users, >=k]`` boolean hit matrix."""
    return hits[:, :k].sum(axis=1) / num_targets


def precision_at_k(hits: np.ndarray, num_targets: np.ndarray, k: int) -> np.ndarray:
    del num_targets
    return hits[:, :k].sum(axis=1) / float(k)


def ndcg_at_k(hits: np.ndarray, num_targets: np.ndarray, k: int) -> np.ndarray:
    discounts = _discounts(k)
    dcg = (hits[:, :k] * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(num_targets, k) - 1]
    return dcg / ideal


_FUNCTIONS = {"recall": recall_at_k, "precision": precision_at_k, "ndcg": ndcg_at_k}


def ranking_metrics(hits: np.ndarray, num_targets: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Mean Recall/Precision/NDCG at each ``k`` in ``ks``, keyed ``'recall@20'`` etc.

    Args:
      hits: ``[users, max(ks)]`` boolean; ``hits[u, r]`` is whether the ``r``-th ranked item of
        user ``u`` is one of its targets.
      num_targets: ``[users]`` number of targets of each user (``>= 1``).
      ks: cut-offs, each in ``[1, hits.shape[1]]``.
    """
    hits = np.asarray(hits, dtype=np.float64)
    num_targets = np.asarray(num_targets, dtype=np.int64)
    if hits.ndim != 2 or hits.shape[0] != num_targets.shape[0]:
        raise ValueError(f"hits must be [users, K] and num_targets [users]; got {hits.shape} "
                         f"and {num_targets.shape}")
    if (num_targets < 1).any():
        raise ValueError("every user passed in needs at least one target")
    for k in ks:
        if not 1 <= k <= hits.shape[1]:
            raise ValueError(f"k={k} is outside [1, {hits.shape[1]}] (the ranked list's length)")
    return {f"{name}@{k}": float(fn(hits, num_targets, k).mean()) if len(hits) else 0.0
            for k in ks for name, fn in _FUNCTIONS.items()}
