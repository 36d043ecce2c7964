"""FusedAdam: Keras's Adam with TensorFlow's fused kernel, the same updates."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from ibmrec_tf.optimizers import FusedAdam


def _train(cls, init, grads, sparse, dense_of_sparse=False):
    var = keras.Variable(init.copy(), name="w")
    opt = cls(learning_rate=0.05)
    opt.build([var])

    @tf.function
    def step(grad):
        rows = tf.constant([1, 4, 4, 7], tf.int64)  # a repeated row, as a gather's gradient has
        g = tf.IndexedSlices(tf.gather(grad, rows), rows, tf.shape(grad, tf.int64))
        if dense_of_sparse:
            g = tf.convert_to_tensor(g)
        elif not sparse:
            g = grad
        opt.apply_gradients([(g, var)])

    for grad in grads:
        step(tf.constant(grad))
    return var.numpy(), {v.name: v.numpy() for v in opt.variables}


@pytest.mark.parametrize("sparse", [False, True])
def test_fused_adam_matches_keras_adam(sparse):
    """A sparse gradient is Adam's input as its dense sum: Keras's Adam on that dense gradient."""
    rng = np.random.default_rng(0)
    init = rng.normal(size=(20, 3)).astype(np.float32)
    grads = [rng.normal(size=(20, 3)).astype(np.float32) for _ in range(5)]
    keras_var, keras_slots = _train(keras.optimizers.Adam, init, grads, False, dense_of_sparse=sparse)
    fused_var, fused_slots = _train(FusedAdam, init, grads, sparse)
    assert not np.allclose(keras_var, init)
    np.testing.assert_allclose(fused_var, keras_var, rtol=1e-5, atol=1e-5)  # lr 0.05, 5 steps
    assert set(fused_slots) == set(keras_slots)  # the same variables: checkpoints carry over
    for name, value in keras_slots.items():
        np.testing.assert_allclose(fused_slots[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_fused_adam_under_loss_scaling():
    var = keras.Variable(np.ones((4, 2), np.float32))
    opt = keras.optimizers.LossScaleOptimizer(FusedAdam(learning_rate=0.1))
    opt.build([var])
    opt.apply_gradients([(tf.fill([4, 2], opt.scale_loss(1.0)), var)])  # a scaled gradient of 1
    np.testing.assert_allclose(var.numpy(), 1 - 0.1, rtol=1e-5)  # Adam's first step: lr * sign


def test_fused_adam_does_not_depend_on_how_a_gradient_is_sliced():
    """One slice of 2 g, or two slices of g for the same row: the same update (not in Keras)."""
    results = []
    for rows, values in (([3], [[2.0, 2.0]]), ([3, 3], [[1.0, 1.0], [1.0, 1.0]])):
        var = keras.Variable(np.zeros((5, 2), np.float32))
        opt = FusedAdam(learning_rate=0.1)
        opt.build([var])
        for _ in range(3):
            opt.apply_gradients([(tf.IndexedSlices(tf.constant(values), tf.constant(rows),
                                                   tf.constant([5, 2])), var)])
        results.append(var.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
