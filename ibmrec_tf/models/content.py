"""The items' content: each modality's raw features ``M^k`` and their projection ``Z^k``.

:class:`ItemContent` is the part of a multimodal backbone that turns raw features into ``Z``:

* the raw features, each modality scaled to unit mean row norm, with one copy per replica
  device (and one in the projection's compute dtype under a mixed precision policy);
* the projection ``Z^k = MLP_k(M^k)`` (Eq. 21, :class:`~ibmrec_tf.layers.ModalityProjection`),
  deterministic, or with ``stochastic=True`` a Gaussian ``Z^k ~ N(mu_k, diag(sigma_k^2))``
  with ``mu_k = MLP_k(M^k)`` and ``sigma_k = softplus(mu_k A_k + c_k)``, sampled with the
  reparameterization in training (noise from a fixed bank, :meth:`ItemContent.noise`) and its
  mean at evaluation and export;
* the optional residual fusion MLP over ``[Z^1, ..., Z^K]`` (:meth:`ItemContent.fused`);
* the all-item projection divided among the replicas of a ``tf.distribute`` strategy
  (:meth:`ItemContent.all_items`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ibmrec_tf.data import Dataset
from ibmrec_tf.layers import FusionMLP, ModalityProjection, PerDevice, inverse_softplus
from ibmrec_tf.models.base import ModelConfig, StepSeeds

#: offset of the projection noise's seed among a step's stateless samples (a prime)
NOISE_SEED_OFFSET = 7919


class ItemContent(keras.layers.Layer):
    """Raw features, the (deterministic or stochastic) projection and the fusion MLP.

    Args:
      dataset: the data (its ``features`` per modality).
      config: the model's settings (``embedding_dim``, ``projection_layers``,
        ``projection_activation``, ``projection_stddev``, ``init_stddev``, ``precision``, ``straightforward``).
      projection: whether to build the projection (else only the raw features are held).
      stochastic: a Gaussian projection, sampled in training.
      fusion_mlp: the residual fusion MLP over the concatenated modalities.
      seeds: the model's :class:`~ibmrec_tf.models.base.StepSeeds` (the noise of a step is a
        function of ``(seed, step)``).
    """

    def __init__(self, dataset: Dataset, config: ModelConfig, *, projection: bool,
                 stochastic: bool = False, fusion_mlp: bool = False, seeds: StepSeeds, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_seeds", seeds)  # the model's, not tracked twice
        self.config = config
        self.modalities = tuple(dataset.features)
        self.num_items = int(dataset.num_items)
        d = config.embedding_dim
        self.content_dim = d * len(self.modalities)
        # Each modality is scaled to unit mean row norm: pre-trained features come at any scale
        # (TikTok's visual rows have norm ~33, its acoustic ones ~4), and the projection is
        # initialized to give Z the scale of the ID embeddings. Cosine kNN and the HSIC terms
        # (which normalize rows) do not change.
        self.feature_scales = [float(np.mean(np.linalg.norm(dataset.features[m], axis=1))) or 1.0
                               for m in self.modalities]
        raw = [tf.constant(dataset.features[m] / scale)
               for m, scale in zip(self.modalities, self.feature_scales)]
        # What the all-item projection reads: the raw features in the projection's compute
        # dtype, cast once (the same tensors under float32).
        compute_dtype = keras.DTypePolicy(config.precision).compute_dtype
        # Each replica of a tf.distribute strategy reads its own copies (see layers.PerDevice).
        self._raw_features = PerDevice(raw)
        self._projection_inputs = (self._raw_features if compute_dtype == "float32" else
                                   PerDevice([tf.cast(m, compute_dtype) for m in raw]))
        self.stochastic = bool(stochastic)
        self.projection = None
        if projection or stochastic:
            self.projection = ModalityProjection(
                input_dims=[f.shape[1] for f in raw], output_dim=d,
                hidden_layers=config.projection_layers, activation=config.projection_activation,
                output_stddev=config.projection_stddev or config.init_stddev,
                fast_gradient=not config.straightforward,
                dtype=config.precision, name="projection")
            self.projection.build()
        self.projection_scale = None
        if self.stochastic:
            # sigma = softplus(mu A + c) with c = softplus^-1(s / 10): every scale starts near a
            # tenth of the ID embeddings' initial std s (small noise).
            self.projection_scale = ModalityProjection(
                input_dims=[d] * len(self.modalities), output_dim=d, hidden_layers=0,
                fast_gradient=False, output_bias=inverse_softplus(config.init_stddev / 10.0),
                dtype=config.precision, name="projection_scale")
            self.projection_scale.build()
            size = 1 << max(16, int(self.num_items - 1).bit_length())
            bank = np.random.default_rng(0x5EED).standard_normal((size, d), dtype=np.float32)
            self._noise_bank = PerDevice(tf.constant(bank))
        self.fusion = None
        if fusion_mlp:
            self.fusion = FusionMLP(units=self.content_dim, name="fusion_mlp")
            self.fusion.build((None, self.content_dim))
        self._shards = None
        self.built = True

    # -- constants, on the current replica's device --------------------------------------------
    @property
    def raw_features(self) -> list:
        """Each modality's raw features ``M^k`` ``[num_items, dim_k]``, float32, unit mean norm."""
        return self._raw_features.get()

    @property
    def projection_inputs(self) -> list:
        """The raw features in the projection's compute dtype (the same tensors under float32)."""
        return self._projection_inputs.get()

    # -- the projection ----------------------------------------------------------------------------
    def project(self, features, rows=None, training=False):
        """``(Z, means, scales)`` of the items ``rows`` (all items when None) from their
        ``features``: the projection's output, or for a stochastic training pass a
        reparameterized sample ``mu + sigma * eps`` with each modality's ``mu_k`` and
        ``sigma_k`` of the same rows (else None, None).

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
        the step's seed (the model's :class:`~ibmrec_tf.models.base.StepSeeds`) and the
        modality. For odd ``a`` the map is a bijection, so the items of one step get distinct,
        independent rows, and every row is an exact ``N(0, I)`` draw; an item gets the same
        noise wherever the step projects it. Drawing fresh normals instead
        (``tf.random.stateless_normal``) took 16 ms per modality per step for TikTok's
        6,710 x 64 on one thread, three times a VBPR step; the gather takes 2 ms. The bank (and
        so the run) is a function of the seeds alone.
        """
        bank = self._noise_bank.get()
        size = int(bank.shape[0])
        draw = tf.random.stateless_uniform(
            [2], seed=self._seeds.step_seed(NOISE_SEED_OFFSET) + modality, minval=0,
            maxval=size, dtype=tf.int64)
        multiplier, offset = 2 * draw[0] + 1, draw[1]
        rows = (tf.cast(ids, tf.int64) * multiplier + offset) % size
        return tf.gather(bank, rows)

    def stats(self, items) -> tuple[list, list]:
        """``(means, scales)`` of each modality's projection of ``items`` (``stochastic=True``)."""
        means = self.projection([tf.gather(m, items) for m in self.raw_features])
        return means, [tf.nn.softplus(s) for s in self.projection_scale(means)]

    def fused(self, z_list) -> list:
        """The items' content as the backbone reads it: ``Z`` or, with the fusion MLP,
        ``Z + MLP(Z)`` split back into modalities."""
        if self.fusion is None:
            return list(z_list)
        fused = self.fusion(tf.concat(list(z_list), axis=1))
        return tf.split(fused, len(z_list), axis=1)

    def rows(self, items, training=False):
        """``(Z, means, scales)`` of ``items`` only (see :meth:`project`)."""
        return self.project([tf.gather(m, items) for m in self.raw_features], items, training)

    def all_items(self, training=False):
        """``(Z, means, scales)`` of every item (before the fusion MLP; see :meth:`project`).

        Under a ``tf.distribute`` strategy with R replicas each replica projects its own
        ``ceil(N / R)`` items and the shares are all-gathered (the gather's gradient returns
        each share's gradient to the replica that projected it), so the step's largest products,
        the projection and its kernel gradient, are divided among the replicas instead of
        repeated on each. The values and the summed gradients are those of one replica.
        """
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        if replicas == 1 or self.config.straightforward:
            return self.project(self.projection_inputs, training=training)
        replica = tf.get_static_value(context.replica_id_in_sync_group)
        if replica is not None:  # each replica's rows, cut once (not copied every step)
            rows = self._shard_rows(int(replica), replicas)
            mine = self.project(self._feature_shard(replicas, int(replica)), rows, training)
        else:
            rows = self._shard_rows(context.replica_id_in_sync_group, replicas)
            mine = self.project([tf.gather(m, rows) for m in self.projection_inputs], rows,
                                training)
        return tuple(None if part is None else
                     [context.all_gather(z, axis=0)[:self.num_items] for z in part]
                     for part in mine)

    @property
    def sharded(self) -> bool:
        """Whether the all-item projection has been divided among replicas (for tests)."""
        return self._shards is not None

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
