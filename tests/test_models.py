import numpy as np
import pytest
import tensorflow as tf
import keras

from ibmrec_tf import graph as graph_lib
from ibmrec_tf.data import TripletSampler, make_synthetic
from ibmrec_tf.models import ModelConfig, build_model


@pytest.fixture(scope="module")
def small():
    return make_synthetic(seed=0, num_users=120, num_items=80, interactions_per_user=10,
                          modality_dims={"image": 16, "text": 12})


def test_lightgcn_forward_matches_dense_formula(small):
    keras.utils.set_random_seed(0)
    model = build_model("lightgcn", small, ModelConfig(n_layers=2))
    adj = graph_lib.normalized_adjacency(small.num_users, small.num_items, small.train).toarray()
    e0 = model.node_embedding.numpy()
    expected = (e0 + adj @ e0 + adj @ adj @ e0) / 3
    users, items = model.final_embeddings()
    np.testing.assert_allclose(users.numpy(), expected[:120], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(items.numpy(), expected[120:], rtol=1e-4, atol=1e-7)
    rows = model.forward(users=tf.constant([3, 3]), items=tf.constant([7]))
    np.testing.assert_allclose(rows.items.numpy(), expected[[127]], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(rows.user_ego.numpy(), e0[[3, 3]])


@pytest.mark.parametrize("name", ["bprmf", "lightgcn"])
def test_training_lowers_the_loss(small, name):
    keras.utils.set_random_seed(0)
    model = build_model(name, small, ModelConfig(init_stddev=0.1))
    model.create_optimizers(1e-2)
    step = tf.function(model.train_step)
    sampler = TripletSampler(small, 0)
    batch = next(iter(sampler.epoch_dataset(1, 512)))
    first = step(batch)
    assert set(first) == {"loss", "bpr", "reg"}
    for _ in range(30):
        last = step(batch)
    assert float(last["bpr"]) < 0.8 * float(first["bpr"])
    assert float(last["loss"]) == pytest.approx(float(last["bpr"]) + float(last["reg"]), rel=1e-5)


def test_registry_errors(small):
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope", small, ModelConfig())
