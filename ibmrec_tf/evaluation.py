"""Full-ranking evaluation: every item is a candidate except the user's training items."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from ibmrec_tf import metrics
from ibmrec_tf.data import Dataset


def blocked_top_k(scores, k: int, block: int = 64):
    """``tf.math.top_k(scores, k).indices``, exactly, reading most of each row only once.

    Each row of ``scores`` ``[rows, n]`` (``n`` a multiple of ``block``) is cut into blocks of
    ``block`` consecutive columns. The ``k`` best entries of a row lie in its ``k`` blocks
    with the best maxima: an entry outside them is preceded by the best entry of each of
    those ``k`` blocks. So one max per block, a top-k over the block maxima, and a top-k over
    the ``k * block`` entries of the chosen blocks (put back in column order) give the same
    indices in the same order as a top-k over the whole row. Ties go to the lower column, as in
    ``tf.math.top_k``; the same rule among blocks keeps the two orders equal.

    On a ``[256, 18,368]`` block of scores this took 9.5 ms against 22 ms for
    ``tf.math.top_k`` (2 cores). Needs ``n >= k * block``.
    """
    rows, n = tf.shape(scores)[0], scores.shape[1]
    if n % block or n < k * block:
        raise ValueError(f"blocked_top_k needs a multiple of {block} columns, at least "
                         f"k * block = {k * block}; got {n}")
    blocks = tf.reshape(scores, [rows, n // block, block])
    best_blocks = tf.sort(tf.math.top_k(tf.reduce_max(blocks, axis=2), k=k).indices, axis=1)
    candidates = tf.reshape(tf.gather(blocks, best_blocks, batch_dims=1), [rows, k * block])
    position = tf.math.top_k(candidates, k=k).indices
    return tf.gather(best_blocks, position // block, batch_dims=1) * block + position % block


class Evaluator:
    """Ranks all items for every user that has targets in ``split``, masking training items.

    One top-k per batch of users (``scores = U_b I^T``, training items set to ``-inf``;
    :func:`blocked_top_k` with at least ``2 * K * BLOCK`` items, else ``tf.math.top_k``), then
    :func:`ibmrec_tf.metrics.ranking_metrics` on the hit matrix. Users without targets in the
    split are skipped and counted in ``'users_skipped'``.

    ``batch_size`` users per batch: small batches keep each ``[batch, items]`` score block in
    the CPU's cache for the masking and the top-k. On Sports (35,598 users, 18,357 items,
    2 cores, ``runners.benchmark --study=eval``) 512 users per batch took 4.3 s with
    192-dimensional embeddings against 6.5 s with 4,096 (3.0 s against 5.0 s with 64). The
    score products themselves do not shrink: at 192 dimensions they alone take 2.6-3.6 s there.

    ``score_dtype``: the dtype of the score products (``'bfloat16'`` or ``'float16'`` under a
    mixed precision policy); the scores are cast back to float32 before masking and ranking.
    """

    #: columns per block of :func:`blocked_top_k`
    BLOCK = 64

    def __init__(self, dataset: Dataset, split: str, *, ks: Sequence[int] = (10, 20, 50),
                 batch_size: int = 512, score_dtype: str = "float32"):
        self.score_dtype = tf.as_dtype(score_dtype)
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
        # The blocked top-k needs a multiple of BLOCK columns: the padded items score -inf, as
        # the masked training items do, through one more embedding column (1 for every user,
        # 0 for every item, -inf for the padded ones) instead of a mask entry per user and
        # padded item (at 1M users and 54 padded items that was 0.9 GB per evaluator).
        padded = -(-self.num_items // self.BLOCK) * self.BLOCK
        self._padding = padded - self.num_items if padded >= 2 * self.max_k * self.BLOCK else None
        self._batches = []
        for start in range(0, len(self.users), batch_size):
            users = self.users[start:start + batch_size]
            sub = train[users]
            rows = np.repeat(np.arange(len(users), dtype=np.int32), np.diff(sub.indptr))
            mask_idx = np.stack([rows, sub.indices.astype(np.int32)], axis=1)
            self._batches.append((tf.constant(users.astype(np.int32)), tf.constant(mask_idx)))

    def _keys(self, matrix, users):
        sub = matrix[users]
        return np.repeat(users, np.diff(sub.indptr)) * self.num_items + sub.indices

    def top_k(self, user_embeddings, item_embeddings) -> np.ndarray:
        """``[len(self.users), max_k]`` item ids, best first."""
        user_embeddings = tf.cast(tf.convert_to_tensor(user_embeddings), self.score_dtype)
        item_embeddings = tf.cast(tf.convert_to_tensor(item_embeddings), self.score_dtype)
        item_embeddings = self._padded_items(item_embeddings)
        ranked = [self._batch_top_k(user_embeddings, item_embeddings, users, mask_idx).numpy()
                  for users, mask_idx in self._batches]
        return np.concatenate(ranked) if ranked else np.zeros((0, self.max_k), np.int32)

    def _padded_items(self, item_embeddings):
        """The item embeddings ``_batch_top_k`` takes: as they are, or (blocked top-k) with one
        more column (0) and the padded rows (0, then -inf in that column)."""
        if self._padding is None:
            return item_embeddings
        dim, dtype = item_embeddings.shape[1], item_embeddings.dtype
        real = tf.concat([item_embeddings, tf.zeros([self.num_items, 1], dtype)], axis=1)
        pads = tf.concat([tf.zeros([self._padding, dim], dtype),
                          tf.fill([self._padding, 1], tf.constant(-np.inf, dtype))], axis=1)
        return tf.concat([real, pads], axis=0)

    @tf.function(reduce_retracing=True, autograph=False)  # no tensor-dependent Python
    def _batch_top_k(self, user_embeddings, item_embeddings, users, mask_idx):
        rows = tf.gather(user_embeddings, users)
        if self._padding is not None:  # the column that gives the padded items -inf
            rows = tf.concat([rows, tf.ones([tf.shape(rows)[0], 1], rows.dtype)], axis=1)
        scores = tf.matmul(rows, item_embeddings, transpose_b=True)
        scores = tf.cast(scores, tf.float32)
        scores = tf.tensor_scatter_nd_update(
            scores, mask_idx, tf.fill([tf.shape(mask_idx)[0]], tf.constant(-np.inf, scores.dtype)))
        if self._padding is not None:
            return blocked_top_k(scores, self.max_k, self.BLOCK)
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
