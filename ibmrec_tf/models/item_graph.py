"""The item-item graph of the multimodal backbones: each modality's kNN graph, fused, normalized
and propagated (paper Section 4.1, Eq. 10-12).

:class:`KnnItemGraph` is LATTICE's and VLATTICE's (learned fusion weights, the item term added
row-normalized); FREEDOM's frozen variant is :class:`~ibmrec_tf.models.freedom.FrozenItemGraph`.
The kNN graphs are built once from the raw features (Algorithm 1, line 1); an edge scale (the
graph-level IB's mask) multiplies every edge before the normalization.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ibmrec_tf import graph as graph_lib
from ibmrec_tf.data import Dataset
from ibmrec_tf.layers import (GraphPropagation, NeighborGraph, NeighborTable, PerDevice,
                              symmetric_normalize)
from ibmrec_tf.models.base import ModelConfig


class KnnItemGraph(keras.layers.Layer):
    """``S = sum_m softmax(w)_m S^m`` (Eq. 10), ``D^-1/2 S D^-1/2`` (Eq. 11), propagated
    ``item_layers`` times from the items' ego embeddings and added as ``Y + Y'/||Y'||`` row-wise
    (Eq. 12, as LATTICE's implementation does).

    Args:
      dataset: the data (each modality's features, and which rows are fills).
      config: ``knn_k``, ``item_layers``, ``straightforward``.
      learned_fusion: learn the modality weights ``w`` (else :meth:`modality_weights` is fixed
        by a subclass).
      normalize_term: add the item term row-normalized (else as it is).
    """

    def __init__(self, dataset: Dataset, config: ModelConfig, *, learned_fusion: bool = True,
                 normalize_term: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.modalities = tuple(dataset.features)
        self.num_items = int(dataset.num_items)
        self.straightforward = bool(config.straightforward)
        self.normalize_term = bool(normalize_term)
        if config.knn_k >= self.num_items:
            raise ValueError(f"knn_k={config.knn_k} must be < the number of items {self.num_items}")
        # An item whose feature is a fill (Dataset.feature_missing) has no edges in that
        # modality's graph and is nobody's neighbour there.
        neighbors, similarity = zip(*(graph_lib.knn_graph(
            dataset.features[m], config.knn_k, missing=dataset.feature_missing.get(m),
            method=config.knn_method, nprobe=config.knn_nprobe)
            for m in self.modalities))
        table = np.concatenate(neighbors, axis=1)
        self._knn = PerDevice((tf.constant(table.astype(np.int32)),
                               [tf.constant(s) for s in similarity]))
        # The same ids for the gathers over every item's edges (the normalization, the edge
        # masker), whose gradient is then a fixed sparse product; the straightforward
        # formulation keeps TensorFlow's own gather gradient.
        self._knn_table = None if self.straightforward else NeighborTable(table, self.num_items)
        self.modality_logits = None
        if learned_fusion:
            self.modality_logits = self.add_weight(shape=(len(self.modalities),),
                                                   name="modality_logits", initializer="zeros")
        self.propagation = GraphPropagation(num_layers=config.item_layers, combine="last",
                                            name="item_item_propagation")
        self.built = True

    # -- constants, on the current replica's device --------------------------------------------
    @property
    def neighbors(self):
        """``[num_items, K * knn_k]`` neighbour ids of the fused kNN graph."""
        return self._knn.get()[0]

    @property
    def similarity(self) -> list:
        """Each modality's ``[num_items, knn_k]`` edge similarities."""
        return self._knn.get()[1]

    @property
    def table(self):
        """The neighbour ids for gathers over every edge: a :class:`NeighborTable` (fast
        gradient), or the ids themselves in the straightforward formulation."""
        return self.neighbors if self._knn_table is None else self._knn_table

    # -- the graph ------------------------------------------------------------------------------
    def modality_weights(self):
        return tf.nn.softmax(self.modality_logits)

    def fused_similarity(self):
        """``[num_items, K * knn_k]`` values of ``S = sum_m softmax(w)_m S^m`` (Eq. 10)."""
        weights = self.modality_weights()
        return tf.concat([weights[m] * s for m, s in enumerate(self.similarity)], axis=1)

    def normalize(self, values):
        """``D^-1/2 S D^-1/2`` (Eq. 11) of the fused (and possibly masked) edge values."""
        return symmetric_normalize(values, self.table)

    def graph_for(self, edge_scale=None) -> NeighborGraph:
        """The normalized graph; ``edge_scale`` ``[N, K*k]`` multiplies each edge first."""
        values = self.fused_similarity()
        if edge_scale is not None:
            values = values * edge_scale
        return NeighborGraph(self.neighbors, self.normalize(values),
                             fast_gradient=not self.straightforward)

    def item_term(self, item_ego_all, base, items=None, edge_scale=None):
        """``Y + Y'/||Y'||`` (Eq. 11-12) of ``items``: ``base`` (their ``Y``) plus their rows of
        the item ego embeddings propagated over the graph scaled by ``edge_scale``."""
        h = self.propagation(item_ego_all, graph=self.graph_for(edge_scale), rows=items)
        if not self.normalize_term:
            return base + h
        return base + tf.math.l2_normalize(h, axis=1, epsilon=1e-12)
