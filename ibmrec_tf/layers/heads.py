"""The denoisers' small networks: IBMRec's edge masker, MRdIB's fusion MLP and critic."""

from __future__ import annotations

import keras
import tensorflow as tf

from ibmrec_tf.layers.sparse import gather_table


@keras.saving.register_keras_serializable(package="ibmrec_tf")
class EdgeMasker(keras.layers.Layer):
    """Keep probability of every item-item edge from its endpoints (Eq. 24).

    ``w_ij = sigmoid(w_2^T relu(W_1 [h_i || h_j] + b_1) + b_2)`` where ``h_i = [z_i || q_i]``.
    ``W_1 [h_i || h_j] = h_i W_a + h_j W_b`` is computed per item, then gathered per edge, so
    the per-edge work is ``O(edges * hidden_units)`` instead of ``O(edges * 2 dim * hidden)``.

    Args:
      hidden_units: width of the hidden layer.
      keep_bias_init: initial ``b_2``; 2.0 starts every edge at keep probability 0.88, close
        to the original graph.

    Call: ``(item_features [n, dim], neighbors [n, width])`` (int ids, or a
    :class:`NeighborTable`) ``-> [n, width]`` logits of the keep probabilities (``w_ij = sigmoid(logit)``); samplers take the logits, which stay finite
    where the probability rounds to 0 or 1.
    """

    def __init__(self, *, hidden_units: int = 32, keep_bias_init: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)
        self.keep_bias_init = float(keep_bias_init)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        h = self.hidden_units
        self.w_source = self.add_weight(shape=(dim, h), name="w_source", initializer="glorot_uniform")
        self.w_target = self.add_weight(shape=(dim, h), name="w_target", initializer="glorot_uniform")
        self.b_hidden = self.add_weight(shape=(h,), name="b_hidden", initializer="zeros")
        self.w_out = self.add_weight(shape=(h,), name="w_out", initializer="glorot_uniform")
        self.b_out = self.add_weight(shape=(), name="b_out",
                                     initializer=keras.initializers.Constant(self.keep_bias_init))
        self.built = True

    def call(self, item_features, neighbors):
        source = tf.matmul(item_features, self.w_source) + self.b_hidden  # [n, h]
        target = tf.matmul(item_features, self.w_target)                   # [n, h]
        hidden = tf.nn.relu(source[:, None, :] + gather_table(target, neighbors))
        return tf.tensordot(hidden, self.w_out, axes=1) + self.b_out

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "keep_bias_init": self.keep_bias_init}


@keras.saving.register_keras_serializable(package="ibmrec_tf")
class FusionMLP(keras.layers.Layer):
    """A residual nonlinear fusion of the modalities: ``x + W_2 act(W_1 x + b_1) + b_2``.

    ``x = [Z^1, ..., Z^K]``. A linear fusion (a weighted sum or a linear map of ``x``) cannot
    express an interaction of two modalities, such as a preference decided by the product of a
    visual and an acoustic attribute; the hidden layer can. ``W_2`` and ``b_2`` start at zero,
    so the layer starts as the identity (the backbone's linear fusion).

    Call: ``[n, units]`` -> ``[n, units]``.
    """

    def __init__(self, *, units: int, hidden_units: int = 64, activation: str = "leaky_relu",
                 **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.hidden_units = int(hidden_units)
        self.activation = activation
        self._activation_fn = keras.activations.get(activation)

    def build(self, input_shape=None):
        self.w_hidden = self.add_weight(shape=(self.units, self.hidden_units), name="w_hidden",
                                        initializer="glorot_uniform")
        self.b_hidden = self.add_weight(shape=(self.hidden_units,), name="b_hidden",
                                        initializer="zeros")
        self.w_out = self.add_weight(shape=(self.hidden_units, self.units), name="w_out",
                                     initializer="zeros")
        self.b_out = self.add_weight(shape=(self.units,), name="b_out", initializer="zeros")
        self.built = True

    def call(self, x):
        hidden = self._activation_fn(tf.matmul(x, self.w_hidden) + self.b_hidden)
        return x + tf.matmul(hidden, self.w_out) + self.b_out

    def get_config(self):
        return {**super().get_config(), "units": self.units, "hidden_units": self.hidden_units,
                "activation": self.activation}


@keras.saving.register_keras_serializable(package="ibmrec_tf")
class PairCritic(keras.layers.Layer):
    """A critic ``T(x, y) = w_2^T relu(x W_x + y W_y + b_1)`` of paired rows.

    MRdIB's Donsker-Varadhan estimator of the dependence between two modalities'
    representations (:func:`ibmrec_tf.losses.donsker_varadhan`) scores the batch's pairs and
    pairs with ``y`` shuffled; ``x W_x`` and ``y W_y`` are computed once per row and added for
    every pairing. There is no output bias: the bound does not change when ``T`` is shifted by
    a constant, so such a bias would get a zero gradient (and Adam would move it by the
    rounding of that zero).

    Call: ``(x [n, d_x], y [n, d_y], permutation=None)`` -> ``[n]`` scores of the pairs
    ``(x_i, y_i)``, or of ``(x_i, y_perm[i])``.
    """

    def __init__(self, *, hidden_units: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)

    def build(self, input_shape):
        (dx,), (dy,) = [tuple(s)[-1:] for s in input_shape]
        h = self.hidden_units
        self.w_x = self.add_weight(shape=(int(dx), h), name="w_x", initializer="glorot_uniform")
        self.w_y = self.add_weight(shape=(int(dy), h), name="w_y", initializer="glorot_uniform")
        self.b_hidden = self.add_weight(shape=(h,), name="b_hidden", initializer="zeros")
        self.w_out = self.add_weight(shape=(h,), name="w_out", initializer="glorot_uniform")
        self.built = True

    def pair_scores(self, x, y, permutations):
        """Scores of the pairs ``(x_i, y_i)`` and of ``(x_i, y[p[i]])`` for each permutation
        ``p`` in ``permutations``: ``[1 + len(permutations), n]``."""
        hx = tf.matmul(x, self.w_x) + self.b_hidden
        hy = tf.matmul(y, self.w_y)
        pairs = [hx + hy] + [hx + tf.gather(hy, p) for p in permutations]
        hidden = tf.nn.relu(tf.stack(pairs))
        return tf.tensordot(hidden, self.w_out, axes=1)

    def call(self, x, y, permutation=None):
        return self.pair_scores(x, y, [] if permutation is None else [permutation])[-1]

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}
