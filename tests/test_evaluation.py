import numpy as np
import pytest
import tensorflow as tf

from ibmrec_tf.data import load_dataset, make_synthetic
from ibmrec_tf.evaluation import Evaluator, blocked_top_k
from ibmrec_tf.metrics import ranking_metrics


def _brute_force(ds, split, users_emb, items_emb, ks):
    scores = users_emb @ items_emb.T
    train = ds.interaction_matrix("train").toarray() > 0
    target = ds.interaction_matrix(split).toarray() > 0
    scores[train] = -np.inf
    keep = target.sum(1) > 0
    ranked = np.argsort(-scores[keep], axis=1, kind="stable")[:, :max(ks)]
    hits = np.take_along_axis(target[keep], ranked, axis=1)
    return ranking_metrics(hits, target[keep].sum(1), ks)


def test_tiny_hand_checked(tiny_dir):
    ds = load_dataset(str(tiny_dir), "tiny", modalities=[])
    # Every user scores items 4 > 3 > 2 > 1 > 0.
    users = np.ones((4, 1), np.float32)
    items = np.arange(5, dtype=np.float32)[:, None]
    out = Evaluator(ds, "test", ks=[1, 2]).evaluate(users, items)
    # test targets: u0 -> 3 (train 0,1; ranking 4,3,2 -> hit at rank 2),
    #               u1 -> 0 (train 1,2; ranking 4,3,0 -> miss@2), u3 -> 4 (train 2; rank 1 hit)
    assert out["users_evaluated"] == 3 and out["users_skipped"] == 1
    assert out["recall@1"] == pytest.approx(1 / 3)
    assert out["recall@2"] == pytest.approx(2 / 3)
    assert out["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 3)


def test_matches_brute_force_with_several_batches():
    ds = make_synthetic(seed=1, num_users=150, num_items=90, interactions_per_user=12)
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(150, 8)).astype(np.float32), rng.normal(size=(90, 8)).astype(np.float32)
    ours = Evaluator(ds, "valid", ks=[5, 20], batch_size=37).evaluate(users, items)
    ref = _brute_force(ds, "valid", users, items, [5, 20])
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12)


def test_k_larger_than_items_rejected():
    ds = make_synthetic(seed=1, num_users=20, num_items=30, interactions_per_user=5)
    with pytest.raises(ValueError, match="exceeds the number of items"):
        Evaluator(ds, "test", ks=[50])


@pytest.mark.parametrize("kind", ["random", "ties", "masked", "constant"])
def test_blocked_top_k_equals_top_k(kind):
    rng = np.random.default_rng(3)
    rows, n, k, block = 40, 8 * 48, 6, 8
    if kind == "random":
        scores = rng.normal(size=(rows, n))
    elif kind == "ties":  # few distinct values: ties everywhere, broken by the lower column
        scores = rng.integers(0, 4, size=(rows, n)).astype(float)
    elif kind == "masked":  # most entries -inf, some rows with fewer than k finite ones
        scores = np.where(rng.random((rows, n)) < 0.99, -np.inf, rng.normal(size=(rows, n)))
    else:
        scores = np.zeros((rows, n))
    scores = tf.constant(scores, tf.float32)
    expected = tf.math.top_k(scores, k=k).indices.numpy()
    np.testing.assert_array_equal(blocked_top_k(scores, k, block).numpy(), expected)


def test_blocked_top_k_rejects_a_ragged_row():
    with pytest.raises(ValueError, match="multiple of 8"):
        blocked_top_k(tf.zeros([2, 30]), 2, 8)


def test_blocked_and_plain_evaluators_agree():
    # 700 items: the blocked top-k is used for K <= 5 (700 rounded up to 704 >= 2 * 5 * 64).
    ds = make_synthetic(seed=2, num_users=120, num_items=700, interactions_per_user=15)
    rng = np.random.default_rng(1)
    users = rng.normal(size=(120, 8)).astype(np.float32)
    items = np.round(rng.normal(size=(700, 8)), 1).astype(np.float32)  # some tied scores
    blocked = Evaluator(ds, "test", ks=[1, 5], batch_size=50)
    assert blocked._padding == 4
    plain = Evaluator(ds, "test", ks=[1, 5], batch_size=50)
    plain._padding = None
    plain._batches = [(u, m[m[:, 1] < 700]) for u, m in plain._batches]
    np.testing.assert_array_equal(blocked.top_k(users, items), plain.top_k(users, items))
    ours = blocked.evaluate(users, items)
    ref = _brute_force(ds, "test", users, items, [1, 5])
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12)
