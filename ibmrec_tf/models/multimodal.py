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
user-item propagation of the raw features is computed once (:meth:`propagated_features`).

The kNN graphs are built once from the raw features (Algorithm 1, line 1). An optional edge
masker (the graph-level IB, :mod:`ibmrec_tf.models.ibmrec`) rescales every edge of ``S``
before the normalization.

Two options serve the MRdIB plug-in (:mod:`ibmrec_tf.models.mrdib`): ``stochastic=True`` makes
each modality's projection a Gaussian, ``Z^k ~ N(mu_k, diag(softplus(mu_k A_k + c_k))^2)`` with
``mu_k = MLP_k(M^k)``,
sampled with the reparameterization in training and its mean at evaluation and export; and
``fusion_mlp=True`` passes the items' content ``[Z^1, ..., Z^K]`` through a small residual MLP
before the backbone reads it, ``Z + MLP(Z)``, so that the scores can use an interaction of two
modalities. FREEDOM (:mod:`ibmrec_tf.models.freedom`) is a member of the family with a frozen
item-item graph and a pruned user-item graph.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ibmrec_tf import graph as graph_lib
from ibmrec_tf.data import Dataset
from ibmrec_tf.layers import (CSRGraph, FusionMLP, GraphPropagation, ModalityProjection,
                              NeighborGraph, NeighborTable, PerDevice, inverse_softplus,
                              symmetric_normalize)
from ibmrec_tf.models.base import ModelConfig, Recommender, node_rows, rows_of


class MultimodalRecommender(Recommender):
    """The multimodal backbone family (see the module docstring)."""

    multimodal = True
    content = True
    user_item_graph = True
    item_item_graph = True
    #: whether the modalities' kNN graphs are fused with learned softmax weights (Eq. 10)
    learned_fusion = True
    #: whether the item-item term is added row-normalized, ``Y + Y'/||Y'||`` (Eq. 12)
    normalize_item_term = True

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
            read |= {"projection_layers", "projection_activation"}
        if cls.user_item_graph:
            read.add("n_layers")
        if cls.item_item_graph:
            read |= {"knn_k", "item_layers"}
        return frozenset(read)

    def __init__(self, dataset: Dataset, config: ModelConfig, *, need_projection: bool = False,
                 stochastic: bool = False, fusion_mlp: bool = False, **kwargs):
        super().__init__(dataset.num_users, dataset.num_items, config, **kwargs)
        self.modalities = tuple(dataset.features)
        num_modalities = len(self.modalities)
        d = config.embedding_dim
        self.content_dim = d * num_modalities
        # Each modality is scaled to unit mean row norm: pre-trained features come at any scale
        # (TikTok's visual rows have norm ~33, its acoustic ones ~4), and the projection is
        # initialized to give Z the scale of the ID embeddings. Cosine kNN and the HSIC terms
        # (which normalize rows) do not change.
        self.feature_scales = [float(np.mean(np.linalg.norm(dataset.features[m], axis=1))) or 1.0
                               for m in self.modalities]
        raw_features = [tf.constant(dataset.features[m] / scale)
                        for m, scale in zip(self.modalities, self.feature_scales)]
        # What the all-item projection reads: the raw features in the projection's compute
        # dtype, cast once (the same tensors under float32).
        compute_dtype = keras.DTypePolicy(config.precision).compute_dtype
        projection_inputs = [m if compute_dtype == "float32" else tf.cast(m, compute_dtype)
                             for m in raw_features]
        # Each replica of a tf.distribute strategy reads its own copies (see layers.PerDevice).
        self._raw_features = PerDevice(raw_features)
        self._projection_inputs = (self._raw_features if compute_dtype == "float32"
                                   else PerDevice(projection_inputs))
        self.user_embedding = self._embedding(self.num_users, "P")
        self.item_embedding = self._embedding(self.num_items, "Q")
        self.projection = None
        self.stochastic = bool(stochastic)
        if self.projects_modalities() or need_projection or stochastic:
            self.projection = ModalityProjection(
                input_dims=[f.shape[1] for f in raw_features], output_dim=d,
                hidden_layers=config.projection_layers, activation=config.projection_activation,
                output_stddev=config.init_stddev, fast_gradient=not config.straightforward,
                dtype=config.precision, name="projection")
            self.projection.build()
        self.projection_scale = None
        #: a callable giving the ``[2]`` int32 seed of this step's projection noise (set by the
        #: model that trains the backbone; see :meth:`project`)
        self.noise_seed_fn = None
        if self.stochastic:
            # sigma = softplus(mu A + c) with c = softplus^-1(s / 10): every scale starts near a
            # tenth of the ID embeddings' initial std s (small noise).
            self.projection_scale = ModalityProjection(
                input_dims=[d] * num_modalities, output_dim=d, hidden_layers=0,
                fast_gradient=False, output_bias=inverse_softplus(config.init_stddev / 10.0),
                dtype=config.precision, name="projection_scale")
            self.projection_scale.build()
            size = 1 << max(16, int(self.num_items - 1).bit_length())
            bank = np.random.default_rng(0x5EED).standard_normal((size, d), dtype=np.float32)
            self._noise_bank = PerDevice(tf.constant(bank))
        self.fusion = None
        if fusion_mlp and self.content:
            self.fusion = FusionMLP(units=self.content_dim, name="fusion_mlp")
            self.fusion.build((None, self.content_dim))
        if self.content:
            self.user_content = self._embedding(self.num_users, "C", dim=self.content_dim)
        if self.user_item_graph:
            self.ui_graph = CSRGraph(graph_lib.normalized_adjacency(
                dataset.num_users, dataset.num_items, dataset.train), symmetric=True)
            self.ui_propagation = GraphPropagation(num_layers=config.n_layers,
                                                   name="user_item_propagation")
        self._propagated_features = None
        self._shards = None
        if self.item_item_graph:
            if config.knn_k >= self.num_items:
                raise ValueError(f"knn_k={config.knn_k} must be < the number of items {self.num_items}")
            # An item whose feature is a fill (Dataset.feature_missing) has no edges in that
            # modality's graph and is nobody's neighbour there.
            neighbors, similarity = zip(*(graph_lib.knn_graph(
                dataset.features[m], config.knn_k, missing=dataset.feature_missing.get(m))
                for m in self.modalities))
            table = np.concatenate(neighbors, axis=1)
            self._knn = PerDevice((tf.constant(table.astype(np.int32)),
                                   [tf.constant(s) for s in similarity]))
            # The same ids for the gathers over every item's edges (the normalization, the edge
            # masker), whose gradient is then a fixed sparse product; the straightforward
            # formulation keeps TensorFlow's own gather gradient.
            self._knn_table = None if config.straightforward else NeighborTable(table, self.num_items)
            if self.learned_fusion:
                self.modality_logits = self.add_weight(shape=(num_modalities,),
                                                       name="modality_logits", initializer="zeros")
            self.ii_propagation = GraphPropagation(num_layers=config.item_layers, combine="last",
                                                   name="item_item_propagation")

    # -- constants, on the current replica's device ------------------------------------------------
    @property
    def raw_features(self) -> list:
        """Each modality's raw features ``M^k`` ``[num_items, dim_k]``, float32, unit mean norm."""
        return self._raw_features.get()

    @property
    def projection_inputs(self) -> list:
        """The raw features in the projection's compute dtype (the same tensors under float32)."""
        return self._projection_inputs.get()

    @property
    def knn_neighbors(self):
        """``[num_items, K * knn_k]`` neighbour ids of the fused kNN graph."""
        return self._knn.get()[0]

    @property
    def knn_similarity(self) -> list:
        """Each modality's ``[num_items, knn_k]`` edge similarities."""
        return self._knn.get()[1]

    @property
    def knn_table(self):
        """The neighbour ids for gathers over every edge: a :class:`NeighborTable` (fast
        gradient), or the ids themselves in the straightforward formulation."""
        return self.knn_neighbors if self._knn_table is None else self._knn_table

    # -- pieces -----------------------------------------------------------------------------------
    def modality_weights(self):
        return tf.nn.softmax(self.modality_logits)

    def project(self, features, rows=None, training=False) -> list:
        """``[Z^1, ..., Z^K]`` of the items ``rows`` (all items when None) from their ``features``.

        The projection's output, or with ``stochastic=True`` in training a reparameterized
        sample ``mu + sigma * eps`` with ``eps ~ N(0, I)`` from :meth:`noise`.
        """
        return self.project_with_stats(features, rows, training)[0]

    def project_with_stats(self, features, rows=None, training=False):
        """``(Z, means, scales)``: :meth:`project`'s output and, for a stochastic training
        pass, each modality's ``mu_k`` and ``sigma_k`` of the same rows (else None).

        ``sigma_k = softplus(mu_k A_k + c_k)``: an affine map of the mean, ``d x d`` per
        modality, so the scale head costs a small fraction of the projection whatever the raw
        features' width (an affine map of the raw features doubled a VBPR step's projection
        work on TikTok; on 4,096-d features it would double the largest product).
        """
        means = self.projection(features)
        if not (self.stochastic and training):
            return means, None, None
        scales = [tf.nn.softplus(s) for s in self.projection_scale(means)]
        ids = tf.range(self.num_items) if rows is None else rows
        samples = [mean + scale * self.noise(ids, k) for k, (mean, scale) in
                   enumerate(zip(means, scales))]
        return samples, means, scales

    def noise(self, ids, modality: int):
        """``[len(ids), d]`` standard normal noise of items ``ids`` for this step and modality.

        Drawn from a fixed bank of ``P`` standard normal rows (``P`` a power of two >= the
        items): item ``i`` takes row ``(a i + b) mod P``, with ``a`` odd and ``b`` drawn from
        the step's seed (:attr:`noise_seed_fn`) and the modality. For odd ``a`` the map is a
        bijection, so the items of one step get distinct, independent rows, and every row is
        an exact ``N(0, I)`` draw; an item gets the same noise wherever the step projects it.
        Drawing fresh normals instead (``tf.random.stateless_normal``) took 16 ms per modality
        per step for TikTok's 6,710 x 64 on one thread, three times a VBPR step; the gather
        takes 2 ms. The bank (and so the run) is a function of the seeds alone.
        """
        bank = self._noise_bank.get()
        size = int(bank.shape[0])
        draw = tf.random.stateless_uniform([2], seed=self.noise_seed_fn() + modality,
                                           minval=0, maxval=size, dtype=tf.int64)
        multiplier, offset = 2 * draw[0] + 1, draw[1]
        rows = (tf.cast(ids, tf.int64) * multiplier + offset) % size
        return tf.gather(bank, rows)

    def projection_stats(self, items) -> tuple[list, list]:
        """``(means, scales)`` of each modality's projection of ``items`` (``stochastic=True``)."""
        means = self.projection([tf.gather(m, items) for m in self.raw_features])
        return means, [tf.nn.softplus(s) for s in self.projection_scale(means)]

    def fused_content(self, z_list) -> list:
        """The items' content as the backbone reads it: ``Z`` or, with the fusion MLP,
        ``Z + MLP(Z)`` split back into modalities."""
        if self.fusion is None:
            return list(z_list)
        fused = self.fusion(tf.concat(list(z_list), axis=1))
        return tf.split(fused, len(z_list), axis=1)

    def content_features(self, training=False):
        """``[Z^1, ..., Z^K]``, each ``[num_items, d]``: every item's projected modalities
        (before the fusion MLP; samples in training with ``stochastic=True``)."""
        return self.content_with_stats(training)[0]

    def content_with_stats(self, training=False):
        """``(Z, means, scales)`` of every item (see :meth:`project_with_stats`).

        Under a ``tf.distribute`` strategy with R replicas each replica projects its own
        ``ceil(N / R)`` items and the shares are all-gathered (the gather's gradient returns
        each share's gradient to the replica that projected it), so the step's largest products,
        the projection and its kernel gradient, are divided among the replicas instead of
        repeated on each. The values and the summed gradients are those of one replica.
        """
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        if replicas == 1 or self.config.straightforward:
            return self.project_with_stats(self.projection_inputs, training=training)
        replica = tf.get_static_value(context.replica_id_in_sync_group)
        if replica is not None:  # each replica's rows, cut once (not copied every step)
            rows = self._shard_rows(int(replica), replicas)
            mine = self.project_with_stats(self._feature_shard(replicas, int(replica)), rows,
                                           training)
        else:
            rows = self._shard_rows(context.replica_id_in_sync_group, replicas)
            mine = self.project_with_stats([tf.gather(m, rows) for m in self.projection_inputs],
                                           rows, training)
        return tuple(None if part is None else
                     [context.all_gather(z, axis=0)[:self.num_items] for z in part]
                     for part in mine)

    def _shard_rows(self, replica, replicas: int):
        """Replica ``replica``'s ``ceil(N / R)`` item rows; the last share repeats item N-1."""
        share = -(-self.num_items // replicas)
        start = tf.cast(replica, tf.int32) * share
        return tf.minimum(tf.range(start, start + share), self.num_items - 1)

    def _feature_shard(self, replicas: int, replica: int) -> list:
        """Replica ``replica``'s rows of each modality's features, cut once on its device."""
        if self._shards is None or len(self._shards) != replicas:
            inputs = self._projection_inputs
            self._shards = [PerDevice(r, copy=lambda r: [
                tf.gather(m, self._shard_rows(r, replicas)) for m in inputs.get()],
                copy_on_default=True) for r in range(replicas)]
        return self._shards[replica].get()

    def propagates_raw_features(self, users=None, items=None, z_all=None,
                                training=False) -> bool:
        """Whether a forward pass for these rows propagates raw features instead of ``Z``.

        The user-item propagation ``G`` is linear and so is an affine projection, so the
        content columns of the propagated items are ``G [0; M W + 1 b] = (G [0; M]) W +
        (G [0; 1]) b``: with ``G [0; M]`` computed once, a training step projects only its
        batch's rows instead of every item. That holds for VLightGCN (and IBMRec on it); the
        item-item graph reads every item's ``Z`` (and its edge weights change each step), and a
        hidden projection layer is not linear, so those project every item. Nor does it hold for
        sampled projections (each item's noise would have to be propagated) or a fusion MLP.
        """
        return (self.content and self.user_item_graph and not self.item_item_graph
                and users is not None and items is not None and z_all is None
                and self.projection.is_affine and not self.config.straightforward
                and not (self.stochastic and training) and self.fusion is None)

    def propagated_features(self, chunk_columns: int = 512):
        """``([G [0; M^1], ..., G [0; M^K]], G [0; 1])``: raw features through the user-item graph.

        Computed once, eagerly, on first use (``[num_users + num_items, dim_k]`` per modality,
        in column chunks to bound the temporary memory).
        """
        if self._propagated_features is None:
            with tf.init_scope():
                def propagate(item_columns):
                    padded = tf.concat([tf.zeros([self.num_users, item_columns.shape[1]]),
                                        item_columns], axis=0)
                    return self.ui_propagation(padded, graph=self.ui_graph)

                features = [tf.concat([propagate(m[:, c:c + chunk_columns])
                                       for c in range(0, int(m.shape[1]), chunk_columns)], axis=1)
                            for m in self.raw_features]
                bias_weight = propagate(tf.ones([self.num_items, 1]))
            self._propagated_features = PerDevice((features, bias_weight))
        return self._propagated_features.get()

    def fused_similarity(self):
        """``[num_items, K * knn_k]`` values of ``S = sum_m softmax(w)_m S^m`` (Eq. 10)."""
        weights = self.modality_weights()
        return tf.concat([weights[m] * s for m, s in enumerate(self.knn_similarity)], axis=1)

    def normalize_item_graph(self, values):
        """``D^-1/2 S D^-1/2`` (Eq. 11) of the fused (and possibly masked) edge values."""
        return symmetric_normalize(values, self.knn_table)

    def item_item_graph_for(self, edge_scale=None) -> NeighborGraph:
        """The normalized item-item graph; ``edge_scale`` ``[N, K*k]`` multiplies each edge first."""
        values = self.fused_similarity()
        if edge_scale is not None:
            values = values * edge_scale
        return NeighborGraph(self.knn_neighbors, self.normalize_item_graph(values),
                             fast_gradient=not self.config.straightforward)

    def user_item_graph_for(self, training=False):
        """The user-item graph a forward pass propagates over (the same in training here)."""
        return self.ui_graph

    # -- the forward pass ---------------------------------------------------------------------------
    def ego(self, z_all=None, training=False):
        """Layer-0 users ``[P, C]`` and items ``[Q, Z]`` (or ``P`` and ``Q`` without content)."""
        if not self.content:
            return tf.convert_to_tensor(self.user_embedding), tf.convert_to_tensor(self.item_embedding)
        if z_all is None:
            z_all = self.content_features(training)
        users = tf.concat([self.user_embedding, self.user_content], axis=1)
        items = tf.concat([self.item_embedding] + self.fused_content(z_all), axis=1)
        return users, items

    def batch_content(self, items, training=False) -> list:
        """``[Z^1, ..., Z^K]`` of ``items`` only (before the fusion MLP)."""
        return self.batch_content_with_stats(items, training)[0]

    def batch_content_with_stats(self, items, training=False):
        """``(Z, means, scales)`` of ``items`` only (see :meth:`project_with_stats`)."""
        return self.project_with_stats([tf.gather(m, items) for m in self.raw_features], items,
                                       training)

    def batch_ego(self, users, items, training=False, z_rows=None):
        """Layer-0 ``[p_a, c_a]`` of ``users`` and ``[q_i, z_i]`` of ``items``, projecting only them."""
        if z_rows is None:
            z_rows = self.batch_content(items, training)
        user_ego = tf.concat([rows_of(self.user_embedding, users),
                              rows_of(self.user_content, users)], axis=1)
        return user_ego, tf.concat([tf.gather(self.item_embedding, items)]
                                   + self.fused_content(z_rows), axis=1)

    def forward(self, users=None, items=None, training=False, *, z_all=None, edge_scale=None,
                z_stats=None):
        """Final representations of ``users`` and ``items`` (see :meth:`Recommender.forward`).

        ``edge_scale`` ``[num_items, K * knn_k]`` multiplies the item-item edges (the GIB mask).
        Besides the base class's entries, the output holds ``'item_base'`` (the items before the
        item-item term) and ``'item_ego_all'``, for :meth:`on_item_graph`, and, where the
        backbone has a projection and ``items`` are given, ``'z_items'``: each modality's
        ``Z^k`` of those items before the fusion MLP (samples in a stochastic training pass),
        and then ``'z_stats'``: their ``(means, scales)``. ``z_stats``: the means and scales
        of every item that came with ``z_all``.
        """
        if (self.content and z_all is None and items is not None and not self.user_item_graph
                and not self.item_item_graph and not self.config.straightforward):
            # No graph (VBPR): only the batch's items need their features projected.
            z_rows, *stats = self.batch_content_with_stats(items, training)
            user_ego, item_ego = self.batch_ego(users, items, training, z_rows)
            out = {"user_ego": user_ego, "item_ego": item_ego, "users": user_ego,
                   "item_base": item_ego, "items": item_ego, "z_items": z_rows}
            if stats[0] is not None:
                out["z_stats"] = tuple(stats)
            return out
        if self.propagates_raw_features(users, items, z_all, training):
            return self._forward_propagated_features(users, items)
        if self.content and z_all is None:
            z_all, *z_stats = self.content_with_stats(training)
        user_ego, item_ego = self.ego(z_all, training)
        out = {"user_ego": rows_of(user_ego, users), "item_ego": rows_of(item_ego, items),
               "item_ego_all": item_ego}
        if self.projection is not None and items is not None:
            if z_all is not None:
                out["z_items"] = [tf.gather(z, items) for z in z_all]
                if z_stats is not None and z_stats[0] is not None:
                    out["z_stats"] = tuple([tf.gather(x, items) for x in part]
                                           for part in z_stats)
            else:
                out["z_items"], *stats = self.batch_content_with_stats(items, training)
                if stats[0] is not None:
                    out["z_stats"] = tuple(stats)
        if self.user_item_graph:
            ego = tf.concat([user_ego, item_ego], axis=0)
            final = self.ui_propagation(ego, graph=self.user_item_graph_for(training))
            user_rows, item_rows = node_rows(self.num_users, self.num_items, users, items)
            out["users"] = tf.gather(final, user_rows)
            out["item_base"] = tf.gather(final, item_rows)
        else:
            out["users"], out["item_base"] = out["user_ego"], out["item_ego"]
        out["items"] = out["item_base"]
        if self.item_item_graph:
            out["items"] = self.on_item_graph(out, items, edge_scale)
        return out

    def _forward_propagated_features(self, users, items):
        """The training forward pass of VLightGCN that projects only the batch's rows.

        The ID and user-content columns are propagated as usual, with the items' content
        columns left at zero; the propagated item content is added to the batch's rows from
        :meth:`propagated_features` (see :meth:`propagates_raw_features`).
        """
        d = self.config.embedding_dim
        user_ego = tf.concat([self.user_embedding, self.user_content], axis=1)
        item_ego = tf.concat([self.item_embedding,
                              tf.zeros([self.num_items, self.content_dim])], axis=1)
        final = self.ui_propagation(tf.concat([user_ego, item_ego], axis=0), graph=self.ui_graph)
        user_rows, item_rows = node_rows(self.num_users, self.num_items, users, items)
        rows = tf.concat([user_rows, item_rows], axis=0)
        features, bias_weight = self.propagated_features()
        weight_rows = tf.gather(bias_weight, rows)
        content = tf.concat([self.projection.project_with_bias_weight(k, tf.gather(f, rows), weight_rows)
                             for k, f in enumerate(features)], axis=1)
        final_rows = tf.gather(final, rows) + tf.pad(content, [[0, 0], [d, 0]])
        num_users = tf.shape(users)[0]
        z_rows = self.batch_content(items)
        user_ego_rows, item_ego_rows = self.batch_ego(users, items, z_rows=z_rows)
        return {"user_ego": user_ego_rows, "item_ego": item_ego_rows,
                "users": final_rows[:num_users], "item_base": final_rows[num_users:],
                "items": final_rows[num_users:], "z_items": z_rows}

    def on_item_graph(self, out, items=None, edge_scale=None, *, first=None):
        """``Y + Y'/||Y'||`` (Eq. 11-12) for ``items`` on the graph scaled by ``edge_scale``.

        ``first``: only the first ``first`` of ``items`` (computes fewer rows).
        """
        base = out["item_base"]
        if first is not None:
            items, base = items[:first], base[:first]
        h = self.ii_propagation(out["item_ego_all"], graph=self.item_item_graph_for(edge_scale),
                                rows=items)
        if not self.normalize_item_term:
            return base + h
        return base + tf.math.l2_normalize(h, axis=1, epsilon=1e-12)

    def backbone_terms(self, share, out, pos_rows, neg_rows) -> dict:
        """The backbone's own terms besides BPR and L2: a dict whose ``'loss'`` is added to the
        loss and whose other entries are reported (none here; FREEDOM has some)."""
        return {}

    def add_backbone_terms(self, terms: dict, share, out, pos_rows, neg_rows) -> dict:
        extra = self.backbone_terms(share, out, pos_rows, neg_rows)
        if extra:
            terms["loss"] = terms["loss"] + extra.pop("loss")
            terms.update(extra)
        return terms

    def compute_losses(self, batch, training=True) -> dict:
        share, users, items, pos_rows, neg_rows = self.replica_batch(batch)
        out = self.forward(users=users, items=items, training=training)
        return self.add_backbone_terms(self._bpr_terms(share, out, pos_rows, neg_rows), share,
                                       out, pos_rows, neg_rows)


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
