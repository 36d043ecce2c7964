"""MGCN: its forward pass and InfoNCE terms against a dense NumPy formula, on a tiny graph."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ibmrec_tf.data import TripletSampler, make_synthetic
from ibmrec_tf.models import ModelConfig, build_model, without_unread
from ibmrec_tf.models.multimodal import ForwardInputs
from tests.conftest import run_runner


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic(seed=4, num_users=30, num_items=25, interactions_per_user=5,
                          modality_dims={"image": 10, "text": 8})


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _dense(layer, x, activation=None):
    kernel, *bias = layer.get_weights()
    y = x @ kernel + (bias[0] if bias else 0.0)
    return activation(y) if activation else y


def _knn_dense(features, k):
    """Each item's k most cosine-similar items (itself included), weighted by the similarity
    and normalized D^-1/2 S D^-1/2 with the row sums."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    graph = np.zeros_like(similarity)
    for i, row in enumerate(similarity):
        top = np.argsort(-row)[:k]
        graph[i, top] = row[top]
    degree = graph.sum(axis=1)
    return graph / np.sqrt(degree)[:, None] / np.sqrt(degree)[None, :]


def _mgcn_dense(model, data, config):
    """MGCN's final users and items, side and user-item views, from the module docstring."""
    users, items = data.num_users, data.num_items
    adjacency = np.zeros((users + items, users + items))
    for u, i in data.train:
        adjacency[u, users + i] = adjacency[users + i, u] = 1.0
    degree = adjacency.sum(axis=1)
    inv = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-30)), 0.0)
    normalized = adjacency * inv[:, None] * inv[None, :]
    p, q = model.user_embedding.numpy(), model.item_embedding.numpy()
    layer = np.concatenate([p, q])
    layers = [layer]
    for _ in range(config.n_layers):
        layer = normalized @ layer
        layers.append(layer)
    content = np.mean(layers, axis=0)
    z_all = [z.numpy() for z in model.content_with_stats()[0]]
    views = []
    for name, z in zip(model.modalities, z_all):
        h = q * _sigmoid(_dense(getattr(model, f"purifier_{name}"), z))
        graph = _knn_dense(data.features[name], config.knn_k)
        for _ in range(config.item_layers):
            h = graph @ h
        views.append(np.concatenate([normalized[:users, users:] @ h, h]))
    first, second = model.attention_hidden, model.attention_score
    scores = np.concatenate([_dense(second, _dense(first, v, np.tanh)) for v in views], axis=1)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    common = sum(weights[:, k:k + 1] * v for k, v in enumerate(views))
    specific = [_dense(getattr(model, f"preference_{name}"), content, _sigmoid) * (v - common)
                for name, v in zip(model.modalities, views)]
    side = (sum(specific) + common) / (len(views) + 1)
    final = content + side
    return final[:users], final[users:], side, content


def _info_nce(anchors, candidates, temperature):
    a = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
    c = candidates / np.linalg.norm(candidates, axis=1, keepdims=True)
    logits = a @ c.T / temperature
    logits -= logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - np.diag(logits)))


@pytest.mark.parametrize("straightforward", [False, True])
def test_the_forward_pass_and_the_infonce_terms_equal_a_dense_formula(tiny, straightforward):
    keras.utils.set_random_seed(3)
    config = ModelConfig(embedding_dim=6, knn_k=4, init_stddev=0.3, mgcn_cl_weight=0.5,
                         straightforward=straightforward)
    model = build_model("mgcn", tiny, config)
    users, items, side, content = _mgcn_dense(model, tiny, config)
    out = model.forward(training=False)
    np.testing.assert_allclose(out.users.numpy(), users, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.items.numpy(), items, rtol=1e-4, atol=1e-5)

    batch = next(iter(TripletSampler(tiny, 0).epoch_dataset(1, 64)))
    terms = model.compute_losses(batch, training=True)
    u, pos = batch["user"].numpy(), batch["pos"].numpy() + tiny.num_users
    expected = {"cl/items": _info_nce(side[pos], content[pos], 0.2),
                "cl/users": _info_nce(side[u], content[u], 0.2)}
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-4), name
    assert float(terms["cl"]) == pytest.approx(0.5 * sum(expected.values()), rel=1e-4)
    final = np.concatenate([users, items])
    reg = 0.5 * ((final[u] ** 2).sum() + (final[pos] ** 2).sum()
                 + (final[batch["neg"].numpy() + tiny.num_users] ** 2).sum()) / len(u)
    assert float(terms["reg"]) == pytest.approx(config.reg_weight * reg, rel=1e-4)


def test_the_item_view_rerun_equals_the_forward_pass_and_scales_its_edges(tiny):
    """GIB's unmasked items (``on_item_graph`` without a scale) are the forward pass's items;
    a scale on the edges changes them, and a scale alike on every edge of a row does not
    (the normalization), as the masker relies on."""
    keras.utils.set_random_seed(0)
    model = build_model("mgcn", tiny, ModelConfig(embedding_dim=6, knn_k=4, init_stddev=0.3))
    items = tf.constant([3, 0, 7, 7, 24])
    out = model.forward(users=tf.constant([1, 2]), items=items, training=False)
    np.testing.assert_allclose(model.on_item_graph(out, items).numpy(), out.items.numpy(),
                               rtol=1e-5, atol=1e-6)
    width = 2 * 4  # two modalities, knn_k=4
    scale = np.random.default_rng(0).uniform(0.1, 1.0, (tiny.num_items, width)).astype(np.float32)
    masked = model.forward(users=tf.constant([1, 2]), items=items, training=False,
                           inputs=ForwardInputs(edge_scale=tf.constant(scale)))
    np.testing.assert_allclose(model.on_item_graph(out, items, tf.constant(scale)).numpy(),
                               masked.items.numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(masked.items.numpy() - out.items.numpy()).max() > 1e-4
    assert np.abs(masked.users.numpy() - out.users.numpy()).max() > 1e-4  # R H^k reads them
    uniform = model.on_item_graph(out, items, tf.fill([tiny.num_items, width], 0.3))
    np.testing.assert_allclose(uniform.numpy(), out.items.numpy(), rtol=1e-5, atol=1e-6)


def test_every_denoiser_applies_its_terms_on_mgcn(tiny):
    """IBMRec brings FIB and GIB (no second update: MGCN has no C); MRdIB its four terms."""
    seen = {}
    for name in ("ibmrec", "mrdib", "ibmrec_mrdib"):
        keras.utils.set_random_seed(0)
        model = build_model(name, tiny, without_unread(name, ModelConfig(
            backbone="mgcn", embedding_dim=6, knn_k=4)))
        model.create_optimizers(1e-2)
        batch = next(iter(TripletSampler(tiny, 0).epoch_dataset(1, 64)))
        terms = model.train_step(batch)
        seen[name] = set(terms)
        assert all(np.isfinite(v.numpy()).all() for v in terms.values()), name
        assert {"bpr", "reg", "cl"} <= seen[name]
    assert {"fib", "gib"} <= seen["ibmrec"] and "infonce" not in seen["ibmrec"]
    assert {"kl", "unique", "synergy", "redundancy"} <= seen["mrdib"]
    assert {"fib", "gib", "kl", "redundancy"} <= seen["ibmrec_mrdib"]


def test_mgcn_trains_and_exports_through_the_runner(tmp_path):
    """One epoch through ``runners.train``; the SavedModel scores every item (the cold ones
    too) as the model's final embeddings do."""
    model_dir = tmp_path / "m"
    run_runner("train", "--dataset=synthetic", "--model=mgcn", "--epochs=2", "--knn_k=5",
               "--embedding_dim=16", "--verbose=0", f"--model_dir={model_dir}")
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and 0.0 <= metrics["test"]["recall@20"] <= 1.0
    data = make_synthetic(seed=0)
    scores = tf.saved_model.load(str(model_dir / "export" / "1")).signatures["score_all"](
        user_ids=tf.constant([0, 1], tf.int64))["scores"].numpy()
    assert scores.shape == (2, data.num_items) and np.isfinite(scores).all()
    cold = sorted(set(range(data.num_items)) - set(data.train[:, 1].tolist()))
    if cold:
        assert np.abs(scores[:, cold]).max() > 0
