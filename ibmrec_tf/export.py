"""The serving SavedModel: final embeddings and the users' training items, two signatures.

* ``serving_default(user_ids: int64[None]) -> {item_ids: int64[None, K], scores: float32[None, K]}``:
  the top ``K`` items of each user, training items excluded, best first.
* ``score_all(user_ids: int64[None]) -> {scores: float32[None, num_items]}``: every item's
  score, nothing excluded.

Every model scores ``<x_a, y_i>``, so the module stores the final user and item
representations computed at inference time; a reloaded module reproduces the trained
model's scores exactly. A user id outside ``[0, num_users)`` raises ``InvalidArgumentError``.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

class ServingModule(tf.Module):
    def __init__(self, user_embeddings, item_embeddings, train_matrix: sp.csr_matrix, top_k: int):
        super().__init__(name="ibmrec_serving")
        user_embeddings = np.asarray(user_embeddings, np.float32)
        item_embeddings = np.asarray(item_embeddings, np.float32)
        num_items = item_embeddings.shape[0]
        if not 1 <= top_k <= num_items:
            raise ValueError(f"export top_k must be in [1, {num_items}], got {top_k}")
        self.top_k = int(top_k)
        self.num_users = user_embeddings.shape[0]
        self.num_items = num_items
        self.user_embeddings = tf.Variable(user_embeddings, trainable=False, name="user_embeddings")
        self.item_embeddings = tf.Variable(item_embeddings, trainable=False, name="item_embeddings")
        train_matrix = sp.csr_matrix(train_matrix)
        self.train_row_splits = tf.Variable(train_matrix.indptr.astype(np.int64), trainable=False,
                                            name="train_row_splits")
        self.train_items = tf.Variable(train_matrix.indices.astype(np.int64), trainable=False,
                                       name="train_items")

    def _checked(self, user_ids):
        user_ids = tf.convert_to_tensor(user_ids, tf.int64)
        checks = [
            tf.debugging.assert_non_negative(user_ids, message="user_ids must be >= 0"),
            tf.debugging.assert_less(user_ids, tf.constant(self.num_users, tf.int64),
                                     message=f"user_ids must be < num_users = {self.num_users}")]
        with tf.control_dependencies(checks):
            return tf.identity(user_ids)

    def _scores(self, checked_ids):
        return tf.matmul(tf.gather(self.user_embeddings, checked_ids), self.item_embeddings,
                         transpose_b=True)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="user_ids")])
    def score_all(self, user_ids):
        return {"scores": self._scores(self._checked(user_ids))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="user_ids")])
    def recommend(self, user_ids):
        # Every use of the ids goes through the checked tensor, so no gather can run first.
        user_ids = self._checked(user_ids)
        scores = self._scores(user_ids)
        history = tf.gather(tf.RaggedTensor.from_row_splits(self.train_items, self.train_row_splits),
                            user_ids)
        index = tf.stack([history.value_rowids(), history.flat_values], axis=1)
        scores = tf.tensor_scatter_nd_update(
            scores, index, tf.fill([tf.shape(index)[0]], tf.constant(-np.inf, tf.float32)))
        top = tf.math.top_k(scores, k=self.top_k, sorted=True)
        return {"item_ids": tf.cast(top.indices, tf.int64), "scores": top.values}


def export_saved_model(path: str, user_embeddings, item_embeddings, train_matrix: sp.csr_matrix,
                       *, top_k: int = 50, metadata: dict | None = None) -> str:
    """Writes the serving SavedModel to ``path`` (replacing it only once the new one is complete)."""
    module = ServingModule(user_embeddings, item_embeddings, train_matrix, top_k)
    tmp = f"{path}.tmp-{os.getpid()}"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.recommend,
                                                 "score_all": module.score_all})
    with open(os.path.join(tmp, "assets.extra.json"), "w") as f:
        json.dump({"top_k": top_k, "num_users": module.num_users, "num_items": module.num_items,
                   **(metadata or {})}, f, indent=2, sort_keys=True)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def load_embeddings(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``(users, items)`` final embeddings stored in an exported SavedModel."""
    module = tf.saved_model.load(path)
    return module.user_embeddings.numpy(), module.item_embeddings.numpy()
