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
    train = ds.interaction_matrix("train")
    path = export.export_saved_model(str(tmp_path / "sm"), users, items, train, top_k=5)
    # A fresh process reproduces the scores exactly.
    out = tmp_path / "scores.npy"
    subprocess.run([sys.executable, "-c", RELOAD, path, str(out)], check=True)
    module = tf.saved_model.load(path)
    here = module.signatures["score_all"](user_ids=tf.constant([0, 5, 7], tf.int64))["scores"]
    np.testing.assert_array_equal(np.load(out), here.numpy())
    np.testing.assert_allclose(np.load(out), users[[0, 5, 7]] @ items.T, rtol=1e-5, atol=1e-6)

    rec = module.signatures["serving_default"](user_ids=tf.constant([0, 5], tf.int64))
    assert rec["item_ids"].dtype == tf.int64 and rec["item_ids"].shape == (2, 5)
    assert rec["scores"].dtype == tf.float32
    for row, user in enumerate([0, 5]):
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
