"""FREEDOM: a frozen item-item graph and a pruned user-item graph (Zhou and Shen, 2023).

"A Tale of Two Graphs: Freezing and Denoising Graph Structures for Multimodal Recommendation",
built from the project's layers (the one propagation layer, the one kNN builder), where the
paper leaves a detail open following its public implementation (MMRec's ``freedom.py``):

* **The frozen item-item graph.** Each modality's kNN graph (:func:`graph.knn_graph`, cosine,
  ``knn_k`` neighbours, the item itself included) with unit edge weights, normalized per row
  (every row of a kNN graph has degree ``k``, so ``D^-1/2 A D^-1/2`` over row degrees is
  ``A / k``), and fused with fixed weights: ``freedom_image_weight`` for the image modality,
  the rest shared equally by the others (equal weights without an image modality). Built once
  from the raw features; nothing in it is trained. An item whose feature is missing in a
  modality (``Dataset.feature_missing``) has no edges in that modality's part.
* **Degree-sensitive edge pruning.** Before every epoch, ``1 - freedom_dropout`` of the
  training interactions are kept, drawn without replacement with probabilities proportional
  to ``1 / sqrt(d_u d_i)`` (:func:`graph.degree_sensitive_prune`), and the kept edges are
  normalized as a graph of their own, ``D^-1/2 A D^-1/2`` with the kept degrees. The sample is
  a function of ``(seed, epoch)``, so a resumed run draws the same graphs. Evaluation and
  export use the whole graph.
* **The forward pass.** LightGCN over the pruned graph from ``[P; Q]`` (``n_layers``), plus
  the item ID embeddings propagated ``item_layers`` times over the frozen graph, added as they
  are: ``y_i = LightGCN(P, Q)_i + (S^L Q)_i``.
* **The modality projections.** Each modality's affine map ``Z^k = M^k W_k + b_k`` is trained
  only by its own BPR term with the users' final representations,
  ``freedom_modality_bpr * sum_k BPR(<x_a, z^k_i>, <x_a, z^k_j>)``; the scores never read it.

The project's ``reg_weight`` L2 term applies as on every model (the public configuration of
FREEDOM has none: set ``--reg_weight=0`` for it).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ibmrec_tf import graph as graph_lib
from ibmrec_tf import losses
from ibmrec_tf.data import Dataset
from ibmrec_tf.layers import ResampledGraph
from ibmrec_tf.models.base import ModelConfig
from ibmrec_tf.models.item_graph import KnnItemGraph
from ibmrec_tf.models.multimodal import MultimodalRecommender


def freedom_modality_weights(modalities, image_weight: float) -> np.ndarray:
    """FREEDOM's fixed fusion weights: ``image_weight`` for ``'image'``, the rest shared equally."""
    modalities = list(modalities)
    if "image" not in modalities or len(modalities) == 1:
        return np.full(len(modalities), 1.0 / len(modalities), np.float32)
    rest = (1.0 - image_weight) / (len(modalities) - 1)
    return np.array([image_weight if m == "image" else rest for m in modalities], np.float32)


class FrozenItemGraph(KnnItemGraph):
    """FREEDOM's item-item graph: unit kNN rows divided by ``k``, fused with fixed weights,
    never trained (see the module docstring)."""

    def __init__(self, dataset: Dataset, config: ModelConfig, **kwargs):
        super().__init__(dataset, config, **{**kwargs, "learned_fusion": False})
        self.fixed_modality_weights = freedom_modality_weights(self.modalities,
                                                               config.freedom_image_weight)
        k = config.knn_k
        # An item whose feature is a fill in a modality has no edges in that modality's block
        # (Dataset.feature_missing): its row keeps only the other modalities' shares.
        present = [~dataset.feature_missing.get(m, np.zeros(self.num_items, bool))
                   for m in self.modalities]
        self._frozen_values = tf.constant(np.concatenate(
            [np.full((self.num_items, k), w / k, np.float32) * keep[:, None].astype(np.float32)
             for w, keep in zip(self.fixed_modality_weights, present)], axis=1))

    def modality_weights(self):
        return tf.constant(self.fixed_modality_weights)

    def fused_similarity(self):
        """The frozen graph's ``[num_items, K * knn_k]`` edge values (rows sum to 1)."""
        return self._frozen_values

    def normalize(self, values):
        """Rows renormalized to sum to 1: the frozen graph as it is, a masked one (IBMRec's
        GIB) rescaled so that each row stays a mean over its kept neighbours."""
        if values is self._frozen_values:
            return values
        total = tf.reduce_sum(values, axis=1, keepdims=True)
        return tf.math.divide_no_nan(values, total)


class FREEDOM(MultimodalRecommender):
    """FREEDOM (see the module docstring)."""

    content, user_item_graph, item_item_graph = False, True, True
    learned_fusion = False
    normalize_item_term = False
    item_graph_class = FrozenItemGraph

    @classmethod
    def projects_modalities(cls) -> bool:
        return True

    @classmethod
    def settings_read(cls, config, *, projection: bool | None = None) -> frozenset[str]:
        return super().settings_read(config, projection=projection) | {
            "freedom_dropout", "freedom_image_weight", "freedom_modality_bpr"}

    def __init__(self, dataset: Dataset, config: ModelConfig, **kwargs):
        super().__init__(dataset, config, **kwargs)
        self.train_pairs = np.unique(np.asarray(dataset.train, np.int64), axis=0)
        self.keep_edges = int(len(self.train_pairs) * (1.0 - config.freedom_dropout))
        self.pruned_graph = None
        if config.freedom_dropout > 0:
            if self.keep_edges < 1:
                raise ValueError(f"freedom_dropout={config.freedom_dropout} keeps no edge of "
                                 f"{len(self.train_pairs)}")
            self.pruned_graph = ResampledGraph(self, "pruned_user_item",
                                               self.num_users + self.num_items,
                                               2 * self.keep_edges)
            self.on_epoch_start(1, 0)

    def pruned_adjacency(self, epoch: int, seed: int):
        """The normalized user-item graph of the edges kept for ``epoch`` (a SciPy matrix)."""
        rng = np.random.default_rng([int(seed), int(epoch), 0xF5EED])
        kept = self.train_pairs[graph_lib.degree_sensitive_prune(
            self.num_users, self.num_items, self.train_pairs, self.keep_edges, rng)]
        return graph_lib.normalized_adjacency(self.num_users, self.num_items, kept)

    def on_epoch_start(self, epoch: int, seed: int) -> None:
        """Draws this epoch's pruned user-item graph."""
        if self.pruned_graph is not None:
            self.pruned_graph.assign(self.pruned_adjacency(epoch, seed))

    def user_item_graph_for(self, training=False):
        if training and self.pruned_graph is not None:
            return self.pruned_graph
        return self.ui_graph

    def add_own_terms(self, terms, out, pos_rows, neg_rows, batch=None) -> None:
        """``freedom_modality_bpr * sum_k BPR(<x_a, z^k_pos>, <x_a, z^k_neg>)`` over the share."""
        for name, z in zip(self.modalities, out.z_items):
            terms.per_triplet(f"modality_bpr/{name}", losses.bpr_on_rows(
                out.users, z, pos_rows, neg_rows, batch_size=terms.share.batch_size))
        terms.weighted("modality_bpr", self.config.freedom_modality_bpr,
                       [f"modality_bpr/{m}" for m in self.modalities])
