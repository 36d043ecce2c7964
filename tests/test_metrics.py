import numpy as np
import pytest

from ibmrec_tf.metrics import ranking_metrics


def test_golden_two_users():
    # user A: 2 targets, hits at ranks 1 and 3 (0-based 0 and 2) of K=3
    # user B: 1 target, hit at rank 2 (0-based 1)
    hits = np.array([[1, 0, 1], [0, 1, 0]], bool)
    m = ranking_metrics(hits, np.array([2, 1]), ks=[1, 3])
    # Recall@1: A 1/2, B 0 -> 0.25 ; Recall@3: A 1, B 1 -> 1
    assert m["recall@1"] == pytest.approx(0.25)
    assert m["recall@3"] == pytest.approx(1.0)
    # Precision@3: A 2/3, B 1/3 -> 0.5
    assert m["precision@3"] == pytest.approx(0.5)
    # NDCG@3: A (1 + 1/log2 4) / (1 + 1/log2 3) = 1.5 / 1.63093 = 0.919721
    #         B (1/log2 3) / 1 = 0.630930 -> mean 0.775325
    assert m["ndcg@3"] == pytest.approx((1.5 / (1 + 1 / np.log2(3)) + 1 / np.log2(3)) / 2, rel=1e-9)
    assert m["ndcg@3"] == pytest.approx(0.775325, abs=1e-6)
    # NDCG@1: A 1/1, B 0 -> 0.5
    assert m["ndcg@1"] == pytest.approx(0.5)


def test_ideal_dcg_uses_number_of_targets_not_retrieved_hits():
    # 3 targets, one found at rank 2 of K=2. MMRec: IDCG over min(3, 2)=2 positions.
    # LATTICE's code builds the ideal from the retrieved hits (one hit -> IDCG 1), giving
    # 0.6309 instead of 0.6309 / 1.6309 = 0.3869.
    m = ranking_metrics(np.array([[0, 1]], bool), np.array([3]), ks=[2])
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    assert m["ndcg@2"] == pytest.approx(0.386853, abs=1e-6)
    assert m["ndcg@2"] != pytest.approx(1 / np.log2(3))


@pytest.mark.parametrize("k", [0, 4, -1])
def test_invalid_k(k):
    with pytest.raises(ValueError, match="outside"):
        ranking_metrics(np.zeros((1, 3), bool), np.array([1]), ks=[k])


def test_users_without_targets_are_rejected():
    with pytest.raises(ValueError, match="at least one target"):
        ranking_metrics(np.zeros((2, 3), bool), np.array([1, 0]), ks=[1])
