import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
import keras

from ibmrec_tf.layers import (CSRGraph, GraphPropagation, ModalityProjection, NeighborGraph,
                              symmetric_normalize)


def _random_sparse(n, m, density, seed):
    return sp.random(n, m, density=density, random_state=seed, dtype=np.float32).tocsr()


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("kernel", ["csr", "fallback"])
def test_csr_matmul_and_gradient_match_dense(symmetric, kernel, monkeypatch):
    if kernel == "fallback":  # as if TensorFlow had moved its private CSR module
        from ibmrec_tf.layers import sparse as layers
        monkeypatch.setattr(layers, "_csr_ops", None)
    a = _random_sparse(30, 30, 0.2, 0)
    if symmetric:
        a = a + a.T
    graph = CSRGraph(a)
    assert graph.symmetric == symmetric
    assert graph.uses_csr_kernel == (kernel == "csr")
    x = tf.Variable(np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32))
    dense = tf.constant(a.toarray())
    weights = tf.constant(np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        ours = tf.reduce_sum(graph.matmul(graph.matmul(x)) * weights)
        ref = tf.reduce_sum((dense @ (dense @ x)) * weights)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(ours, x).numpy(), tape.gradient(ref, x).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_models_train_without_the_csr_module(monkeypatch):
    from ibmrec_tf.layers import sparse as layers
    from ibmrec_tf.data import TripletSampler, make_synthetic
    from ibmrec_tf.models import ModelConfig, build_model

    monkeypatch.setattr(layers, "_csr_ops", None)
    with pytest.raises(ValueError, match="no CSR sparse-matrix module"):
        CSRGraph(sp.eye(3, format="csr"), use_csr_kernel=True)
    data = make_synthetic(seed=1, num_users=40, num_items=30, interactions_per_user=5,
                          modality_dims={"image": 12, "text": 10})
    model = build_model("ibmrec", data, ModelConfig(embedding_dim=4, knn_k=3))
    assert not model.backbone.ui_graph.uses_csr_kernel
    model.create_optimizers(1e-2)
    batch = next(iter(TripletSampler(data, 0).epoch_dataset(1, 64)))
    before = [w.copy() for w in model.get_weights()]
    terms = tf.function(model.train_step)(batch)
    assert np.isfinite(terms["loss"].numpy())
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_csr_graph_inside_tf_function():
    graph = CSRGraph(sp.csr_matrix(np.array([[0, 2.0], [1.0, 0]], np.float32)))
    fn = tf.function(lambda x: graph.matmul(x, rows=tf.constant([1])))
    np.testing.assert_allclose(fn(tf.constant([[1.0], [3.0]])).numpy(), [[1.0]])


@pytest.mark.parametrize("fast_gradient", [False, True])
def test_neighbor_graph_rows_values_and_gradients_match_dense(fast_gradient):
    rng = np.random.default_rng(0)
    nbr = rng.integers(0, 12, size=(12, 3))
    nbr[:, 0] = 5  # repeated columns across rows; also repeated within row 5 below
    nbr[5, 1] = 5
    vals = tf.Variable(rng.random((12, 3)).astype(np.float32))
    x = tf.Variable(rng.normal(size=(12, 4)).astype(np.float32))
    rows = tf.constant([5, 0, 5, 11])
    with tf.GradientTape(persistent=True) as tape:
        graph = NeighborGraph(nbr, vals, fast_gradient=fast_gradient)
        dense = tf.tensor_scatter_nd_add(
            tf.zeros((12, 12)), np.stack([np.repeat(np.arange(12), 3), nbr.ravel()], 1),
            tf.reshape(vals, [-1]))
        ours = tf.reduce_sum(tf.square(graph.matmul(x, rows=rows)))
        ref = tf.reduce_sum(tf.square(tf.gather(dense @ x, rows)))
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5)
    for var in (vals, x):
        np.testing.assert_allclose(tf.convert_to_tensor(tape.gradient(ours, var)).numpy(),
                                   tf.convert_to_tensor(tape.gradient(ref, var)).numpy(),
                                   rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(graph.to_dense(), dense.numpy(), rtol=1e-6)


def test_symmetric_normalize_matches_numpy():
    nbr = np.array([[0, 1], [1, 2], [2, 0]])
    vals = np.array([[1.0, 2.0], [3.0, 1.0], [0.0, 0.0]], np.float32)
    out = symmetric_normalize(tf.constant(vals), tf.constant(nbr)).numpy()
    deg = vals.sum(1)  # [3, 4, 0]
    expected = np.array([[1 / 3, 2 / np.sqrt(12)], [3 / 4, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert deg[2] == 0 and np.isfinite(out).all()


def test_symmetric_normalize_keeps_bounded_gradients_when_a_mask_empties_a_row():
    """A row whose every edge a mask drops (keep ~ 1e-30) is normalized as if its degree were
    the floor: outputs near zero and gradients of a bounded size (an rsqrt under a 1e-12 floor
    gives gradients up to 5e17 once a row's degree nears it)."""
    nbr = tf.constant([[0, 1], [1, 2], [2, 0]])
    base = tf.constant([[1.0, 2.0], [3.0, 1.0], [0.5, 0.5]])
    mask = tf.Variable([[1.0, 1.0], [1.0, 1.0], [1e-30, 1e-30]])
    weights = tf.constant([[0.3, -0.7], [1.1, 0.2], [-0.4, 0.9]])
    with tf.GradientTape() as tape:
        out = symmetric_normalize(base * mask, nbr)
        loss = tf.reduce_sum(out * weights)
    grad = tape.gradient(loss, mask).numpy()
    assert np.isfinite(out.numpy()).all() and np.abs(out.numpy()[2]).max() < 1e-10
    # bounded by about 1 / DEGREE_FLOOR (a self-loop meets the floor twice: 0.5 * 1e4 * 0.4);
    # under a 1e-12 floor the same gradient was 2e11
    assert np.isfinite(grad).all() and np.abs(grad).max() < 1e5, grad
    # rows above the floor are unchanged: D^-1/2 S D^-1/2 as before
    kept = symmetric_normalize(base, nbr).numpy()
    degree = base.numpy().sum(1)
    expected = base.numpy() / np.sqrt(degree)[:, None] / np.sqrt(degree[nbr.numpy()])
    np.testing.assert_allclose(kept, expected, rtol=1e-6)


def test_csr_symmetry_is_judged_relative_to_the_entries():
    small = sp.csr_matrix(np.array([[0.0, 2e-8], [1e-8, 0.0]], np.float32))
    assert not CSRGraph(small).symmetric  # an absolute 1e-6 tolerance called this symmetric
    assert CSRGraph(small + small.T).symmetric


def test_resampled_graph_gradient_matches_dense_and_refuses_asymmetric_entries():
    from ibmrec_tf.layers import ResampledGraph

    owner = keras.layers.Layer()
    a = _random_sparse(12, 12, 0.3, 5)
    a = (a + a.T).tocsr()
    graph = ResampledGraph(owner, "g", 12, a.nnz)
    graph.assign(a)
    x = tf.Variable(np.random.default_rng(6).normal(size=(12, 3)).astype(np.float32))
    weights = tf.constant(np.random.default_rng(7).normal(size=(12, 3)).astype(np.float32))
    dense = tf.constant(a.toarray())
    with tf.GradientTape(persistent=True) as tape:
        ours = tf.reduce_sum(graph.matmul(x) * weights)
        ref = tf.reduce_sum((dense @ x) * weights)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(ours, x).numpy(), tape.gradient(ref, x).numpy(),
                               rtol=1e-5, atol=1e-6)
    skew = a.tolil()
    row, col = a.nonzero()
    k = next(k for k in range(len(row)) if row[k] != col[k])
    skew[row[k], col[k]] = a[row[k], col[k]] * 2 + 1
    with pytest.raises(ValueError, match="not symmetric"):
        graph.assign(skew.tocsr())


def test_graph_propagation_two_node_graph():
    # G = [[0, 1], [1, 0]]; E0 = I. Layer 1: G, layer 2: I.
    graph = CSRGraph(sp.csr_matrix(np.array([[0, 1.0], [1.0, 0]], np.float32)))
    eye = tf.eye(2)
    mean2 = GraphPropagation(num_layers=2)(eye, graph=graph).numpy()
    np.testing.assert_allclose(mean2, np.array([[2, 1], [1, 2]]) / 3.0, rtol=1e-6)
    last1 = GraphPropagation(num_layers=1, combine="last")(eye, graph=graph, rows=tf.constant([1]))
    np.testing.assert_allclose(last1.numpy(), [[1.0, 0.0]])
    zero = GraphPropagation(num_layers=0)(eye, graph=graph, rows=tf.constant([0]))
    np.testing.assert_allclose(zero.numpy(), [[1.0, 0.0]])


def test_graph_propagation_last_rows_equals_full_then_gather():
    rng = np.random.default_rng(3)
    nbr = rng.integers(0, 9, size=(9, 4))
    vals = rng.random((9, 4)).astype(np.float32)
    graph = NeighborGraph(nbr, vals)
    x = tf.constant(rng.normal(size=(9, 5)).astype(np.float32))
    layer = GraphPropagation(num_layers=2, combine="last")
    rows = tf.constant([8, 2])
    np.testing.assert_allclose(layer(x, graph=graph, rows=rows).numpy(),
                               tf.gather(layer(x, graph=graph), rows).numpy(), rtol=1e-5)


def test_layers_validate_and_round_trip_config():
    with pytest.raises(ValueError, match="combine"):
        GraphPropagation(num_layers=1, combine="sum")
    layer = GraphPropagation(num_layers=3, combine="last", name="p")
    clone = GraphPropagation.from_config(layer.get_config())
    assert (clone.num_layers, clone.combine, clone.name) == (3, "last", "p")
    proj = ModalityProjection(input_dims=[6, 4], output_dim=8, hidden_layers=1, activation="tanh")
    clone = ModalityProjection.from_config(proj.get_config())
    assert clone.get_config() == proj.get_config()
    outs = clone([tf.ones((3, 6)), tf.ones((3, 4))])
    assert [o.shape for o in outs] == [(3, 8), (3, 8)]
    assert len(clone.trainable_variables) == 8 and not clone.is_affine
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(proj))
    assert isinstance(restored, ModalityProjection)


@pytest.mark.parametrize("shape", [(9,), (9, 3)])
def test_neighbor_table_gather_and_gradient_match_tf_gather(shape):
    from ibmrec_tf.layers import NeighborTable

    rng = np.random.default_rng(3)
    table = rng.integers(0, 9, size=(7, 4))  # repeated ids, unused rows
    params = tf.constant(rng.normal(size=shape).astype(np.float32))
    upstream = tf.constant(rng.normal(size=(7, 4) + shape[1:]).astype(np.float32))
    ours = NeighborTable(table, 9)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(params)
        fast = ours.gather(params)
        plain = tf.gather(params, table)
        fast_loss, plain_loss = tf.reduce_sum(fast * upstream), tf.reduce_sum(plain * upstream)
    np.testing.assert_array_equal(fast.numpy(), plain.numpy())
    np.testing.assert_allclose(tape.gradient(fast_loss, params).numpy(),
                               tf.convert_to_tensor(tape.gradient(plain_loss, params)).numpy(),
                               rtol=1e-6, atol=1e-6)
