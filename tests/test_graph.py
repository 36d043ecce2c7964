import numpy as np
import pytest

from ibmrec_tf import graph


def test_normalized_adjacency_hand_computed():
    # users {0, 1}, items {0, 1}; edges u0-i0, u0-i1, u1-i1. Degrees: u0 2, u1 1, i0 1, i1 2.
    adj = graph.normalized_adjacency(2, 2, np.array([[0, 0], [0, 1], [1, 1]])).toarray()
    s2 = 1 / np.sqrt(2)
    expected = np.array([
        [0, 0, s2, 0.5],
        [0, 0, 0, s2],
        [s2, 0, 0, 0],
        [0.5, s2, 0, 0],
    ], np.float32)
    np.testing.assert_allclose(adj, expected, rtol=1e-6)


def test_normalized_adjacency_isolated_nodes_are_empty():
    adj = graph.normalized_adjacency(3, 3, np.array([[0, 0]])).toarray()
    assert np.isfinite(adj).all()
    assert adj[1].sum() == 0 and adj[:, 5].sum() == 0 and adj[0, 3] == pytest.approx(1.0)


def _brute_knn(features, k):
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    sim = unit @ unit.T
    out = np.zeros_like(sim)
    for i in range(len(sim)):
        top = np.argsort(-sim[i])[:k]
        out[i, top] = np.clip(sim[i, top], 0, None)
    return out


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_knn_graph_matches_brute_force_for_any_chunk(chunk):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(23, 5))
    neighbors, sims = graph.knn_graph(feats, 4, chunk_size=chunk)
    dense = np.zeros((23, 23), np.float32)
    np.put_along_axis(dense, neighbors, sims, axis=1)
    np.testing.assert_allclose(dense, _brute_knn(feats, 4), atol=1e-6)
    assert (neighbors[:, 0] == np.arange(23)).all()  # an item is its own nearest neighbour
    assert (np.diff(sims, axis=1) <= 1e-7).all()


def test_knn_graph_rejects_bad_k_and_handles_zero_rows():
    feats = np.zeros((4, 3))
    feats[0] = 1
    with pytest.raises(ValueError, match="k must be in"):
        graph.knn_graph(feats, 5)
    _, sims = graph.knn_graph(feats, 2)
    assert np.isfinite(sims).all() and sims[1:].max() == 0
