import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from ibmrec_tf import export
from ibmrec_tf.data import make_synthetic

RELOAD = """
import sys, numpy as np, tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
s = m.signatures["score_all"](user_ids=tf.constant([0, 5, 7], tf.int64))["scores"].numpy()
np.save(sys.argv[2], s)
"""


@pytest.mark.slow
def test_export_reload_same_scores_topk_excludes_train(tmp_path):
    ds = make_synthetic(seed=0, num_users=40, num_items=30, interactions_per_user=6)
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    train = ds.interaction_matrix("train").tolil()
    train.rows[5], train.data[5] = [], []  # a user without training items
    train = train.tocsr()
    path = export.export_saved_model(str(tmp_path / "sm"), users, items, train, top_k=5)
    # A fresh process reproduces the scores exactly.
    out = tmp_path / "scores.npy"
    subprocess.run([sys.executable, "-c", RELOAD, path, str(out)], check=True)
    module = tf.saved_model.load(path)
    here = module.signatures["score_all"](user_ids=tf.constant([0, 5, 7], tf.int64))["scores"]
    np.testing.assert_array_equal(np.load(out), here.numpy())
    np.testing.assert_allclose(np.load(out), users[[0, 5, 7]] @ items.T, rtol=1e-5, atol=1e-6)

    asked = [0, 5, 9, 0]  # with a repeat
    rec = module.signatures["serving_default"](user_ids=tf.constant(asked, tf.int64))
    assert rec["item_ids"].dtype == tf.int64 and rec["item_ids"].shape == (4, 5)
    assert rec["scores"].dtype == tf.float32
    for row, user in enumerate(asked):
        seen = set(train[user].indices)
        ids = rec["item_ids"].numpy()[row]
        assert not seen & set(ids)
        scores = users[user] @ items.T
        scores[list(seen)] = -np.inf
        np.testing.assert_array_equal(ids, np.argsort(-scores, kind="stable")[:5])
    # Repeated: the range check must win against every gather, whatever the op scheduling.
    for _ in range(20):
        for signature in ("score_all", "serving_default"):
            with pytest.raises(tf.errors.InvalidArgumentError, match="num_users"):
                module.signatures[signature](user_ids=tf.constant([40], tf.int64))
            with pytest.raises(tf.errors.InvalidArgumentError, match=">= 0"):
                module.signatures[signature](user_ids=tf.constant([3, -1], tf.int64))


def test_export_rejects_bad_top_k(tmp_path):
    with pytest.raises(ValueError, match="top_k"):
        export.export_saved_model(str(tmp_path / "x"), np.ones((2, 2)), np.ones((3, 2)),
                                  np.zeros((2, 3)), top_k=4)


@pytest.mark.slow
def test_export_is_in_tf_serving_layout_with_warmup_requests(tmp_path):
    """Versions under the base path, assets.extra's metadata and warm-up requests that the
    SavedModel answers, and saved_model_cli's documented call."""
    pytest.importorskip("tensorflow_serving")
    from tensorflow_serving.apis import prediction_log_pb2

    ds = make_synthetic(seed=0, num_users=40, num_items=30, interactions_per_user=6)
    rng = np.random.default_rng(1)
    users, items = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    base = tmp_path / "export"
    first = export.export_saved_model(str(base), users, items, ds.interaction_matrix("train"),
                                      top_k=5, metadata={"model": "bprmf"})
    second = export.export_saved_model(str(base), users, 2 * items,
                                       ds.interaction_matrix("train"), top_k=5)
    assert (first, second) == (str(base / "1"), str(base / "2"))
    assert export.versions(str(base)) == [1, 2]
    assert export.resolve_saved_model(str(base)) == second
    assert export.resolve_saved_model(first) == first
    np.testing.assert_array_equal(export.load_embeddings(str(base))[1], 2 * items)
    meta = json.loads((base / "1" / "assets.extra" / "metadata.json").read_text())
    assert meta["version"] == 1 and meta["model"] == "bprmf" and meta["warmup_requests"]
    assert not [p for p in base.iterdir() if p.name.startswith(".tmp")]
    module = tf.saved_model.load(first)
    records = list(tf.data.TFRecordDataset(str(base / "1" / "assets.extra" / export.WARMUP_FILE)))
    assert len(records) == 2
    for record in records:
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        assert request.model_spec.signature_name == "serving_default"
        ids = tf.make_ndarray(request.inputs["user_ids"])
        out = module.signatures["serving_default"](user_ids=tf.constant(ids))
        assert out["item_ids"].shape == (len(ids), 5)
    cli = subprocess.run([os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "run", "--dir", first, "--tag_set", "serve",
                          "--signature_def", "serving_default",
                          "--input_exprs", "user_ids=[0, 1]"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "item_ids" in cli.stdout
