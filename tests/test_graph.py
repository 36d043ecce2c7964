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


def _clustered(n, dim=32, clusters=20, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    return (centers[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, dim))).astype(
        np.float32)


def test_the_approximate_builder_finds_the_exact_neighbours_on_clustered_features():
    pytest.importorskip("faiss")
    feats = _clustered(3000)
    exact_ids, exact_sims = graph.knn_graph(feats, 10)
    ids, sims = graph.knn_graph(feats, 10, method="ivf", nprobe=8)
    assert ids.shape == (3000, 10) and ids.dtype == np.int64 and sims.dtype == np.float32
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids, exact_ids)])
    assert recall > 0.95, recall
    assert (ids[:, 0] == np.arange(3000)).all()  # its own list is always probed
    assert (np.diff(sims, axis=1) <= 1e-6).all() and sims.min() >= 0
    # The similarities are the true cosines of the ids returned.
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    np.testing.assert_allclose(sims, np.clip(np.einsum("nd,nkd->nk", unit, unit[ids]), 0, None),
                               atol=1e-5)
    # Seeded: the same graph twice. One list searched finds fewer than all lists.
    assert (graph.knn_graph(feats, 10, method="ivf", nprobe=8)[0] == ids).all()
    one = graph.knn_graph(feats, 10, method="ivf", nprobe=1)[0]
    assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(one, exact_ids)]) < recall
    del exact_sims


def test_the_approximate_builder_keeps_missing_items_out_and_fills_short_lists():
    pytest.importorskip("faiss")
    feats = _clustered(400, dim=8, clusters=4)
    missing = np.zeros(400, bool)
    missing[::5] = True
    ids, sims = graph.knn_graph(feats, 6, method="ivf", missing=missing)
    assert not np.isin(ids, np.flatnonzero(missing)).any()
    assert sims[missing].max() == 0 and sims[~missing, 0].min() > 0.99
    # 10 lists of about 40 items and k=150: every probed list is too short, so every row is
    # searched exactly and equals the exact builder's.
    assert graph.ivf_lists(400) == 10
    uniform = np.random.default_rng(1).normal(size=(400, 8)).astype(np.float32)
    ids, sims = graph.knn_graph(uniform, 150, method="ivf", nprobe=1)
    exact_ids, exact_sims = graph.knn_graph(uniform, 150)
    np.testing.assert_allclose(sims, exact_sims, atol=1e-5)
    assert np.mean(ids == exact_ids) > 0.99  # the same ids, up to ties
    with pytest.raises(ValueError, match="unknown kNN method"):
        graph.knn_graph(feats, 6, method="hnsw")


def test_a_model_builds_its_item_graphs_with_the_approximate_builder():
    pytest.importorskip("faiss")
    from ibmrec_tf.data import make_synthetic
    from ibmrec_tf.models import ModelConfig, build_model

    data = make_synthetic(seed=0, num_users=60, num_items=400, interactions_per_user=6,
                          modality_dims={"image": 12, "text": 10})
    exact = build_model("vlattice", data, ModelConfig(embedding_dim=8, knn_k=5))
    approximate = build_model("vlattice", data, ModelConfig(embedding_dim=8, knn_k=5,
                                                            knn_method="ivf", knn_nprobe=10))
    # 10 lists of 400 items, all searched: the approximate builder is exact.
    assert graph.ivf_lists(400) == 10
    same = approximate.item_graph.neighbors.numpy() == exact.item_graph.neighbors.numpy()
    assert same.mean() > 0.99
