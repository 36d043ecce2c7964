"""IBMRec: a multimodal backbone with feature- and graph-level information bottlenecks.

Per batch (Algorithm 1), two updates:

1. ``L1 = L_rec + alpha * sum_k HSIC(Z^k, M^k) + beta * HSIC(Y', Y)`` (Eq. 29-30) on every
   trainable variable, where
   * FIB (Eq. 22): HSIC between each modality's projection ``Z^k`` and its raw features
     ``M^k`` on the batch's items;
   * GIB (Eq. 23-28): an :class:`~ibmrec_tf.layers.EdgeMasker` gives every kNN item-item edge
     a keep probability ``w_ij`` from ``[z_i || q_i, z_j || q_j]``; training samples
     ``rho_ij ~ RelaxedBernoulli(temperature, w_ij)`` (or a straight-through hard
     ``Bernoulli(w_ij)`` sample), the masked graph ``S' = S * rho`` gives the items ``Y'`` that
     are scored, and HSIC ties ``Y'`` to ``Y``, the items on the unmasked graph.
2. ``L2 = InfoNCE(c_a, z_i)`` (Eq. 31) with in-batch items as negatives, on the user content
   embeddings ``C`` and the projection only.

At evaluation and export the mask is deterministic: ``rho_ij = w_ij``, the expected value of
the keep decision. (The symmetric normalization makes the graph invariant to scaling all
edges alike, so only the relative keep probabilities matter.)

Which terms apply follows the backbone (Section 5.3.1): FIB and the second update need content
embeddings (VBPR, VLightGCN, VLATTICE); GIB needs the item-item graph (LATTICE, VLATTICE).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import keras

from ibmrec_tf import losses
from ibmrec_tf.data import Dataset
from ibmrec_tf.layers import EdgeMasker
from ibmrec_tf.models.base import ModelConfig, Recommender, replica_share
from ibmrec_tf.models.multimodal import BACKBONES


def _resolve(requested: bool | None, supported: bool, what: str, backbone: str, needs: str) -> bool:
    if requested and not supported:
        raise ValueError(f"{what} does not apply to backbone {backbone!r}: it needs {needs}")
    return supported if requested is None else bool(requested)


def relaxed_bernoulli_sample(logits, temperature, seed):
    """A reparameterized ``tfp.distributions.RelaxedBernoulli(temperature, logits)`` sample.

    That distribution is ``sigmoid(X)`` with ``X ~ Logistic(logits / T, 1 / T)``; this draws
    ``X`` with ``tfp.distributions.Logistic`` and squashes it with ``tf.math.sigmoid``. The
    values are the same as the RelaxedBernoulli's for the same seed, but the gradient stays
    finite: tfp's sigmoid bijector evaluates ``exp`` on both branches of a ``tf.where``, whose
    gradient turns NaN once ``|X|`` passes ~88, which low temperatures reach within a few steps
    (``logits / T`` at ``T = 0.2`` and ``|logits| > 18``).
    """
    temperature = tf.cast(temperature, logits.dtype)
    x = tfp.distributions.Logistic(loc=logits / temperature,
                                   scale=1.0 / temperature).sample(seed=seed)
    return tf.math.sigmoid(x)


class IBMRec(Recommender):
    """IBMRec on one of the multimodal backbones (see the module docstring)."""

    multimodal = True

    def __init__(self, dataset: Dataset, config: ModelConfig, **kwargs):
        super().__init__(dataset.num_users, dataset.num_items, config, **kwargs)
        if config.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {config.backbone!r}; choose one of {sorted(BACKBONES)}")
        cls = BACKBONES[config.backbone]
        self.use_fib = _resolve(config.fib, cls.content, "FIB", config.backbone,
                                "content embeddings [Q, Z] (vbpr, vlightgcn, vlattice)")
        self.use_gib = _resolve(config.gib, cls.item_item_graph, "GIB", config.backbone,
                                "an item-item graph (lattice, vlattice)")
        self.use_second_stage = _resolve(config.second_stage, cls.content, "the second stage",
                                         config.backbone, "user content embeddings C")
        self.backbone = cls(dataset, config, need_projection=self.use_gib, name=config.backbone)
        self.modalities = self.backbone.modalities
        if self.use_gib:
            self.masker = EdgeMasker(hidden_units=config.masker_hidden, name="edge_masker")
            self.masker.build((None, config.embedding_dim * (1 + len(self.modalities))))
            # Seeds the stateless edge samples together with the step counter, so the samples
            # are a pure function of (seed, step) and a resumed run draws the same ones.
            self.sampling_seed = self.add_weight(
                shape=(), dtype="int32", trainable=False, name="sampling_seed",
                initializer=keras.initializers.Constant(int(np.random.randint(0, 2**31 - 1))))

    # -- variable groups ----------------------------------------------------------------------
    def second_stage_variables(self) -> list:
        """``Theta_2 = [C, Z]`` (Eq. 31): the user content embeddings and the projection."""
        return [self.backbone.user_content] + list(self.backbone.projection.trainable_variables)

    def create_optimizers(self, learning_rate: float, kind: str = "adam") -> dict:
        self._optimizers = {"main": self.new_optimizer(learning_rate, self.trainable_variables,
                                                       kind)}
        if self.use_second_stage:
            second_vars = self.second_stage_variables()
            allowed = {id(v) for v in self.trainable_variables}
            protected = [self.backbone.user_embedding, self.backbone.item_embedding]
            if self.use_gib:
                protected += list(self.masker.trainable_variables)
            if self.backbone.item_item_graph:
                protected.append(self.backbone.modality_logits)
            overlap = {id(v) for v in protected} & {id(v) for v in second_vars}
            if overlap or not {id(v) for v in second_vars} <= allowed:
                raise ValueError("the second-stage variable group must hold only C and the "
                                 "projection, all of them trainable")
            self._optimizers["second_stage"] = self.new_optimizer(learning_rate, second_vars, kind)
        return self._optimizers

    # -- the forward pass ---------------------------------------------------------------------
    def edge_keep_logits(self, z_all):
        """Logits of ``w_ij`` for every kNN edge, ``[num_items, K * knn_k]`` (Eq. 24)."""
        item_features = tf.concat([self.backbone.item_embedding] + list(z_all), axis=1)
        return self.masker(item_features, neighbors=self.backbone.knn_table)

    def sample_edge_mask(self, keep_logits):
        seed = tf.stack([tf.cast(tf.convert_to_tensor(self.sampling_seed), tf.int32),
                         tf.cast(tf.convert_to_tensor(self._optimizers["main"].iterations), tf.int32)])
        if self.config.hard_mask:
            keep = tf.sigmoid(keep_logits)
            hard = tfp.distributions.Bernoulli(logits=keep_logits, dtype=tf.float32).sample(seed=seed)
            return hard + keep - tf.stop_gradient(keep)  # straight-through
        return relaxed_bernoulli_sample(keep_logits, self.config.mask_temperature, seed)

    def _forward(self, users, items, training):
        backbone = self.backbone
        # The masker reads every item's Z; without GIB the backbone projects what it needs.
        z_all = backbone.content_features() if self.use_gib else None
        extras = {}
        mask = None
        if self.use_gib:
            logits = self.edge_keep_logits(z_all)
            keep = tf.sigmoid(logits)
            extras["keep"] = keep
            mask = self.sample_edge_mask(logits) if training else keep
        out = backbone.forward(users=users, items=items, training=training, z_all=z_all,
                               edge_scale=mask)
        return out, extras

    def forward(self, users=None, items=None, training=False):
        return self._forward(users, items, training)[0]

    # -- losses and updates -------------------------------------------------------------------
    def compute_losses(self, batch, training=True) -> dict:
        """The backbone's BPR and L2 terms plus FIB and GIB (Eq. 30), as this replica's share.

        The HSIC terms are defined over the whole batch's distinct items, so every replica
        computes them over the global batch and contributes ``1 / replicas`` of each (as it
        does of every reported batch-level value); see :meth:`Recommender.compute_losses`.
        """
        share, users, items, pos_rows, neg_rows = self.replica_batch(batch)
        out, extras = self._forward(users, items, training)
        terms = self._bpr_terms(share, out, pos_rows, neg_rows)
        n = tf.shape(items)[0] if self.config.hsic_items <= 0 else \
            tf.minimum(tf.shape(items)[0], self.config.hsic_items)
        hsic_items = items[:n]  # distinct, in the shuffled batch's order
        if self.use_fib:
            # The items' ego rows are [q_i, z^1_i, ..., z^K_i].
            d = self.config.embedding_dim
            ego = out["item_ego"][:n]
            hsic = tf.add_n([
                losses.hsic_rbf(ego[:, d * (k + 1):d * (k + 2)], tf.gather(m, hsic_items),
                                self.config.sigma2_fib)
                for k, m in enumerate(self.backbone.raw_features)])
            terms["hsic_fib"] = hsic * share.scale
            terms["fib"] = self.config.alpha * terms["hsic_fib"]
            terms["loss"] = terms["loss"] + terms["fib"]
        if self.use_gib:
            # Y (the unmasked graph) only enters the HSIC, so only its HSIC rows are computed.
            masked = out["items"][:n]
            original = self.backbone.on_item_graph(out, items, None, first=n)
            hsic = losses.hsic_rbf(masked, original, self.config.sigma2_gib)
            terms["hsic_gib"] = hsic * share.scale
            terms["gib"] = self.config.beta * terms["hsic_gib"]
            terms["loss"] = terms["loss"] + terms["gib"]
            terms["edge_keep_prob"] = tf.reduce_mean(extras["keep"]) * share.scale
            terms["hist/edge_keep_prob"] = extras["keep"]
        if self.backbone.item_item_graph:
            weights = self.backbone.modality_weights()
            for k, name in enumerate(self.modalities):
                terms[f"modality_weight/{name}"] = weights[k] * share.scale
        return terms

    def second_stage_loss(self, batch):
        """InfoNCE between ``c_a`` and ``z_i`` of the batch's (user, positive) pairs (Eq. 31).

        The candidates are the batch's distinct positive items, so an item that is the positive
        of several pairs is never a negative for any of them. Over the whole (global) batch;
        under a strategy each replica returns ``1 / replicas`` of it.
        """
        backbone = self.backbone
        items, labels = tf.unique(batch["pos"])
        user_content = tf.gather(backbone.user_content, batch["user"])
        z_items = tf.concat(backbone.projection([tf.gather(m, items)
                                                 for m in backbone.raw_features]), axis=1)
        return losses.info_nce(user_content, z_items, self.config.tau,
                               labels=labels) * replica_share(batch).scale

    def train_step(self, batch):
        terms = super().train_step(batch)  # the first update: L1 on every variable
        if self.use_second_stage:
            second_vars = self.second_stage_variables()
            with tf.GradientTape() as tape:
                nce = self.second_stage_loss(batch)
            self.minimize(self._optimizers["second_stage"], tape, nce, second_vars)
            terms["infonce"] = nce
        return terms
