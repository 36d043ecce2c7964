"""FREEDOM's graphs, MRdIB's terms and their variable groups, and the denoisers together."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from ibmrec_tf import graph as graph_lib, losses
from ibmrec_tf.layers import PairCritic
from ibmrec_tf.models import ModelConfig, build_model, without_unread


def _model(small, name, **overrides):
    keras.utils.set_random_seed(0)
    model = build_model(name, small, without_unread(name, ModelConfig(
        embedding_dim=8, knn_k=4, hsic_items=0, **overrides)))
    model.create_optimizers(1e-2)
    return model


# -- FREEDOM ------------------------------------------------------------------------------------
def test_degree_sensitive_pruning_draws_edges_in_proportion_to_their_weight():
    """One kept edge is one categorical draw with p proportional to 1/sqrt(d_u d_i)."""
    pairs = np.array([[0, 0], [0, 1], [0, 2], [1, 0], [2, 0], [2, 3], [3, 3]])
    weights = graph_lib.bipartite_edge_weights(4, 4, pairs)
    np.testing.assert_allclose(weights[0], 1 / np.sqrt(3 * 3))
    expected = weights / weights.sum()
    rng = np.random.default_rng(0)
    draws = 20000
    counts = np.bincount([graph_lib.degree_sensitive_prune(4, 4, pairs, 1, rng)[0]
                          for _ in range(draws)], minlength=len(pairs))
    sd = np.sqrt(draws * expected * (1 - expected))
    assert np.all(np.abs(counts - draws * expected) < 4.5 * sd), (counts, draws * expected)
    # Keeping k of them: exactly k distinct edges, the light ones kept more often.
    kept = np.zeros(len(pairs))
    for _ in range(4000):
        chosen = graph_lib.degree_sensitive_prune(4, 4, pairs, 3, rng)
        assert len(np.unique(chosen)) == 3
        kept[chosen] += 1
    assert kept[6] > kept[0]  # (3, 3): degrees 1 and 2; (0, 0): degrees 3 and 3


def test_freedom_prunes_the_stated_share_each_epoch_and_evaluates_on_the_whole_graph(small):
    model = _model(small, "freedom", freedom_dropout=0.75, reg_weight=0.0)
    edges = len(np.unique(small.train, axis=0))
    keep = int(edges * 0.25)
    assert model.keep_edges == keep and model.pruned_graph.nnz == 2 * keep
    first = model.pruned_graph.to_dense()
    model.on_epoch_start(2, 0)
    second = model.pruned_graph.to_dense()
    model.on_epoch_start(1, 0)
    np.testing.assert_array_equal(model.pruned_graph.to_dense(), first)  # (seed, epoch) decides
    assert not np.array_equal(first, second)
    # The kept edges' own D^-1/2 A D^-1/2, symmetric.
    np.testing.assert_allclose(first, first.T)
    binary = (first > 0).astype(np.float64)
    degree = binary.sum(1)
    inv = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0)
    np.testing.assert_allclose(first, inv[:, None] * binary * inv[None, :], rtol=1e-6)
    # Training reads the pruned graph, evaluation the whole one.
    assert model.user_item_graph_for(training=True) is model.pruned_graph
    assert model.user_item_graph_for(training=False) is model.ui_graph


def test_freedom_items_and_its_frozen_graph(small, batch):
    model = _model(small, "freedom", freedom_image_weight=0.3)
    frozen = model.item_graph.graph_for().to_dense()
    # Each modality's unit kNN rows / k, fused with the fixed weights 0.3 (image) and 0.7.
    expected = np.zeros_like(frozen)
    for name, weight in (("image", 0.3), ("text", 0.7)):
        neighbors, _ = graph_lib.knn_graph(small.features[name], 4)
        for i, row in enumerate(neighbors):
            np.add.at(expected[i], row, weight / 4)
    np.testing.assert_allclose(frozen, expected, rtol=1e-6)
    assert not [v for v in model.trainable_variables if "modality" in v.path]
    # y = LightGCN(P, Q) over the whole graph + S Q (added as it is).
    users, items = model.final_embeddings()
    p, q = model.user_embedding.numpy(), model.item_embedding.numpy()
    adjacency = graph_lib.normalized_adjacency(90, 60, small.train).toarray()
    ego = np.concatenate([p, q])
    light = (ego + adjacency @ ego + adjacency @ adjacency @ ego) / 3
    np.testing.assert_allclose(users.numpy(), light[:90], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(items.numpy(), light[90:] + frozen @ q, rtol=1e-4, atol=1e-7)
    step = tf.function(model.train_step)
    for _ in range(3):
        step(batch)
    np.testing.assert_array_equal(model.item_graph.graph_for().to_dense(), frozen)


def test_freedom_modality_terms_train_only_the_projection_and_users(small, batch):
    model = _model(small, "freedom", freedom_modality_bpr=0.5)
    with tf.GradientTape() as tape:
        terms = model.compute_losses(batch, training=True)
    assert float(terms["modality_bpr"]) == pytest.approx(
        0.5 * (float(terms["modality_bpr/image"]) + float(terms["modality_bpr/text"])), rel=1e-6)
    grads = tape.gradient(terms["modality_bpr"], model.projection.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0
               for g, v in zip(grads, model.projection.trainable_variables) if "kernel" in v.path)


# -- MRdIB --------------------------------------------------------------------------------------
def test_kl_matches_the_closed_form():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(5, 7)).astype(np.float32)
    scale = rng.uniform(0.1, 2.0, size=(5, 7)).astype(np.float32)
    expected = 0.5 * np.sum(mean ** 2 + scale ** 2 - 1 - np.log(scale ** 2), axis=1)
    np.testing.assert_allclose(losses.kl_standard_normal(mean, scale).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(losses.kl_standard_normal(np.zeros((2, 3)), np.ones((2, 3))), 0)


def _trained_dv(rho: float, steps: int = 600, n: int = 512) -> float:
    """The DV bound of a critic trained on (x, y) with correlation rho, on fresh samples."""
    tf.random.set_seed(0)
    critic = PairCritic(hidden_units=32)
    critic.build(((None, 1), (None, 1)))
    optimizer = keras.optimizers.Adam(learning_rate=5e-3)

    def sample(seed):
        g = tf.random.stateless_normal([2, n, 1], seed=[seed, 1])
        return g[0], rho * g[0] + np.sqrt(1 - rho ** 2) * g[1]

    @tf.function
    def bound(x, y, seed):
        permutation = tf.argsort(tf.random.stateless_uniform([n], seed=[seed, 2]))
        scores = critic.pair_scores(x, y, [permutation])
        return losses.donsker_varadhan(scores[0], scores[1])

    @tf.function
    def train(seed):
        x, y = sample(seed)
        with tf.GradientTape() as tape:
            value = -bound(x, y, seed)
        optimizer.apply_gradients(zip(tape.gradient(value, critic.trainable_variables),
                                      critic.trainable_variables))

    for step in range(steps):
        train(tf.constant(step))
    return float(np.mean([bound(*sample(10_000 + s), tf.constant(10_000 + s)) for s in range(20)]))


def test_donsker_varadhan_bound_estimates_gaussian_mutual_information():
    assert abs(_trained_dv(0.0)) < 0.05
    rho = 0.8
    truth = -0.5 * np.log(1 - rho ** 2)  # 0.51 nats
    assert _trained_dv(rho) == pytest.approx(truth, abs=0.12)


def test_critic_and_encoders_update_disjoint_variables(small, batch):
    model = _model(small, "mrdib", backbone="vbpr")
    critics = {v.path for v in model.update_variables("critic")}
    assert critics and not critics & {v.path for v in model.main_variables()}
    step = tf.function(model.train_step)

    def changed(run):
        before = {v.path: v.numpy().copy() for v in model.trainable_variables}
        run()
        return {v.path for v in model.trainable_variables
                if not np.array_equal(before[v.path], v.numpy())}

    model.optimizers["critic"].learning_rate.assign(0.0)
    moved = changed(lambda: step(batch))
    assert moved and not moved & critics  # the encoders' update moves no critic variable
    model.optimizers["critic"].learning_rate.assign(1e-2)
    model.optimizers["main"].learning_rate.assign(0.0)
    assert changed(lambda: step(batch)) == critics  # the critic's optimizer moves only them


def test_stochastic_projection_samples_in_training_and_uses_the_mean_otherwise(small, batch):
    model = _model(small, "mrdib", backbone="vlattice")
    users, items = model.final_embeddings()
    again = model.final_embeddings()
    np.testing.assert_array_equal(items.numpy(), again[1].numpy())
    backbone = model.backbone
    means = backbone.content_with_stats(training=False)[0]
    samples = backbone.content_with_stats(training=True)[0]
    means_again, scales = backbone.projection_stats(tf.range(60))
    for mean, sample, m2, scale in zip(means, samples, means_again, scales):
        np.testing.assert_allclose(mean.numpy(), m2.numpy(), rtol=1e-6)
        noise = (sample - mean).numpy() / scale.numpy()
        assert 0.7 < noise.std() < 1.3 and abs(noise.mean()) < 0.1
    # The batch path draws the same noise for an item as the all-item path.
    rows = tf.constant([3, 17, 42])
    for sample, row_sample in zip(samples, backbone.item_content.rows(rows, training=True)[0]):
        np.testing.assert_allclose(tf.gather(sample, rows).numpy(), row_sample.numpy(),
                                   rtol=1e-5, atol=1e-7)


def test_mrdib_terms_add_up_and_are_reported(small, batch):
    model = _model(small, "mrdib", backbone="freedom", mrdib_fusion_mlp=True,
                   mrdib_redundancy_estimator="hsic")
    terms = model.compute_losses(batch, training=True)
    config = model.config
    assert float(terms["kl"]) == pytest.approx(
        config.mrdib_kl_weight * (float(terms["kl/image"]) + float(terms["kl/text"])), rel=1e-5)
    assert float(terms["unique"]) == pytest.approx(
        config.mrdib_unique_weight * (float(terms["unique/image"]) + float(terms["unique/text"])),
        rel=1e-5)
    added = sum(float(terms[k]) for k in ("bpr", "reg", "modality_bpr", "kl", "unique",
                                          "synergy", "redundancy"))
    assert float(terms["loss"]) == pytest.approx(added, rel=1e-5)
    assert "critic" not in model.optimizers  # HSIC needs no critic


@pytest.mark.parametrize("backbone", ["vbpr", "vlightgcn", "lattice", "vlattice", "freedom"])
def test_both_denoisers_train_on_every_multimodal_backbone(small, batch, backbone):
    model = _model(small, "ibmrec_mrdib", backbone=backbone)
    step = tf.function(model.train_step)
    for _ in range(2):
        terms = step(batch)
    assert all(np.isfinite(float(v)) for v in terms.values() if v.shape.rank == 0)
    assert "kl" in terms and "unique" in terms and "redundancy" in terms
    assert ("fib" in terms) == (backbone != "lattice")
    assert ("gib" in terms) == (backbone in ("lattice", "vlattice", "freedom"))
    assert ("infonce" in terms) == (backbone in ("vbpr", "vlightgcn", "vlattice"))
    users, items = model.final_embeddings()
    assert users.shape[0] == 90 and items.shape[0] == 60


def test_ibmrec_second_stage_needs_content_embeddings(small):
    with pytest.raises(ValueError, match="the second stage does not apply to backbone 'freedom'"):
        build_model("ibmrec", small, ModelConfig(backbone="freedom", second_stage=True, knn_k=4))
