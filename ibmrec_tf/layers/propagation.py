"""The one propagation layer every graph model uses."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ibmrec_tf")
class GraphPropagation(keras.layers.Layer):
    """LightGCN-style propagation without weights or nonlinearity (Eq. 6-7 and Eq. 11).

    ``E^{l+1} = G E^l`` for ``l = 0 .. num_layers - 1``; the output is the mean
    ``1/(L+1) sum_{l=0}^{L} E^l`` (``combine='mean'``, Eq. 7) or the last layer ``E^L``
    (``combine='last'``, Eq. 11).

    Args:
      num_layers: number of propagation steps ``L`` (0 returns the input, or its rows).
      combine: ``'mean'`` or ``'last'``.

    Call arguments:
      embeddings: ``[n, dim]`` input embeddings ``E^0``.
      graph: a :class:`CSRGraph` or :class:`NeighborGraph` (``n x n``).
      rows: optional int tensor; only these output rows are returned. With ``combine='last'``
        the last step computes only these rows.

    Example:
      >>> graph = CSRGraph(scipy.sparse.csr_matrix([[0., 1.], [1., 0.]]))
      >>> GraphPropagation(num_layers=1)(tf.eye(2), graph=graph)  # (I + G) / 2
    """

    def __init__(self, *, num_layers: int, combine: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        if combine not in ("mean", "last"):
            raise ValueError(f"combine must be 'mean' or 'last', got {combine!r}")
        self.num_layers = num_layers
        self.combine = combine

    def call(self, embeddings, graph=None, rows=None):
        if self.num_layers == 0:
            return embeddings if rows is None else tf.gather(embeddings, rows)
        step = graph.matmul
        if self.combine == "last":
            h = embeddings
            for _ in range(self.num_layers - 1):
                h = step(h)
            return step(h, rows)
        h, total = embeddings, embeddings
        for _ in range(self.num_layers):
            h = step(h)
            total = total + h
        out = total / float(self.num_layers + 1)
        return out if rows is None else tf.gather(out, rows)

    def get_config(self):
        return {**super().get_config(), "num_layers": self.num_layers, "combine": self.combine}
