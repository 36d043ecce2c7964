"""The serving SavedModel: final embeddings and the users' training items, two signatures.

* ``serving_default(user_ids: int64[None]) -> {item_ids: int64[None, K], scores: float32[None, K]}``:
  the top ``K`` items of each user, training items excluded, best first.
* ``score_all(user_ids: int64[None]) -> {scores: float32[None, num_items]}``: every item's
  score, nothing excluded.

The layout is TF Serving's (:func:`export_saved_model`): ``<base>/<version>/`` with
``assets.extra/metadata.json`` and a warm-up file. Every model scores ``<x_a, y_i>``, so the module stores the final user and item
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

#: TF Serving's warm-up file, under ``assets.extra/``
WARMUP_FILE = "tf_serving_warmup_requests"


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
        # The users' training items, flattened: (row in the batch, position in train_items).
        # Written with Repeat and Cumsum, not a ragged gather, which has no GPU kernel.
        starts = tf.gather(self.train_row_splits, user_ids)
        lengths = tf.gather(self.train_row_splits, user_ids + 1) - starts
        rows = tf.repeat(tf.range(tf.size(user_ids, out_type=tf.int64)), lengths)
        positions = (tf.range(tf.reduce_sum(lengths))
                     - tf.repeat(tf.cumsum(lengths, exclusive=True) - starts, lengths))
        index = tf.stack([rows, tf.gather(self.train_items, positions)], axis=1)
        scores = tf.tensor_scatter_nd_update(
            scores, index, tf.fill([tf.shape(index)[0]], tf.constant(-np.inf, tf.float32)))
        top = tf.math.top_k(scores, k=self.top_k, sorted=True)
        return {"item_ids": tf.cast(top.indices, tf.int64), "scores": top.values}


def export_saved_model(path: str, user_embeddings, item_embeddings, train_matrix: sp.csr_matrix,
                       *, top_k: int = 50, metadata: dict | None = None,
                       version: int | None = None, model_name: str = "ibmrec_tf") -> str:
    """Writes the serving SavedModel in TF Serving's layout and returns its folder.

    ``path`` is the model's base folder (what ``tensorflow_model_server --model_base_path``
    reads); the SavedModel goes to ``path/<version>/`` (``version``: the next integer after
    the newest one there, 1 in an empty folder), replacing nothing until it is complete, with

    * ``assets.extra/metadata.json``: ``top_k``, the users and items, and ``metadata``;
    * ``assets.extra/tf_serving_warmup_requests``: requests that warm up ``serving_default``
      (:func:`write_warmup_requests`; with the ``serving`` extra installed, else absent and
      ``metadata.json`` says so).
    """
    module = ServingModule(user_embeddings, item_embeddings, train_matrix, top_k)
    existing = versions(path)
    version = int(version) if version is not None else (existing[-1] + 1 if existing else 1)
    if version < 1:
        raise ValueError(f"export version must be >= 1, got {version}")
    final = os.path.join(path, str(version))
    os.makedirs(path, exist_ok=True)
    tmp = os.path.join(path, f".tmp-{version}-{os.getpid()}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    tf.saved_model.save(module, tmp, signatures={"serving_default": module.recommend,
                                                 "score_all": module.score_all})
    extra = os.path.join(tmp, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    warmed = write_warmup_requests(os.path.join(extra, WARMUP_FILE), model_name=model_name,
                                   num_users=module.num_users)
    with open(os.path.join(extra, "metadata.json"), "w") as f:
        json.dump({"top_k": top_k, "num_users": module.num_users, "num_items": module.num_items,
                   "version": version, "warmup_requests": warmed, **(metadata or {})}, f,
                  indent=2, sort_keys=True)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def load_embeddings(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``(users, items)`` final embeddings stored in an exported SavedModel (``path``: a
    version folder, or a base folder, whose newest version is read)."""
    resolved = resolve_saved_model(path)
    if resolved is None:
        raise FileNotFoundError(f"{path}: no saved_model.pb there nor in a version folder")
    module = tf.saved_model.load(resolved)
    return module.user_embeddings.numpy(), module.item_embeddings.numpy()


def versions(base: str) -> list[int]:
    """The version numbers of the SavedModels under ``base`` (TF Serving's layout), ascending."""
    if not os.path.isdir(base):
        return []
    return sorted(int(name) for name in os.listdir(base) if name.isdigit()
                  and os.path.isfile(os.path.join(base, name, "saved_model.pb")))


def resolve_saved_model(path: str) -> str | None:
    """``path`` itself when it is a SavedModel, else its newest version (``path/<n>``), else
    None."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    found = versions(path)
    return os.path.join(path, str(found[-1])) if found else None


def write_warmup_requests(path: str, *, model_name: str, num_users: int,
                          batch_sizes=(1, 8)) -> bool:
    """Writes ``path``: TF Serving's warm-up file, one ``PredictionLog`` per batch size (users
    ``0 .. n-1`` through ``serving_default``), so a server traces the signature before the
    first request. Needs the ``serving`` extra (``tensorflow-serving-api``, whose protos these
    are); returns False, writing nothing, without it."""
    try:
        from tensorflow_serving.apis import (model_pb2, predict_pb2, prediction_log_pb2)
    except ImportError:
        return False
    with tf.io.TFRecordWriter(path) as writer:
        for size in batch_sizes:
            size = max(1, min(int(size), num_users))
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default"))
            request.inputs["user_ids"].CopyFrom(
                tf.make_tensor_proto(np.arange(size, dtype=np.int64)))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return True
