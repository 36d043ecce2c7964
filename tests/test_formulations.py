"""The fast training formulation equals the straightforward one within floating-point tolerance.

The fast one projects only the batch's items where nothing needs the others (VBPR, IBMRec
without GIB; VLightGCN, whose user-item propagation of the raw features is computed once) and
computes the projection's kernel gradient in the layout that is fast for tall
inputs; the straightforward one projects every item and uses TensorFlow's own matmul gradient
(``ModelConfig.straightforward``).
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import keras

from ibmrec_tf.data import TripletSampler, make_synthetic
from ibmrec_tf.models import ModelConfig, build_model, without_unread

CASES = [("vbpr", {}), ("vlightgcn", {}),
         ("vlattice", {"item_layers": 2}),
         ("ibmrec", {"backbone": "vlattice"}), ("ibmrec", {"backbone": "vbpr"}),
         ("ibmrec", {"backbone": "vlightgcn"}), ("vlightgcn", {"projection_layers": 1}),
         ("ibmrec", {"backbone": "vlattice", "projection_layers": 1}),
         ("freedom", {}), ("ibmrec", {"backbone": "freedom"}),
         ("mrdib", {"backbone": "vbpr"}), ("mrdib", {"backbone": "vlattice"}),
         ("ibmrec_mrdib", {"backbone": "vlightgcn", "mrdib_fusion_mlp": True})]


@pytest.fixture(scope="module")
def small():
    return make_synthetic(seed=3, num_users=70, num_items=50, interactions_per_user=7,
                          modality_dims={"image": 24, "text": 9})


@pytest.fixture(scope="module")
def batch(small):
    return next(iter(TripletSampler(small, 1).epoch_dataset(1, 128)))


def _pair(small, name, overrides):
    models = []
    for straightforward in (False, True):
        keras.utils.set_random_seed(5)
        config = dataclasses.replace(ModelConfig(embedding_dim=8, knn_k=4, n_layers=2,
                                                 hsic_items=0),
                                     straightforward=straightforward, **overrides)
        model = build_model(name, small, without_unread(name, config))
        model.create_optimizers(1e-2)
        models.append(model)
    fast, plain = models
    plain.set_weights(fast.get_weights())
    return fast, plain


def _losses_and_grads(model, batch):
    with tf.GradientTape() as tape:
        terms = model.compute_losses(batch, training=True)
    grads = tape.gradient(terms["loss"], model.trainable_variables)
    return terms, [tf.convert_to_tensor(g).numpy() if g is not None else None for g in grads]


@pytest.mark.parametrize("name,overrides", CASES)
def test_fast_and_straightforward_agree(small, batch, name, overrides):
    fast, plain = _pair(small, name, overrides)
    fast_terms, fast_grads = _losses_and_grads(fast, batch)
    plain_terms, plain_grads = _losses_and_grads(plain, batch)
    assert set(fast_terms) == set(plain_terms)
    for key in fast_terms:
        np.testing.assert_allclose(fast_terms[key].numpy(), plain_terms[key].numpy(),
                                   rtol=2e-5, atol=1e-7, err_msg=key)
    assert len(fast_grads) == len(plain_grads)
    # Relative to the largest gradient entry: a bias gradient is a sum of terms that nearly
    # cancel, so per-variable relative error would measure only the rounding of that sum.
    scale = max(np.abs(b).max() for b in plain_grads if b is not None)
    for v, a, b in zip(fast.trainable_variables, fast_grads, plain_grads):
        assert (a is None) == (b is None), v.path
        if a is not None:
            np.testing.assert_allclose(a / scale, b / scale, atol=2e-5, err_msg=v.path)
    # A full compiled step (both updates for IBMRec) moves both models alike. Adam divides
    # each gradient entry by its own magnitude, so an entry near 0 that rounds differently
    # moves by up to ~1e-6 more (seen with AVX-512 kernels); a real difference moves by ~lr.
    for model in (fast, plain):
        tf.function(model.train_step)(batch)
    for v, a, b in zip(fast.weights, fast.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=v.path)
