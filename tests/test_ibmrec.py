"""The multimodal backbones and IBMRec: layers on tiny graphs, gradients, the two-tape update."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import keras

from ibmrec_tf import export, graph as graph_lib
from ibmrec_tf.data import DataError
from ibmrec_tf.layers import EdgeMasker
from ibmrec_tf.models import ModelConfig, build_model, without_unread
from ibmrec_tf.models.ibmrec import relaxed_bernoulli_sample


def _ibmrec(small, **overrides):
    keras.utils.set_random_seed(0)
    config = dataclasses.replace(ModelConfig(embedding_dim=8, knn_k=4, hsic_items=0), **overrides)
    model = build_model("ibmrec", small, without_unread("ibmrec", config))
    model.create_optimizers(1e-2)
    return model


@pytest.mark.parametrize("name", ["vbpr", "vlightgcn", "lattice", "vlattice"])
def test_backbones_forward_rows_equal_full_rows(small, name):
    keras.utils.set_random_seed(0)
    model = build_model(name, small, without_unread(name, ModelConfig(embedding_dim=8, knn_k=4)))
    users, items = model.final_embeddings()
    width = 8 * (1 + (2 if model.content else 0))
    assert users.shape == (90, width) and items.shape == (60, width)
    rows = model.forward(users=tf.constant([4, 1]), items=tf.constant([59, 0, 7]))
    np.testing.assert_allclose(rows.users.numpy(), users.numpy()[[4, 1]], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rows.items.numpy(), items.numpy()[[59, 0, 7]], rtol=1e-5, atol=1e-7)


def test_vlattice_items_follow_eq_11_12(small):
    """Y_final = Y_lightgcn + normalize(S_hat @ [Q, Z]) with S_hat = D^-1/2 (sum_m w_m S^m) D^-1/2."""
    keras.utils.set_random_seed(0)
    model = build_model("vlattice", small, ModelConfig(embedding_dim=8, knn_k=4, n_layers=1))
    model.modality_logits.assign([0.3, -0.2])
    w = tf.nn.softmax([0.3, -0.2]).numpy()
    z = [p.numpy() for p in model.content_with_stats()[0]]
    user_ego = np.concatenate([model.user_embedding.numpy(), model.user_content.numpy()], 1)
    item_ego = np.concatenate([model.item_embedding.numpy()] + z, 1)
    adj = graph_lib.normalized_adjacency(90, 60, small.train).toarray()
    ego = np.concatenate([user_ego, item_ego])
    y = ((ego + adj @ ego) / 2)[90:]
    s = sum(wm * graph_lib.knn_dense_reference(small.features[m], 4)
            for wm, m in zip(w, model.modalities))
    d = s.sum(1)
    s_hat = s / np.sqrt(np.outer(d, d))
    h = s_hat @ item_ego
    expected = y + h / np.linalg.norm(h, axis=1, keepdims=True)
    np.testing.assert_allclose(model.final_embeddings()[1].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_masked_forward_follows_eq_23_then_11_12(small):
    """At evaluation GIB's mask is the keep probability: S' = S * w (Eq. 23), normalized with
    the masked degrees D'^-1/2 S' D'^-1/2 (Eq. 11), and Y + normalize(S'_hat [Q, Z]) (Eq. 12)."""
    model = _ibmrec(small, n_layers=1, item_layers=1, masker_hidden=4)
    backbone, part = model.backbone, model.ibmrec
    backbone.modality_logits.assign([0.3, -0.2])
    # a masker far from its initial constant keep probability, so that the mask matters
    masker = part.masker
    for k, v in enumerate([masker.w_source, masker.w_target, masker.w_out]):
        v.assign(5.0 * tf.random.stateless_normal(v.shape, seed=(3, k)))
    masker.b_out.assign(0.0)
    z = [p.numpy() for p in backbone.content_with_stats()[0]]
    keep = tf.sigmoid(part.edge_keep_logits([tf.constant(x) for x in z])).numpy()
    assert keep.std() > 0.05
    w = tf.nn.softmax([0.3, -0.2]).numpy()
    neighbors = backbone.knn_neighbors.numpy()
    fused = np.concatenate([w[m] * s.numpy() for m, s in
                            enumerate(backbone.item_graph.similarity)], axis=1)
    s_masked = np.zeros((60, 60))
    for i in range(60):
        np.add.at(s_masked[i], neighbors[i], fused[i] * keep[i])
    d = s_masked.sum(1)
    s_hat = s_masked / np.sqrt(np.outer(d, d))
    user_ego = np.concatenate([backbone.user_embedding.numpy(), backbone.user_content.numpy()], 1)
    item_ego = np.concatenate([backbone.item_embedding.numpy()] + z, 1)
    adj = graph_lib.normalized_adjacency(90, 60, small.train).toarray()
    ego = np.concatenate([user_ego, item_ego])
    y = ((ego + adj @ ego) / 2)[90:]
    h = s_hat @ item_ego
    expected = y + h / np.linalg.norm(h, axis=1, keepdims=True)
    np.testing.assert_allclose(model.final_embeddings()[1].numpy(), expected, rtol=1e-4, atol=1e-6)
    unmasked = y + (lambda g: g / np.linalg.norm(g, axis=1, keepdims=True))(
        (lambda s: s / np.sqrt(np.outer(s.sum(1), s.sum(1))))(
            sum(wm * graph_lib.knn_dense_reference(small.features[m], 4)
                for wm, m in zip(w, backbone.modalities))) @ item_ego)
    assert np.abs(expected - unmasked).max() > 1e-3  # the mask changed the items


def test_edge_masker_hand_checked_and_config_round_trip():
    masker = EdgeMasker(hidden_units=1, keep_bias_init=0.5)
    masker.build((None, 2))
    masker.w_source.assign([[1.0], [0.0]])
    masker.w_target.assign([[0.0], [2.0]])
    masker.b_hidden.assign([-1.0])
    masker.w_out.assign([3.0])
    feats = tf.constant([[2.0, 1.0], [0.0, 0.5]])
    logits = masker(feats, tf.constant([[1], [0]])).numpy()
    # edge 0->1: relu(2*1 - 1 + 0.5*2) * 3 + 0.5 = 6.5; edge 1->0: relu(0 - 1 + 1*2) * 3 + 0.5 = 3.5
    np.testing.assert_allclose(logits, [[6.5], [3.5]], rtol=1e-6)
    assert EdgeMasker.from_config(masker.get_config()).get_config() == masker.get_config()


def test_ablation_flags_remove_exactly_their_terms(small, batch):
    full = set(_ibmrec(small).train_step(batch))
    assert {"bpr", "reg", "fib", "hsic_fib", "gib", "hsic_gib", "infonce", "loss"} <= full
    no_fib = set(_ibmrec(small, fib=False).train_step(batch))
    assert full - no_fib == {"fib", "hsic_fib"}
    no_gib = set(_ibmrec(small, gib=False).train_step(batch))
    assert {"gib", "hsic_gib", "edge_keep_prob", "hist/edge_keep_prob"} == full - no_gib
    no_second = set(_ibmrec(small, second_stage=False).train_step(batch))
    assert full - no_second == {"infonce"}
    on_vbpr = set(_ibmrec(small, backbone="vbpr").train_step(batch))
    assert "fib" in on_vbpr and "gib" not in on_vbpr and "infonce" in on_vbpr
    on_lattice = set(_ibmrec(small, backbone="lattice").train_step(batch))
    assert "gib" in on_lattice and "fib" not in on_lattice and "infonce" not in on_lattice


def test_loss_is_the_weighted_sum(small, batch):
    model = _ibmrec(small, alpha=2.0, beta=3.0)
    terms = model.compute_losses(batch, training=True)
    assert float(terms["fib"]) == pytest.approx(2.0 * float(terms["hsic_fib"]), rel=1e-6)
    assert float(terms["gib"]) == pytest.approx(3.0 * float(terms["hsic_gib"]), rel=1e-6)
    total = sum(float(terms[k]) for k in ("bpr", "reg", "fib", "gib"))
    assert float(terms["loss"]) == pytest.approx(total, rel=1e-5)
    # Row alignment: BPR and L2 from every user's and item's representations under the same
    # step's mask (the forward pass over all rows draws the same mask), paired by id.
    out = model.forward(training=True)
    x, y = out.users.numpy(), out.items.numpy()
    u, pos, neg = (batch[k].numpy() for k in ("user", "pos", "neg"))
    margin = (x[u] * y[pos]).sum(1) - (x[u] * y[neg]).sum(1)
    assert float(terms["bpr"]) == pytest.approx(np.mean(np.logaddexp(0.0, -margin)), rel=1e-5)
    ue, ie = out.user_ego.numpy(), out.item_ego.numpy()
    reg = model.config.reg_weight * 0.5 * ((ue[u] ** 2).sum() + (ie[pos] ** 2).sum()
                                            + (ie[neg] ** 2).sum()) / len(u)
    assert float(terms["reg"]) == pytest.approx(reg, rel=1e-5)


def test_second_update_infonce_against_a_direct_formula(small, batch):
    """InfoNCE over the batch's distinct positives (Eq. 31): each pair's label is its own
    item's column, and an item that is several pairs' positive is no pair's negative."""
    model = _ibmrec(small, tau=0.3)
    update = next(u for u in model.own_updates() if u.name == "second_stage")
    value = float(update.loss(batch))
    backbone = model.backbone
    c = backbone.user_content.numpy()[batch["user"].numpy()]
    pos = batch["pos"].numpy()
    candidates = np.unique(pos)
    z = np.concatenate([t.numpy() for t in backbone.projection(
        [tf.gather(m, candidates) for m in backbone.raw_features])], axis=1)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    logits = cn @ zn.T / 0.3
    label = np.searchsorted(candidates, pos)
    expected = -np.mean(logits[np.arange(len(pos)), label]
                        - np.log(np.exp(logits).sum(axis=1)))
    assert value == pytest.approx(expected, rel=1e-5)
    assert len(candidates) < len(pos)  # the batch repeats positives: the dedup matters


@pytest.mark.parametrize("backbone, fib, gib, message", [
    ("vbpr", None, True, "GIB does not apply to backbone 'vbpr'"),
    ("lattice", True, None, "FIB does not apply to backbone 'lattice'"),
])
def test_nonsense_requests_are_errors(small, backbone, fib, gib, message):
    with pytest.raises(ValueError, match=message):
        build_model("ibmrec", small, ModelConfig(backbone=backbone, fib=fib, gib=gib, knn_k=4))


def test_multimodal_model_needs_features(small):
    bare = dataclasses.replace(small, features={})
    with pytest.raises(DataError, match="needs item features"):
        build_model("vlattice", bare, ModelConfig())


def test_gradients_reach_masker_and_projection(small, batch):
    model = _ibmrec(small)
    with tf.GradientTape() as tape:
        loss = model.compute_losses(batch, training=True)["loss"]
    variables = list(model.ibmrec.masker.trainable_variables) + list(model.backbone.projection.trainable_variables)
    grads = tape.gradient(loss, variables)
    for v, g in zip(variables, grads):
        assert g is not None and float(tf.reduce_max(tf.abs(tf.convert_to_tensor(g)))) > 0, v.path


def test_two_updates_step_both_optimizers_and_second_moves_only_c_and_z(small, batch):
    model = _ibmrec(small)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    model.train_step(batch)
    assert int(model.optimizers["main"].iterations) == 1
    assert int(model.optimizers["second_stage"].iterations) == 1
    assert int(model.seeds.step) == 1
    moved = {v.path for v in model.trainable_variables if not np.array_equal(before[v.path], v.numpy())}
    assert any("edge_masker" in p for p in moved) and any("Q" in p.split("/")[-1] for p in moved)
    # With the first update's rate at 0, a train_step moves exactly what the second one trains:
    # C and every projection variable, nothing else.
    model.optimizers["main"].learning_rate.assign(0.0)
    snapshot = {v.path: v.numpy().copy() for v in model.trainable_variables}
    model.train_step(batch)
    changed = {v.path for v in model.trainable_variables if not np.array_equal(snapshot[v.path], v.numpy())}
    second = {v.path for v in model.update_variables("second_stage")}
    assert changed == second
    assert any(p.split("/")[-1] == "C" for p in changed)
    assert {v.path for v in model.backbone.projection.trainable_variables} <= changed


def test_training_samples_are_stochastic_and_evaluation_deterministic(small, batch):
    model = _ibmrec(small)
    a = model.compute_losses(batch, training=True)["hsic_gib"]
    model.seeds.step.assign(5)
    b = model.compute_losses(batch, training=True)["hsic_gib"]
    assert float(a) != float(b)
    u1, i1 = model.final_embeddings()
    model.seeds.step.assign(6)  # a new step draws new masks in training, none at evaluation
    u2, i2 = model.final_embeddings()
    np.testing.assert_array_equal(i1.numpy(), i2.numpy())
    np.testing.assert_array_equal(u1.numpy(), u2.numpy())


def test_hard_mask_is_binary_forward_with_straight_through_gradient(small):
    """The hard mask takes values in {0, 1} and its gradient is the keep probability's."""
    model = _ibmrec(small, hard_mask=True)
    part = model.ibmrec
    logits = tf.Variable(tf.random.stateless_normal([60, 8], seed=(1, 2)))
    with tf.GradientTape(persistent=True) as tape:
        mask = part.sample_edge_mask(logits)
        keep = tf.sigmoid(logits)
        weights = tf.constant(np.linspace(-1, 1, 480, dtype=np.float32).reshape(60, 8))
        through_mask, through_keep = tf.reduce_sum(mask * weights), tf.reduce_sum(keep * weights)
    values = np.unique(mask.numpy())
    assert set(values) == {0.0, 1.0}
    np.testing.assert_allclose(tape.gradient(through_mask, logits).numpy(),
                               tape.gradient(through_keep, logits).numpy(), rtol=1e-6)
    # Kept at about the keep probability (60 x 8 draws: within 4.5 sigma).
    p = keep.numpy().mean()
    assert abs(mask.numpy().mean() - p) < 4.5 * np.sqrt(p * (1 - p) / 480)


@pytest.mark.parametrize("hard", [False, True])
def test_hard_and_relaxed_masks_train(small, batch, hard):
    model = _ibmrec(small, hard_mask=hard)
    step = tf.function(model.train_step)
    first = step(batch)
    for _ in range(10):
        last = step(batch)
    assert np.isfinite(float(last["loss"])) and float(last["bpr"]) < float(first["bpr"])


@pytest.mark.parametrize("temperature", [1.0, 0.2, 0.05])
def test_relaxed_mask_matches_tfp_and_keeps_finite_gradients(temperature):
    import tensorflow_probability as tfp
    logits = tf.Variable([-300.0, -30.0, -5.0, 0.0, 0.3, 5.0, 30.0, 300.0])
    with tf.GradientTape(persistent=True) as tape:
        ours = relaxed_bernoulli_sample(logits, temperature, seed=(3, 4))
        theirs = tfp.distributions.RelaxedBernoulli(temperature, logits=logits).sample(seed=(3, 4))
        loss_ours, loss_theirs = tf.reduce_sum(ours * ours), tf.reduce_sum(theirs * theirs)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-30)
    grad = tape.gradient(loss_ours, logits).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    reference = tape.gradient(loss_theirs, logits).numpy()  # NaN where |logit / T| > ~88
    finite = np.isfinite(reference)
    np.testing.assert_allclose(grad[finite], reference[finite], rtol=1e-4, atol=1e-12)


def test_low_mask_temperature_trains_without_nan(small, batch):
    model = _ibmrec(small, mask_temperature=0.05)
    step = tf.function(model.train_step)
    model.ibmrec.masker.b_out.assign(model.ibmrec.masker.b_out + 20.0)  # keep logits / T far beyond exp's range
    for _ in range(3):
        out = step(batch)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in out.values())
    assert all(np.all(np.isfinite(v.numpy())) for v in model.trainable_variables)


def test_export_and_reload_gives_identical_scores(small, tmp_path):
    model = _ibmrec(small)
    users, items = model.final_embeddings()
    path = export.export_saved_model(str(tmp_path / "sm"), users.numpy(), items.numpy(),
                                     small.interaction_matrix("train"), top_k=10)
    scores = tf.saved_model.load(path).signatures["score_all"](
        user_ids=tf.constant([0, 17, 89], tf.int64))["scores"].numpy()
    expected = model(tf.constant([0, 17, 89])).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def skewed():
    """500 items with popularity skew: a batch's positives are popular, its negatives uniform."""
    from ibmrec_tf.data import TripletSampler, make_synthetic
    data = make_synthetic(seed=1, num_users=200, num_items=500, interactions_per_user=10,
                          modality_dims={"image": 12, "text": 10})
    return data, next(iter(TripletSampler(data, 0).epoch_dataset(1, 512)))


def test_hsic_sample_is_uniform_over_the_batch_distinct_items(skewed):
    """The HSIC terms' items are drawn uniformly from the batch's distinct items, negatives
    included (a frequency test), as a pure function of the step, with the rows remapped."""
    data, batch = skewed
    model = _ibmrec(data, hsic_items=32)
    items, pos_rows, neg_rows = model.batch_items(batch)
    items_np = items.numpy()
    negative_only = ~np.isin(items_np, batch["pos"].numpy())
    degree = np.bincount(data.train[:, 1], minlength=data.num_items)[items_np]
    p, mean_degree = negative_only.mean(), degree.mean()
    assert 0.1 < p < 0.9  # the batch has both kinds
    # tf.unique's first-occurrence order (the old sample) is all positives
    assert not negative_only[:32].any()
    drawn_negative, drawn_degree, draws = 0, 0.0, 0
    steps = 150
    for step in range(steps):
        model.seeds.step.assign(step)
        shuffled, pos_s, neg_s = model.hsic_sample(items, pos_rows, neg_rows)
        np.testing.assert_array_equal(tf.gather(shuffled, pos_s), batch["pos"])
        np.testing.assert_array_equal(tf.gather(shuffled, neg_s), batch["neg"])
        sample = shuffled.numpy()[:32]
        assert len(set(sample)) == 32
        chosen = np.isin(items_np, sample)
        drawn_negative += negative_only[chosen].sum()
        drawn_degree += degree[chosen].sum()
        draws += 32
    # without replacement within a step the variance is below the binomial's: conservative
    z_negative = (drawn_negative / draws - p) / np.sqrt(p * (1 - p) / draws)
    z_degree = (drawn_degree / draws - mean_degree) / (degree.std() / np.sqrt(draws))
    assert abs(z_negative) < 4.5 and abs(z_degree) < 4.5, (z_negative, z_degree)
    model.seeds.step.assign(7)
    first = model.hsic_sample(items, pos_rows, neg_rows)[0].numpy()
    np.testing.assert_array_equal(first, model.hsic_sample(items, pos_rows, neg_rows)[0])
    model.seeds.step.assign(8)
    assert (model.hsic_sample(items, pos_rows, neg_rows)[0].numpy() != first).any()


def test_fib_reads_the_sampled_items(skewed):
    """FIB's HSIC equals the HSIC of Z and M computed directly on the sampled items."""
    from ibmrec_tf import losses

    data, batch = skewed
    model = _ibmrec(data, hsic_items=32, sigma2_fib=0.3)
    model.seeds.step.assign(5)
    terms = model.compute_losses(batch, training=True)
    sample = model.hsic_sample(*model.batch_items(batch))[0][:32]
    backbone = model.backbone
    raw = [tf.gather(m, sample) for m in backbone.raw_features]
    z = backbone.projection(raw)
    expected = sum(losses.hsic_rbf(zk, mk, 0.3).numpy() for zk, mk in zip(z, raw))
    assert terms["hsic_fib"].numpy() == pytest.approx(expected, rel=1e-5)
    first = model.batch_items(batch)[0][:32]  # the old sample gives another value
    old = sum(losses.hsic_rbf(zk, mk, 0.3).numpy() for zk, mk in zip(
        backbone.projection([tf.gather(m, first) for m in backbone.raw_features]),
        [tf.gather(m, first) for m in backbone.raw_features]))
    assert abs(old - expected) > 1e-4 * abs(expected)
