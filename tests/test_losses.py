import numpy as np
import pytest
import tensorflow as tf

from ibmrec_tf import losses


def _hsic_numpy(x, y, s2x, s2y):
    """Eq. 2 literally: (n-1)^-2 tr(Kx H Ky H)."""
    n = len(x)

    def kernel(a, s2):
        d = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
        return np.exp(-d / (2 * s2))

    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(kernel(x, s2x) @ h @ kernel(y, s2y) @ h) / (n - 1) ** 2


def test_bpr_and_l2_values():
    assert losses.bpr_loss(tf.constant([2.0, 0.0]), tf.constant([0.0, 0.0])).numpy() == \
        pytest.approx((np.log1p(np.exp(-2.0)) + np.log(2.0)) / 2)
    assert losses.l2_loss([tf.ones((2, 3)), 2 * tf.ones((1, 2))], 4).numpy() == \
        pytest.approx(0.5 * (6 + 8) / 4)


@pytest.mark.parametrize("normalize", [False, True])
def test_hsic_matches_numpy_eq2(normalize):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(17, 5)), rng.normal(size=(17, 3))
    ours = losses.hsic_rbf(x, y, 0.7, 1.3, normalize=normalize).numpy()
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
    assert ours == pytest.approx(_hsic_numpy(x, y, 0.7, 1.3), rel=1e-4)


def test_hsic_separates_dependent_from_independent_and_is_permutation_invariant():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    independent = rng.normal(size=(200, 8)).astype(np.float32)
    dependent = np.tanh(x @ rng.normal(size=(8, 8))).astype(np.float32)
    h_ind = losses.hsic_rbf(x, independent, 1.0).numpy()
    h_dep = losses.hsic_rbf(x, dependent, 1.0).numpy()
    h_self = losses.hsic_rbf(x, x, 1.0).numpy()
    # Independent samples leave only the estimator's O(1/n) bias.
    assert h_dep > 5 * h_ind and h_self > 5 * h_ind
    assert h_ind < 0.005
    perm = rng.permutation(200)
    assert losses.hsic_rbf(x[perm], dependent[perm], 1.0).numpy() == pytest.approx(h_dep, rel=1e-4)


def test_hsic_scale_invariant_when_normalized_and_finite_at_extremes():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(50, 6))
    base = losses.hsic_rbf(x, y, 0.3).numpy()
    assert losses.hsic_rbf(1e4 * x, 1e-4 * y, 0.3).numpy() == pytest.approx(base, rel=1e-3)
    for s2 in (1e-8, 1e8):
        assert np.isfinite(losses.hsic_rbf(1e6 * x, y, s2).numpy())


def test_info_nce_matches_numpy():
    rng = np.random.default_rng(3)
    a, p = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    pn = p / np.linalg.norm(p, axis=1, keepdims=True)
    logits = an @ pn.T / 0.2
    expected = -np.mean(np.diag(logits) - np.log(np.exp(logits).sum(1)))
    assert losses.info_nce(a, p, 0.2).numpy() == pytest.approx(expected, rel=1e-5)


def test_info_nce_with_shared_candidates():
    rng = np.random.default_rng(4)
    a, z = rng.normal(size=(4, 3)), rng.normal(size=(2, 3))
    labels = np.array([1, 0, 1, 1])
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    logits = an @ zn.T / 0.5
    expected = -np.mean(logits[np.arange(4), labels] - np.log(np.exp(logits).sum(1)))
    assert losses.info_nce(a, z, 0.5, labels=labels).numpy() == pytest.approx(expected, rel=1e-5)
