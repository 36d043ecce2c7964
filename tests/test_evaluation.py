import numpy as np
import pytest

from ibmrec_tf.data import load_dataset, make_synthetic
from ibmrec_tf.evaluation import Evaluator
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
