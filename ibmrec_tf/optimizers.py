"""Adam with TensorFlow's fused update kernel.

Keras 3's ``Adam.update_step`` is written with backend-neutral ops: about ten element-wise ops per
variable, each a full pass over the variable and its two slots. The models here train large
embedding tables with dense gradients (the propagation reaches every row), so those passes add
up: on Sports (8.3 million parameters) Keras's update took 32 ms of a 543 ms single-threaded
IBMRec step. ``tf.raw_ops.ResourceApplyAdam`` computes the same update in one multithreaded
pass. :class:`FusedAdam` is Keras's Adam with that kernel as its update step: the same
variables (so checkpoints and ``LossScaleOptimizer`` work unchanged), the same formula,

    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,
    w <- w - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps),

equal to Keras's within float32 rounding for dense gradients (``tests/test_optimizers.py``).

A sparse gradient (``tf.IndexedSlices``, from a gather) is added up into its dense value
first, so Adam sees the gradient itself. Keras's Adam instead squares each slice of a row
before adding the slices up; its update then depends on how the gradient happens to be split
into slices: a batch that gathers a row twice, or R replicas whose slices of one gradient are
concatenated by the all-reduce, move that row differently from the same gradient in one
slice. Here one replica and R replicas make the same update (``tests/test_distribute.py``).
AMSGrad keeps Keras's update.
"""

from __future__ import annotations

import tensorflow as tf
import keras


class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose update is one ``ResourceApplyAdam`` per variable."""

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or not isinstance(variable, tf.Variable):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        gradient = tf.cast(tf.convert_to_tensor(gradient), dtype)  # slices of a row added up
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        momentum = self._momentums[index]
        velocity = self._velocities[index]
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=_handle(momentum), v=_handle(velocity),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=gradient, use_locking=False)


def _handle(variable):
    """The resource handle of a Keras variable (its backing ``tf.Variable``'s)."""
    value = variable.value if isinstance(variable, keras.Variable) else variable
    return value.handle
