"""The modality projection ``Z^k = MLP_k(M^k)`` (Eq. 21) and its fast kernel gradient."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def inverse_softplus(y: float) -> float:
    """``x`` with ``softplus(x) = y`` (``y > 0``)."""
    return float(y + np.log(-np.expm1(-y)))


@tf.custom_gradient
def tall_matmul(x, kernel):
    """``x @ kernel`` for a tall ``x`` (many rows), with a faster kernel gradient.

    TensorFlow's own gradient computes ``x^T @ dy`` as ``matmul(x, dy, transpose_a=True)``, which
    on CPU is 2-3x slower than ``(dy^T @ x)^T`` when ``x`` is tall and wide (all items' raw
    features: 18,357 x 4,096 on Sports took 200-325 ms against 100 ms). The values are the same.
    """
    def grad(dy):
        return (tf.matmul(dy, kernel, transpose_b=True),
                tf.transpose(tf.matmul(dy, x, transpose_a=True)))
    return tf.matmul(x, kernel), grad


@keras.saving.register_keras_serializable(package="ibmrec_tf")
class ModalityProjection(keras.layers.Layer):
    """One MLP per modality from raw features ``M^k`` to ``Z^k`` (Eq. 21).

    With ``hidden_layers=0`` (the default) each MLP is one affine map ``Z^k = M^k W_k + b_k``,
    as in VBPR and LATTICE; ``hidden_layers=h`` puts ``h`` hidden layers of ``output_dim``
    units with ``activation`` before the output layer.

    The weights are the layer's own (``m{k}_out_kernel``, ``m{k}_hidden{h}_bias``, ...), so the
    layer's dtype policy and a checkpoint of the layer cover them. Under a mixed policy
    (``dtype='mixed_bfloat16'``) the products run in the compute dtype from float32 variables,
    and the outputs are cast back to float32.

    Args:
      input_dims: raw dimension of each modality, in order.
      output_dim: dimension of each ``Z^k``.
      hidden_layers: hidden layers per MLP.
      activation: activation of the hidden layers.
      output_stddev: std of the normal initializer of the output layer's kernel (default:
        Glorot). With unit-norm inputs, ``s`` gives outputs of the scale of an ``N(0, s^2)``
        embedding.
      fast_gradient: compute the kernels' gradients with :func:`tall_matmul` (same values,
        faster for many rows); False uses TensorFlow's own matmul gradient.
      output_bias: initial value of the output layer's bias (0; MRdIB's scale head starts it
        negative so that ``softplus`` of the output starts small).

    Call: a list of ``[n, input_dims[k]]`` tensors -> a list of ``[n, output_dim]`` float32
    tensors.
    """

    def __init__(self, *, input_dims, output_dim: int = 64, hidden_layers: int = 0,
                 activation: str = "leaky_relu", output_stddev: float | None = None,
                 fast_gradient: bool = True, output_bias: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.fast_gradient = bool(fast_gradient)
        self.output_bias = float(output_bias)
        self.input_dims = [int(d) for d in input_dims]
        self.output_dim = int(output_dim)
        self.hidden_layers = int(hidden_layers)
        self.activation = activation
        self.output_stddev = output_stddev
        if self.hidden_layers < 0:
            raise ValueError(f"hidden_layers must be >= 0, got {hidden_layers}")
        self._activation_fn = keras.activations.get(activation)
        # Attribute names of each modality's (kernel, bias) pairs, input to output. Names, not
        # the variables: a list of variables would not be tracked for tf.train.Checkpoint.
        self._weight_names: list[list[tuple[str, str]]] = []

    def build(self, input_shape=None):
        for k, dim in enumerate(self.input_dims):
            names = []
            fan_in = dim
            for h in range(self.hidden_layers + 1):
                out = h == self.hidden_layers
                prefix = f"m{k}_out" if out else f"m{k}_hidden{h}"
                init = "glorot_uniform" if not out or self.output_stddev is None else \
                    keras.initializers.RandomNormal(stddev=self.output_stddev)
                setattr(self, f"{prefix}_kernel", self.add_weight(
                    shape=(fan_in, self.output_dim), initializer=init, name=f"{prefix}_kernel"))
                bias_init = keras.initializers.Constant(self.output_bias) if out else "zeros"
                setattr(self, f"{prefix}_bias", self.add_weight(
                    shape=(self.output_dim,), initializer=bias_init, name=f"{prefix}_bias"))
                names.append((f"{prefix}_kernel", f"{prefix}_bias"))
                fan_in = self.output_dim
            self._weight_names.append(names)
        self.built = True

    def _weights_of(self, k: int):
        return [(getattr(self, kernel), getattr(self, bias)) for kernel, bias in self._weight_names[k]]

    def _matmul(self, x, kernel):
        kernel = tf.cast(tf.convert_to_tensor(kernel), self.compute_dtype)
        return (tall_matmul if self.fast_gradient else tf.matmul)(x, kernel)

    def project(self, k: int, features):
        out = tf.cast(features, self.compute_dtype)
        layers = self._weights_of(k)
        for h, (kernel, bias) in enumerate(layers):
            out = self._matmul(out, kernel) + tf.cast(bias, self.compute_dtype)
            if h + 1 < len(layers):
                out = self._activation_fn(out)
        return tf.cast(out, tf.float32)

    def call(self, features):
        return [self.project(k, m) for k, m in enumerate(features)]

    @property
    def is_affine(self) -> bool:
        return self.hidden_layers == 0

    def project_with_bias_weight(self, k: int, features, bias_weight):
        """``features @ W_k + bias_weight * b_k`` for an affine projection (``hidden_layers=0``).

        A linear propagation ``G`` of projected items is ``G (M W + 1 b) = (G M) W + (G 1) b``:
        with ``features = (G M)[rows]`` and ``bias_weight = (G 1)[rows]`` (``[n, 1]``) this gives
        ``(G Z)[rows]`` without projecting any other row.
        """
        if not self.is_affine:
            raise ValueError("project_with_bias_weight needs an affine projection (hidden_layers=0)")
        (kernel, bias), = self._weights_of(k)
        product = self._matmul(tf.cast(features, self.compute_dtype), kernel)
        return tf.cast(product, tf.float32) + bias_weight * tf.convert_to_tensor(bias)

    def get_config(self):
        return {**super().get_config(), "input_dims": self.input_dims, "output_dim": self.output_dim,
                "hidden_layers": self.hidden_layers, "activation": self.activation,
                "output_stddev": self.output_stddev, "fast_gradient": self.fast_gradient,
                "output_bias": self.output_bias}
