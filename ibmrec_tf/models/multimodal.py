"""Multimodal backbones: VBPR, VLightGCN, LATTICE and VLATTICE (paper Section 4.1, Table 3).

All four are one model, :class:`MultimodalRecommender`, with three switches:

* ``content``: users are ``[P, C]`` and items ``[Q, Z]`` with ``Z = [MLP_1(M^1), ...]``
  (Eq. 5, 21); without it users are ``P`` and items ``Q``.
* ``user_item_graph``: LightGCN propagation over ``D^-1/2 A D^-1/2`` (Eq. 6-7).
* ``item_item_graph``: the modalities' kNN graphs fused with softmax weights,
  ``S = sum_m softmax(w)_m S^m`` (Eq. 10), normalized ``D_S^-1/2 S D_S^-1/2`` and propagated
  ``item_layers`` times from the items' ego embeddings (Eq. 11); the result is added to the
  items as ``Y + Y' / ||Y'||`` row-wise (Eq. 12, as LATTICE's implementation does).

| backbone  | content | user-item graph | item-item graph |
|-----------|---------|-----------------|-----------------|
| VBPR      | yes     | no              | no              |
| VLightGCN | yes     | yes             | no              |
| LATTICE   | no      | yes             | yes             |
| VLATTICE  | yes     | yes             | yes             |

With an affine projection, VLightGCN's training steps project only the batch's rows: the
user-item propagation of the raw features is computed once (:mod:`ibmrec_tf.models.propagated`).

The kNN graphs are built once from the raw features (Algorithm 1, line 1). An optional edge
masker (the graph-level IB, :mod:`ibmrec_tf.models.ibmrec`) rescales every edge of ``S``
before the normalization.

The denoisers (:mod:`ibmrec_tf.models.parts`) ask for build options (:class:`BackboneOptions`):
``projection`` gives a backbone without content a projection all the same (GIB's masker and
MRdIB read it); ``stochastic`` makes each modality's projection a Gaussian,
``Z^k ~ N(mu_k, diag(softplus(mu_k A_k + c_k))^2)`` with ``mu_k = MLP_k(M^k)``, sampled with the
reparameterization in training and its mean at evaluation and export; and ``fusion_mlp``
passes the items' content ``[Z^1, ..., Z^K]`` through a small residual MLP before the backbone
reads it, ``Z + MLP(Z)``, so that the scores can use an interaction of two modalities. FREEDOM
(:mod:`ibmrec_tf.models.freedom`) is a member of the family with a frozen item-item graph and a
pruned user-item graph.

The pieces live in their own modules: the items' content (raw features, the deterministic or
stochastic projection, the fusion MLP) is :class:`~ibmrec_tf.models.content.ItemContent`, the
item-item graph :class:`~ibmrec_tf.models.item_graph.KnnItemGraph`; this class composes them
with the ID embeddings and the user-item graph.

What a denoiser may read of a backbone is its :class:`~ibmrec_tf.models.base.ForwardResult`
and the names in :data:`DENOISER_SURFACE`, documented on the class; nothing else.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from ibmrec_tf import graph as graph_lib
from ibmrec_tf.data import Dataset
from ibmrec_tf.layers import CSRGraph, GraphPropagation
from ibmrec_tf.models.base import (ForwardResult, ModelConfig, Recommender, Terms, node_rows,
                                   rows_of)
from ibmrec_tf.models.content import ItemContent
from ibmrec_tf.models.item_graph import KnnItemGraph
from ibmrec_tf.models.propagated import PropagatedRawFeatures

#: What a denoiser may read of a multimodal backbone besides the forward result: the class
#: switches, the constants, the trained pieces it builds on, and the passes it may repeat.
DENOISER_SURFACE = (
    # class switches
    "content", "user_item_graph", "item_item_graph", "learned_fusion", "projects_modalities",
    # constants (on the current replica's device)
    "modalities", "raw_features", "knn_table",
    # trained pieces
    "user_embedding", "item_embedding", "user_content", "projection", "modality_logits",
    # passes
    "content_with_stats", "projection_stats", "on_item_graph", "modality_weights",
)


@dataclasses.dataclass(frozen=True)
class BackboneOptions:
    """What the denoisers ask of the backbone they are built on (OR-ed over the denoisers).

    ``projection``: a modality projection even where the backbone's scores do not read one;
    ``stochastic``: the projection is a Gaussian, sampled in training; ``fusion_mlp``: the
    items' content passes through a residual MLP before the backbone reads it.
    """

    projection: bool = False
    stochastic: bool = False
    fusion_mlp: bool = False

    def __or__(self, other: "BackboneOptions") -> "BackboneOptions":
        return BackboneOptions(*(a or b for a, b in zip(dataclasses.astuple(self),
                                                        dataclasses.astuple(other))))


@dataclasses.dataclass
class ForwardInputs:
    """What the denoisers pass into a backbone's forward pass.

    ``z_all``: every item's ``Z`` (with ``z_means`` / ``z_scales`` where it was sampled) where a
    denoiser computed it already; ``edge_scale`` ``[num_items, K * knn_k]``: a factor on every
    item-item edge (GIB's mask; two denoisers' factors multiply); ``extras``: each denoiser's
    own values for its terms, under its key.
    """

    z_all: list | None = None
    z_means: list | None = None
    z_scales: list | None = None
    edge_scale: tf.Tensor | None = None
    extras: dict = dataclasses.field(default_factory=dict)

    def scale_edges(self, scale) -> None:
        self.edge_scale = scale if self.edge_scale is None else self.edge_scale * scale


class MultimodalRecommender(PropagatedRawFeatures, Recommender):
    """The multimodal backbone family (see the module docstring).

    The surface a denoiser may read (:data:`DENOISER_SURFACE`):

    * ``content``, ``user_item_graph``, ``item_item_graph``, ``learned_fusion``: the class
      switches; ``projects_modalities()``: whether the backbone itself has ``Z^k = MLP(M^k)``;
    * ``modalities``; ``raw_features``: each ``M^k`` ``[num_items, dim_k]``; ``knn_table``: the
      item-item graph's neighbour ids (item-item backbones);
    * ``user_embedding`` ``P``, ``item_embedding`` ``Q``, ``user_content`` ``C`` (content
      backbones), ``projection`` (a :class:`~ibmrec_tf.layers.ModalityProjection`, where
      there is one), ``modality_logits`` (learned fusion);
    * ``content_with_stats(training)``: every item's ``(Z, means, scales)``;
      ``projection_stats(items)``: ``(means, scales)`` of a stochastic projection;
      ``on_item_graph(out, items, edge_scale, first=)``: the items' representation on an
      item-item graph with scaled edges; ``modality_weights()``.
    """

    multimodal = True
    content = True
    user_item_graph = True
    item_item_graph = True
    #: whether the modalities' kNN graphs are fused with learned softmax weights (Eq. 10)
    learned_fusion = True
    #: whether the item-item term is added row-normalized, ``Y + Y'/||Y'||`` (Eq. 12)
    normalize_item_term = True
    #: the item-item graph's layer class (FREEDOM's is frozen)
    item_graph_class = KnnItemGraph

    @classmethod
    def projects_modalities(cls) -> bool:
        """Whether the backbone itself has modality projections ``Z^k = MLP(M^k)``."""
        return cls.content

    @classmethod
    def settings_read(cls, config, *, projection: bool | None = None) -> frozenset[str]:
        """The base settings, ``straightforward``, the projection's where there is one
        (``projection``: whether a denoiser asks for it where the backbone has none), the
        user-item graph's layers and the item-item graph's neighbours and layers."""
        read = set(super().settings_read(config)) | {"straightforward"}
        if cls.projects_modalities() if projection is None else projection:
            read |= {"projection_layers", "projection_activation", "projection_stddev"}
        if cls.user_item_graph:
            read.add("n_layers")
        if cls.item_item_graph:
            read |= {"knn_k", "item_layers", "knn_method"}
            if config.knn_method == "ivf":
                read.add("knn_nprobe")
        return frozenset(read)

    def __init__(self, dataset: Dataset, config: ModelConfig, *,
                 options: BackboneOptions | None = None, **kwargs):
        """``options``: what the denoisers ask of the backbone (:class:`BackboneOptions`);
        ``kwargs``: :class:`~ibmrec_tf.models.base.Recommender`'s (``seed``, ``seeds``,
        ``name``)."""
        super().__init__(dataset.num_users, dataset.num_items, config, **kwargs)
        options = options or BackboneOptions()
        need_projection, stochastic = options.projection, options.stochastic
        fusion_mlp = options.fusion_mlp
        self.modalities = tuple(dataset.features)
        num_modalities = len(self.modalities)
        self.content_dim = config.embedding_dim * num_modalities
        self.user_embedding = self._embedding(self.num_users, "P")
        self.item_embedding = self._embedding(self.num_items, "Q")
        # The raw features, the projection (where the scores or a denoiser read it) and the
        # fusion MLP (where the scores read the content).
        self.item_content = ItemContent(
            dataset, config, projection=self.projects_modalities() or need_projection,
            stochastic=stochastic, fusion_mlp=fusion_mlp and self.content, seeds=self.seeds,
            name="item_content")
        if self.content:
            self.user_content = self._embedding(self.num_users, "C", dim=self.content_dim)
        if self.user_item_graph:
            self.ui_graph = CSRGraph(graph_lib.normalized_adjacency(
                dataset.num_users, dataset.num_items, dataset.train), symmetric=True)
            self.ui_propagation = GraphPropagation(num_layers=config.n_layers,
                                                   name="user_item_propagation")
        if self.item_item_graph:
            self.item_graph = self.item_graph_class(
                dataset, config, learned_fusion=self.learned_fusion,
                normalize_term=self.normalize_item_term, name="item_item_graph")

    # -- the items' content (ibmrec_tf.models.content.ItemContent) -----------------------------
    @property
    def raw_features(self) -> list:
        """Each modality's raw features ``M^k`` ``[num_items, dim_k]``, float32, unit mean norm."""
        return self.item_content.raw_features

    @property
    def projection(self):
        """The modality projection (a :class:`~ibmrec_tf.layers.ModalityProjection`), or None."""
        return self.item_content.projection

    def content_with_stats(self, training=False):
        """``(Z, means, scales)`` of every item (:meth:`ItemContent.all_items`)."""
        return self.item_content.all_items(training)

    def projection_stats(self, items) -> tuple[list, list]:
        """``(means, scales)`` of each modality's projection of ``items`` (stochastic)."""
        return self.item_content.stats(items)

    # -- the item-item graph (ibmrec_tf.models.item_graph.KnnItemGraph) -------------------------
    @property
    def knn_neighbors(self):
        """``[num_items, K * knn_k]`` neighbour ids of the fused kNN graph."""
        return self.item_graph.neighbors

    @property
    def knn_table(self):
        """The neighbour ids for gathers over every edge (see :attr:`KnnItemGraph.table`)."""
        return self.item_graph.table

    @property
    def modality_logits(self):
        """The learned fusion weights' logits ``w`` (Eq. 10), or None."""
        return self.item_graph.modality_logits

    def modality_weights(self):
        return self.item_graph.modality_weights()


    def user_item_graph_for(self, training=False):
        """The user-item graph a forward pass propagates over (the same in training here)."""
        return self.ui_graph

    # -- the forward pass ---------------------------------------------------------------------------
    def ego(self, z_all=None, training=False):
        """Layer-0 users ``[P, C]`` and items ``[Q, Z]`` (or ``P`` and ``Q`` without content)."""
        if not self.content:
            return tf.convert_to_tensor(self.user_embedding), tf.convert_to_tensor(self.item_embedding)
        if z_all is None:
            z_all = self.item_content.all_items(training)[0]
        users = tf.concat([self.user_embedding, self.user_content], axis=1)
        items = tf.concat([self.item_embedding] + self.item_content.fused(z_all), axis=1)
        return users, items

    def batch_ego(self, users, items, training=False, z_rows=None):
        """Layer-0 ``[p_a, c_a]`` of ``users`` and ``[q_i, z_i]`` of ``items``, projecting only them."""
        if z_rows is None:
            z_rows = self.item_content.rows(items, training)[0]
        user_ego = tf.concat([rows_of(self.user_embedding, users),
                              rows_of(self.user_content, users)], axis=1)
        return user_ego, tf.concat([tf.gather(self.item_embedding, items)]
                                   + self.item_content.fused(z_rows), axis=1)

    def forward(self, users=None, items=None, training=False, *,
                inputs: ForwardInputs | None = None) -> ForwardResult:
        """Final representations of ``users`` and ``items`` (see :meth:`Recommender.forward`).

        ``inputs``: what the denoisers pass in (:class:`ForwardInputs`): every item's ``Z``
        where one computed it, and a factor on every item-item edge (the GIB mask). The result
        holds ``item_base`` and ``item_ego_all`` (for :meth:`on_item_graph`) and, where the
        backbone has a projection and ``items`` are given, ``z_items`` (with ``z_means`` /
        ``z_scales`` in a stochastic training pass).
        """
        inputs = inputs or ForwardInputs()
        z_all = inputs.z_all
        if (self.content and z_all is None and items is not None and not self.user_item_graph
                and not self.item_item_graph and not self.config.straightforward):
            # No graph (VBPR): only the batch's items need their features projected.
            z_rows, means, scales = self.item_content.rows(items, training)
            user_ego, item_ego = self.batch_ego(users, items, training, z_rows)
            return ForwardResult(users=user_ego, items=item_ego, user_ego=user_ego,
                                 item_ego=item_ego, item_base=item_ego, z_items=z_rows,
                                 z_means=means, z_scales=scales)
        if self.propagates_raw_features(users, items, z_all, training):
            return self._forward_propagated_features(users, items)
        z_means, z_scales = inputs.z_means, inputs.z_scales
        if self.content and z_all is None:
            z_all, z_means, z_scales = self.content_with_stats(training)
        user_ego, item_ego = self.ego(z_all, training)
        z_items = means = scales = None
        if self.projection is not None and items is not None:
            if z_all is not None:
                z_items = [tf.gather(z, items) for z in z_all]
                if z_means is not None:
                    means = [tf.gather(x, items) for x in z_means]
                    scales = [tf.gather(x, items) for x in z_scales]
            else:
                z_items, means, scales = self.item_content.rows(items, training)
        if self.user_item_graph:
            ego = tf.concat([user_ego, item_ego], axis=0)
            final = self.ui_propagation(ego, graph=self.user_item_graph_for(training))
            user_rows, item_rows = node_rows(self.num_users, self.num_items, users, items)
            final_users, item_base = tf.gather(final, user_rows), tf.gather(final, item_rows)
        else:
            final_users, item_base = rows_of(user_ego, users), rows_of(item_ego, items)
        out = ForwardResult(users=final_users, items=item_base, user_ego=rows_of(user_ego, users),
                            item_ego=rows_of(item_ego, items), item_base=item_base,
                            item_ego_all=item_ego, z_items=z_items, z_means=means,
                            z_scales=scales)
        if self.item_item_graph:
            out.items = self.on_item_graph(out, items, inputs.edge_scale)
        return out

    def on_item_graph(self, out: ForwardResult, items=None, edge_scale=None, *, first=None):
        """``Y + Y'/||Y'||`` (Eq. 11-12) for ``items`` on the graph scaled by ``edge_scale``.

        ``first``: only the first ``first`` of ``items`` (computes fewer rows).
        """
        base = out.item_base
        if first is not None:
            items, base = items[:first], base[:first]
        return self.item_graph.item_term(out.item_ego_all, base, items, edge_scale)

    def add_own_terms(self, terms: Terms, out: ForwardResult, pos_rows, neg_rows,
                      batch=None) -> None:
        """The backbone's own terms besides BPR and L2 (none here; FREEDOM and MGCN have
        some). ``batch``: the whole (global) batch, for terms defined over all of it."""

    def add_terms(self, terms: Terms, out: ForwardResult, pos_rows, neg_rows,
                  batch=None) -> None:
        """BPR, L2 and the backbone's own terms; the learned modality weights are reported.
        ``batch``: the whole (global) batch (``pos_rows`` / ``neg_rows`` are this replica's)."""
        self.add_bpr_terms(terms, out, pos_rows, neg_rows)
        self.add_own_terms(terms, out, pos_rows, neg_rows, batch)
        if self.item_item_graph and self.learned_fusion:
            weights = self.modality_weights()
            for k, name in enumerate(self.modalities):
                terms.batch_level(f"modality_weight/{name}", weights[k])

    def compute_losses(self, batch, training=True) -> dict:
        share, users, items, pos_rows, neg_rows = self.replica_batch(batch)
        out = self.forward(users=users, items=items, training=training)
        terms = Terms(share)
        self.add_terms(terms, out, pos_rows, neg_rows, batch)
        return terms.as_dict()


class VBPR(MultimodalRecommender):
    """VBPR: ``r_ai = <[p_a, c_a], [q_i, z_i]>``, no graph."""
    content, user_item_graph, item_item_graph = True, False, False


class VLightGCN(MultimodalRecommender):
    """LightGCN over ``[P, C]`` users and ``[Q, Z]`` items."""
    content, user_item_graph, item_item_graph = True, True, False


class LATTICE(MultimodalRecommender):
    """LightGCN over ``P, Q`` plus the modality kNN item-item graph over ``Q``."""
    content, user_item_graph, item_item_graph = False, True, True


class VLATTICE(MultimodalRecommender):
    """LATTICE with content: ``[P, C]`` / ``[Q, Z]`` on both graphs."""
    content, user_item_graph, item_item_graph = True, True, True


BACKBONES = {"vbpr": VBPR, "vlightgcn": VLightGCN, "lattice": LATTICE, "vlattice": VLATTICE}
