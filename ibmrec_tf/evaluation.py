"""Full-ranking evaluation: every item is a candidate except the user's training items."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from ibmrec_tf import metrics
from ibmrec_tf.data import Dataset


class Evaluator:
    """Ranks all items for every user that has targets in ``split``, masking training items.

    One ``top_k`` per batch of users (``scores = U_b I^T``, training items set to ``-inf``),
    then :func:`ibmrec_tf.metrics.ranking_metrics` on the hit matrix. Users without targets in
    the split are skipped and counted in ``'users_skipped'``.

    ``batch_size`` users per batch: small batches keep each ``[batch, items]`` score block in
    the CPU's cache for the masking and the top-k; on Sports (35,598 users, 18,357 items,
    2 cores) 256 users per batch took 6.2 s against 7.5 s with 4,096 (``runners.benchmark
    --study=eval``). The score products themselves do not shrink: at 192 dimensions they
    alone take about 3 s there.
    """

    def __init__(self, dataset: Dataset, split: str, *, ks: Sequence[int] = (10, 20, 50),
                 batch_size: int = 256):
        self.ks = tuple(sorted(set(int(k) for k in ks)))
        if not self.ks or self.ks[0] < 1:
            raise ValueError(f"ks must be positive cut-offs, got {ks}")
        self.max_k = self.ks[-1]
        if self.max_k > dataset.num_items:
            raise ValueError(f"K={self.max_k} exceeds the number of items {dataset.num_items}")
        self.num_items = dataset.num_items
        self.split = split
        targets = dataset.interaction_matrix(split)
        train = dataset.interaction_matrix("train")
        counts = np.diff(targets.indptr)
        self.users = np.flatnonzero(counts > 0).astype(np.int64)
        self.users_skipped = int(dataset.num_users - len(self.users))
        self.num_targets = counts[self.users]
        self._target_keys = np.sort(self._keys(targets, self.users))
        self._batches = []
        for start in range(0, len(self.users), batch_size):
            users = self.users[start:start + batch_size]
            sub = train[users]
            rows = np.repeat(np.arange(len(users)), np.diff(sub.indptr))
            mask_idx = np.stack([rows, sub.indices], axis=1).astype(np.int64)
            self._batches.append((tf.constant(users.astype(np.int32)), tf.constant(mask_idx)))

    def _keys(self, matrix, users):
        sub = matrix[users]
        return np.repeat(users, np.diff(sub.indptr)) * self.num_items + sub.indices

    def top_k(self, user_embeddings, item_embeddings) -> np.ndarray:
        """``[len(self.users), max_k]`` item ids, best first."""
        user_embeddings = tf.convert_to_tensor(user_embeddings)
        item_embeddings = tf.convert_to_tensor(item_embeddings)
        ranked = [self._batch_top_k(user_embeddings, item_embeddings, users, mask_idx).numpy()
                  for users, mask_idx in self._batches]
        return np.concatenate(ranked) if ranked else np.zeros((0, self.max_k), np.int32)

    @tf.function(reduce_retracing=True)
    def _batch_top_k(self, user_embeddings, item_embeddings, users, mask_idx):
        scores = tf.matmul(tf.gather(user_embeddings, users), item_embeddings, transpose_b=True)
        scores = tf.tensor_scatter_nd_update(
            scores, mask_idx, tf.fill([tf.shape(mask_idx)[0]], tf.constant(-np.inf, scores.dtype)))
        return tf.math.top_k(scores, k=self.max_k, sorted=True).indices

    def evaluate(self, user_embeddings, item_embeddings) -> dict[str, float]:
        ranked = self.top_k(user_embeddings, item_embeddings).astype(np.int64)
        keys = self.users[:, None] * self.num_items + ranked
        pos = np.minimum(np.searchsorted(self._target_keys, keys), len(self._target_keys) - 1)
        hits = self._target_keys[pos] == keys if len(self._target_keys) else np.zeros_like(keys, bool)
        out = metrics.ranking_metrics(hits, self.num_targets, self.ks)
        out["users_evaluated"] = int(len(self.users))
        out["users_skipped"] = self.users_skipped
        return out
