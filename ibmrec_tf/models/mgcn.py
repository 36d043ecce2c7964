"""MGCN: a user-item view, purified item-item views and a behaviour-aware fuser (Yu et al., 2023).

"Multi-View Graph Convolutional Network for Multimedia Recommendation" (ACM MM 2023), built
from the project's layers (the one propagation layer, the one kNN builder, the one losses
module). Where the paper leaves a detail open this follows its public implementation (MMRec's
``mgcn.py``), and says so:

* **The user-item view** (the "content" embeddings ``E_c``): LightGCN over the ID embeddings
  ``[P; Q]``, ``n_layers`` layers (MGCN's ``n_ui_layers``, 2), the mean of the layers with the
  ego layer included.
* **The behaviour-guided purifier.** Each modality's features are projected,
  ``Z^k = M^k W_k + b_k`` (the project's :class:`~ibmrec_tf.layers.ModalityProjection`; one
  affine map at ``projection_layers=0``), and gate the item ID embeddings,
  ``H^k = Q * sigmoid(Z^k G_k + g_k)``.
* **The item-item views.** Each modality has its own kNN graph (cosine, ``knn_k`` neighbours,
  the item itself included, built once from the raw features), weighted by the similarities
  and normalized ``D^-1/2 S D^-1/2`` with the row sums; the modalities are *not* fused into one
  graph. ``H^k`` is propagated ``item_layers`` times (MGCN's ``n_layers``, 1) and keeps the last
  layer; the users' modality embeddings are ``R H^k``, with ``R`` the user-item block of the
  normalized user-item graph. ``E^k = [R H^k; H^k]``.
* **The behaviour-aware fuser.** One shared attention ``a(e) = tanh(e A + a) w`` gives each
  node's modality weights ``softmax_k a(E^k)``; the common part is ``E_s = sum_k w_k E^k``; each
  modality's specific part ``E^k - E_s`` is scaled by the node's preference
  ``sigmoid(E_c P_k + p_k)``; the side embedding is the mean of the specific parts and the
  common part, ``E_side = (sum_k pref_k * (E^k - E_s) + E_s) / (K + 1)`` (the public code's
  ``/ 3`` for its two modalities). Scored: ``E = E_c + E_side``.
* **The losses.** BPR, the L2 term on the batch's *final* representations (the public code's;
  the other backbones here regularize the ego embeddings), and
  ``mgcn_cl_weight * (InfoNCE(E_side, E_c) over the batch's positives + InfoNCE(E_side, E_c)
  over its users)`` with temperature ``mgcn_temperature`` (0.2) and the batch's other rows as
  negatives, duplicates included, as the public code computes it. The InfoNCE terms are
  defined over the whole (global) batch, so under a ``tf.distribute`` strategy each replica
  computes them over the whole batch and contributes its share
  (:class:`~ibmrec_tf.models.base.Terms`).

Differences from the public code, by choice: its raw features are trainable (``nn.Embedding``
not frozen); here they are fixed, as on every backbone of the project (the denoisers' terms
read them as the fixed ``M^k``). Its gates' weights use PyTorch's default initialization and
the ID embeddings Xavier's; here Keras's Glorot and ``init_stddev``. The fuser runs only on the
rows a pass asks for (every row at evaluation), which is the same values.

The denoisers plug in as on the other item-item backbones: FIB ties each ``Z^k`` to ``M^k``;
GIB's masker gives every edge of the modalities' kNN graphs a keep probability and the masked
graphs give the scored items (the unmasked ones enter its HSIC); MGCN has no user content
``C``, so IBMRec's second update does not apply; MRdIB's stochastic projection feeds the
purifier's gates, and its unique and synergy terms map the users as on LATTICE and FREEDOM.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from ibmrec_tf import graph as graph_lib
from ibmrec_tf import losses
from ibmrec_tf.data import Dataset
from ibmrec_tf.layers import CSRGraph, NeighborGraph, NeighborTable, symmetric_normalize
from ibmrec_tf.models.base import ForwardResult, ModelConfig, node_rows
from ibmrec_tf.models.item_graph import KnnItemGraph
from ibmrec_tf.models.multimodal import ForwardInputs, MultimodalRecommender


@dataclasses.dataclass
class MGCNForwardResult(ForwardResult):
    """A forward result with what MGCN's own terms and a re-run of the item views read:
    ``content_all`` (every node's ``E_c``, users first), ``user_views`` / ``item_views``
    (each modality's ``R H^k`` and ``H^k`` for every user and item) and ``z_all`` (every item's
    ``Z^k``, for a re-run on another edge scale)."""

    content_all: tf.Tensor | None = None
    user_views: list | None = None
    item_views: list | None = None
    z_all: list | None = None


class ModalityItemGraphs(KnnItemGraph):
    """Each modality's kNN graph on its own (not fused), similarity-weighted and normalized
    ``D^-1/2 S D^-1/2``; an edge scale (GIB's mask) multiplies the edges first."""

    def __init__(self, dataset: Dataset, config: ModelConfig, **kwargs):
        super().__init__(dataset, config, **{**kwargs, "learned_fusion": False})
        self.knn_k = int(config.knn_k)
        table = self.neighbors.numpy()
        self._tables = [None if self.straightforward else
                        NeighborTable(table[:, k * self.knn_k:(k + 1) * self.knn_k],
                                      self.num_items)
                        for k in range(len(self.modalities))]

    def modality_weights(self):
        """Equal weights: MGCN weighs the modalities per node, in its fuser, not per graph."""
        return tf.fill([len(self.modalities)], 1.0 / len(self.modalities))

    def graphs(self, edge_scale=None) -> list[NeighborGraph]:
        """Each modality's normalized graph; ``edge_scale`` ``[N, K * knn_k]``."""
        out = []
        for k, similarity in enumerate(self.similarity):
            columns = slice(k * self.knn_k, (k + 1) * self.knn_k)
            neighbors = self.neighbors[:, columns]
            values = similarity if edge_scale is None else similarity * edge_scale[:, columns]
            table = neighbors if self._tables[k] is None else self._tables[k]
            out.append(NeighborGraph(neighbors, symmetric_normalize(values, table),
                                     fast_gradient=not self.straightforward))
        return out


def _gate(units: int, name: str, activation: str) -> keras.layers.Dense:
    layer = keras.layers.Dense(units, activation=activation, name=name, dtype="float32")
    layer.build((None, units))
    return layer


class MGCN(MultimodalRecommender):
    """MGCN (see the module docstring)."""

    content, user_item_graph, item_item_graph = False, True, True
    learned_fusion = False
    item_graph_class = ModalityItemGraphs

    @classmethod
    def projects_modalities(cls) -> bool:
        return True

    @classmethod
    def settings_read(cls, config, *, projection: bool | None = None) -> frozenset[str]:
        return super().settings_read(config, projection=projection) | {
            "mgcn_cl_weight", "mgcn_temperature"}

    def __init__(self, dataset: Dataset, config: ModelConfig, **kwargs):
        super().__init__(dataset, config, **kwargs)
        d = config.embedding_dim
        adjacency = graph_lib.normalized_adjacency(dataset.num_users, dataset.num_items,
                                                   dataset.train)
        self.user_item_block = CSRGraph(adjacency[:self.num_users, self.num_users:],
                                        symmetric=False)
        for name in self.modalities:  # attributes, so that Keras tracks them
            setattr(self, f"purifier_{name}", _gate(d, f"purifier_{name}", "sigmoid"))
            setattr(self, f"preference_{name}", _gate(d, f"preference_{name}", "sigmoid"))
        # Named layers (a Sequential's would take Keras's global counters, and a checkpoint's
        # variables are matched by path).
        self.attention_hidden = _gate(d, "attention_hidden", "tanh")
        self.attention_score = keras.layers.Dense(1, use_bias=False, name="attention_score",
                                                  dtype="float32")
        self.attention_score.build((None, d))

    # -- the views ------------------------------------------------------------------------------
    def item_views(self, z_all, edge_scale=None, items=None) -> list:
        """Each modality's ``H^k`` after the item-item propagation: every item, or ``items``."""
        q = tf.convert_to_tensor(self.item_embedding)
        graphs = self.item_graph.graphs(edge_scale)
        return [self.item_graph.propagation(
                    q * getattr(self, f"purifier_{name}")(tf.cast(z, q.dtype)),
                    graph=graph, rows=items)
                for name, z, graph in zip(self.modalities, z_all, graphs)]

    def fuse(self, content, views) -> tf.Tensor:
        """``E_c + E_side`` of some rows: their user-item view ``content`` ``[n, d]`` and each
        modality's view ``views[k]`` ``[n, d]`` (see the module docstring)."""
        return content + self.side(content, views)

    def side(self, content, views) -> tf.Tensor:
        """``E_side`` of some rows (the fuser)."""
        scores = tf.concat([self.attention_score(self.attention_hidden(v)) for v in views],
                           axis=1)  # [n, K]
        weights = tf.nn.softmax(scores, axis=1)
        common = tf.add_n([weights[:, k:k + 1] * v for k, v in enumerate(views)])
        specific = [getattr(self, f"preference_{name}")(content) * (v - common)
                    for name, v in zip(self.modalities, views)]
        return (tf.add_n(specific) + common) / float(len(views) + 1)

    def forward(self, users=None, items=None, training=False, *,
                inputs: ForwardInputs | None = None) -> MGCNForwardResult:
        """Final representations of ``users`` and ``items`` (see :meth:`Recommender.forward`);
        ``inputs.edge_scale`` scales the kNN edges (GIB), ``inputs.z_all`` gives every item's
        ``Z`` where a denoiser computed it."""
        inputs = inputs or ForwardInputs()
        z_all, z_means, z_scales = inputs.z_all, inputs.z_means, inputs.z_scales
        if z_all is None:
            z_all, z_means, z_scales = self.content_with_stats(training)
        p, q = tf.convert_to_tensor(self.user_embedding), tf.convert_to_tensor(self.item_embedding)
        content_all = self.ui_propagation(tf.concat([p, q], axis=0),
                                          graph=self.user_item_graph_for(training))
        item_views = self.item_views(z_all, inputs.edge_scale)
        user_views = tf.split(self.user_item_block.matmul(tf.concat(item_views, axis=1)),
                              len(item_views), axis=1)
        user_ids, item_rows = node_rows(self.num_users, self.num_items, users, items)
        item_ids = item_rows - self.num_users
        final_users = self.fuse(tf.gather(content_all, user_ids),
                                [tf.gather(v, user_ids) for v in user_views])
        final_items = self.fuse(tf.gather(content_all, item_rows),
                                [tf.gather(v, item_ids) for v in item_views])
        z_items = means = scales = None
        if items is not None:
            z_items = [tf.gather(z, items) for z in z_all]
            if z_means is not None:
                means = [tf.gather(x, items) for x in z_means]
                scales = [tf.gather(x, items) for x in z_scales]
        return MGCNForwardResult(
            users=final_users, items=final_items, user_ego=tf.gather(p, user_ids),
            item_ego=tf.gather(q, item_ids), item_base=final_items, z_items=z_items,
            z_means=means, z_scales=scales, content_all=content_all, user_views=user_views,
            item_views=item_views, z_all=z_all)

    def on_item_graph(self, out: MGCNForwardResult, items=None, edge_scale=None, *, first=None):
        """The final representations of ``items`` (the first ``first``) with the kNN edges
        scaled by ``edge_scale`` (GIB's unmasked ``Y`` at ``None``)."""
        if items is None:
            items = tf.range(self.num_items)
        if first is not None:
            items = items[:first]
        views = self.item_views(out.z_all, edge_scale, items=items)
        return self.fuse(tf.gather(out.content_all, items + self.num_users), views)

    # -- the losses -----------------------------------------------------------------------------
    def regularized_rows(self, out, pos_rows, neg_rows) -> list:
        """The L2 term reads the share's final representations (the public code's)."""
        return [out.users, tf.gather(out.items, pos_rows), tf.gather(out.items, neg_rows)]

    def add_own_terms(self, terms, out, pos_rows, neg_rows, batch=None) -> None:
        """``mgcn_cl_weight * (InfoNCE over the batch's positives + over its users)``, each
        between ``E_side`` and ``E_c`` of the whole batch's rows."""
        users, positives = batch["user"], batch["pos"]
        temperature = self.config.mgcn_temperature
        for name, ids, rows, views in (
                ("items", positives, positives + self.num_users, out.item_views),
                ("users", users, users, out.user_views)):
            content = tf.gather(out.content_all, rows)
            side = self.side(content, [tf.gather(v, ids) for v in views])
            terms.batch_level(f"cl/{name}", losses.info_nce(side, content, temperature))
        terms.weighted("cl", self.config.mgcn_cl_weight, ["cl/items", "cl/users"])


__all__ = ["MGCN", "MGCNForwardResult", "ModalityItemGraphs"]
