"""Denoisers as plug-ins on the multimodal backbones: IBMRec, MRdIB, and both together.

One model, :class:`DenoisedRecommender`, wraps a backbone (``config.backbone``: VBPR,
VLightGCN, LATTICE, VLATTICE or FREEDOM) and the denoisers named by its class:

| model (``--model``) | denoisers |
|---|---|
| ``ibmrec`` (:class:`IBMRec`) | IBMRec (:mod:`ibmrec_tf.models.ibmrec`) |
| ``mrdib`` (:class:`MRdIB`) | MRdIB (:mod:`ibmrec_tf.models.mrdib`) |
| ``ibmrec_mrdib`` (:class:`IBMRecMRdIB`) | both |

A denoiser plugs in at four points, which is the whole interface:

1. **The backbone's build options.** IBMRec's GIB needs the modality projection for its masker
   (``need_projection``); MRdIB makes the projection stochastic and may add the fusion MLP
   (``stochastic``, ``fusion_mlp``; see :mod:`ibmrec_tf.models.multimodal`).
2. **The forward pass.** GIB passes an edge scale (the sampled mask) for the item-item graph;
   MRdIB's noise is drawn inside the backbone's projection from this model's step seed.
3. **Terms of the first update** ``L1`` on every trainable variable but the critics: the
   backbone's BPR, L2 and own terms, then FIB and GIB, then MRdIB's KL, unique, synergy and
   redundancy terms. Every term is also reported (TensorBoard ``train/<term>``).
4. **Updates of their own**, each with its own optimizer over a declared variable group,
   checked at :meth:`create_optimizers`: IBMRec's second update (InfoNCE on ``C`` and the
   projection) and MRdIB's critics (maximizing the Donsker-Varadhan bound, recorded by one
   more tape during the first update's forward pass, which watches only the critics).

With both, the projection that FIB ties to the raw features is MRdIB's stochastic one (its
samples in training), GIB's masker reads the samples, and the second update reads the means.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from ibmrec_tf.data import Dataset
from ibmrec_tf.layers import EdgeMasker
from ibmrec_tf.models import ibmrec as ibmrec_terms
from ibmrec_tf.models import mrdib as mrdib_terms
from ibmrec_tf.models.base import ModelConfig, Recommender
from ibmrec_tf.models.freedom import FREEDOM
from ibmrec_tf.models.multimodal import BACKBONES as _MULTIMODAL

BACKBONES = {**_MULTIMODAL, "freedom": FREEDOM}
#: offset of the HSIC sample's seed among a step's stateless samples (a prime, as the others)
_HSIC_SAMPLE_SEED_OFFSET = 15485863


def _resolve(requested: bool | None, supported: bool, what: str, backbone: str, needs: str) -> bool:
    if requested and not supported:
        raise ValueError(f"{what} does not apply to backbone {backbone!r}: it needs {needs}")
    return supported if requested is None else bool(requested)


class DenoisedRecommender(Recommender):
    """A backbone with the denoisers of :attr:`denoisers` (see the module docstring)."""

    multimodal = True
    #: the denoisers this model plugs in: a subset of ``('ibmrec', 'mrdib')``
    denoisers: tuple[str, ...] = ()

    @classmethod
    def terms_used(cls, config: ModelConfig) -> dict[str, bool]:
        """Which of IBMRec's terms apply (``fib``, ``gib``, ``second_stage``) and whether MRdIB
        does (``mrdib``), for ``config.backbone``; ``None`` settings resolve to "wherever the
        backbone supports it"; an explicit ``True`` where unsupported is a ``ValueError``."""
        backbone = BACKBONES[config.backbone]
        ibmrec = "ibmrec" in cls.denoisers

        return {"fib": ibmrec and _resolve(
                    config.fib, backbone.projects_modalities(), "FIB", config.backbone,
                    "modality projections (vbpr, vlightgcn, vlattice, freedom)"),
                "gib": ibmrec and _resolve(
                    config.gib, backbone.item_item_graph, "GIB", config.backbone,
                    "an item-item graph (lattice, vlattice, freedom)"),
                "second_stage": ibmrec and _resolve(
                    config.second_stage, backbone.content, "the second stage", config.backbone,
                    "user content embeddings C (vbpr, vlightgcn, vlattice)"),
                "mrdib": "mrdib" in cls.denoisers}

    @classmethod
    def settings_read(cls, config: ModelConfig) -> frozenset[str]:
        """The backbone's settings (and its projection's where a denoiser needs one), then each
        denoiser's, as far as its terms apply on that backbone."""
        if config.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {config.backbone!r}; choose one of {sorted(BACKBONES)}")
        backbone = BACKBONES[config.backbone]
        used = cls.terms_used(config)
        projection = backbone.projects_modalities() or used["gib"] or used["mrdib"]
        read = set(backbone.settings_read(config, projection=projection)) | {"backbone"}
        if "ibmrec" in cls.denoisers:
            read |= {"fib", "gib", "second_stage"}
        if used["fib"]:
            read |= {"alpha", "sigma2_fib", "hsic_items"}
        if used["gib"]:
            read |= {"beta", "sigma2_gib", "mask_temperature", "hard_mask", "masker_hidden",
                     "hsic_items"}
        if used["second_stage"]:
            read.add("tau")
        if used["mrdib"]:
            read |= {"mrdib_kl_weight", "mrdib_unique_weight", "mrdib_redundancy_weight",
                     "mrdib_redundancy_estimator", "mrdib_fusion_mlp", "hsic_items"}
            read.add("mrdib_critic_hidden" if config.mrdib_redundancy_estimator == "dv"
                     else "sigma2_fib")
            if not backbone.content:
                read.add("mrdib_synergy_weight")
        return frozenset(read)

    def __init__(self, dataset: Dataset, config: ModelConfig, **kwargs):
        super().__init__(dataset.num_users, dataset.num_items, config, **kwargs)
        if config.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {config.backbone!r}; choose one of {sorted(BACKBONES)}")
        cls = BACKBONES[config.backbone]
        used = self.terms_used(config)
        self.use_fib, self.use_gib = used["fib"], used["gib"]
        self.use_second_stage, self.use_mrdib = used["second_stage"], used["mrdib"]
        self.backbone = cls(dataset, config, need_projection=self.use_gib or self.use_mrdib,
                            stochastic=self.use_mrdib,
                            fusion_mlp=self.use_mrdib and config.mrdib_fusion_mlp,
                            name=config.backbone)
        self.modalities = self.backbone.modalities
        if self.use_gib:
            self.masker = EdgeMasker(hidden_units=config.masker_hidden, name="edge_masker")
            self.masker.build((None, config.embedding_dim * (1 + len(self.modalities))))
        self.mrdib = None
        if self.use_mrdib:
            self.mrdib = mrdib_terms.MRdIBHead(
                modalities=self.modalities, dim=config.embedding_dim, content=cls.content,
                estimator=config.mrdib_redundancy_estimator,
                critic_hidden=config.mrdib_critic_hidden,
                fusion_mlp=config.mrdib_fusion_mlp, name="mrdib")
            self.backbone.noise_seed_fn = lambda: self.step_seed(7919)
        if self.use_gib or self.use_mrdib or self.use_fib:
            # Seeds the stateless samples (edge masks, projection noise, the HSIC sample,
            # shuffles) together with the step counter, so the samples are a pure function of
            # (seed, step) and a resumed run draws the same ones.
            self.sampling_seed = self.add_weight(
                shape=(), dtype="int32", trainable=False, name="sampling_seed",
                initializer=keras.initializers.Constant(int(np.random.randint(0, 2**31 - 1))))

    def step_seed(self, offset: int = 0):
        """``[2]`` int32 seed of this step's stateless samples: ``(sampling_seed + offset, step)``."""
        return tf.stack([tf.cast(tf.convert_to_tensor(self.sampling_seed), tf.int32) + offset,
                         tf.cast(tf.convert_to_tensor(self._optimizers["main"].iterations),
                                 tf.int32)])

    def hsic_sample(self, items, pos_rows, neg_rows):
        """The batch's distinct items in a seeded random order, with the rows remapped.

        The batch-level terms (FIB, GIB, MRdIB's redundancy) read the first ``hsic_items`` of
        ``items``; after this shuffle those are a uniform sample without replacement of the
        batch's distinct items, positives and negatives alike. (``tf.unique`` keeps the
        first-occurrence order, positives first, so without it the sample was the batch's
        positives: popular items, no negatives.) A pure function of ``(seed, step)``, the same
        on every replica. With ``hsic_items=0`` (every item) the order is left as it is.
        """
        if self.config.hsic_items <= 0:
            return items, pos_rows, neg_rows
        order = tf.argsort(tf.random.stateless_uniform(
            tf.shape(items), seed=self.step_seed(_HSIC_SAMPLE_SEED_OFFSET)))
        inverse = tf.math.invert_permutation(order)
        return (tf.gather(items, order), tf.gather(inverse, pos_rows),
                tf.gather(inverse, neg_rows))

    def on_epoch_start(self, epoch: int, seed: int) -> None:
        self.backbone.on_epoch_start(epoch, seed)

    # -- variable groups ----------------------------------------------------------------------
    def second_stage_variables(self) -> list:
        """``Theta_2 = [C, Z]`` (Eq. 31): the user content embeddings and the projection."""
        return [self.backbone.user_content] + list(self.backbone.projection.trainable_variables)

    def critic_variables(self) -> list:
        """MRdIB's critics: trained only by the critic optimizer, to maximize the DV bound."""
        return self.mrdib.critic_variables() if self.mrdib is not None else []

    def main_variables(self) -> list:
        """The first update's variables: every trainable variable but the critics."""
        critics = {id(v) for v in self.critic_variables()}
        return [v for v in self.trainable_variables if id(v) not in critics]

    def create_optimizers(self, learning_rate: float, kind: str = "adam") -> dict:
        main_vars = self.main_variables()
        self._optimizers = {"main": self.new_optimizer(learning_rate, main_vars, kind)}
        allowed = {id(v) for v in self.trainable_variables}
        if self.use_second_stage:
            second_vars = self.second_stage_variables()
            protected = [self.backbone.user_embedding, self.backbone.item_embedding]
            if self.use_gib:
                protected += list(self.masker.trainable_variables)
            if self.backbone.item_item_graph and self.backbone.learned_fusion:
                protected.append(self.backbone.modality_logits)
            protected += self.critic_variables()
            overlap = {id(v) for v in protected} & {id(v) for v in second_vars}
            if overlap or not {id(v) for v in second_vars} <= allowed:
                raise ValueError("the second-stage variable group must hold only C and the "
                                 "projection, all of them trainable")
            self._optimizers["second_stage"] = self.new_optimizer(learning_rate, second_vars, kind)
        critic_vars = self.critic_variables()
        if critic_vars:
            if not {id(v) for v in critic_vars} <= allowed or \
                    {id(v) for v in critic_vars} & {id(v) for v in main_vars}:
                raise ValueError("the critic variable group must hold only MRdIB's critics, "
                                 "all trainable and outside the first update's group")
            self._optimizers["critic"] = self.new_optimizer(learning_rate, critic_vars, kind)
        return self._optimizers

    # -- the forward pass ---------------------------------------------------------------------
    def edge_keep_logits(self, z_all):
        """Logits of ``w_ij`` for every kNN edge, ``[num_items, K * knn_k]`` (Eq. 24)."""
        item_features = tf.concat([self.backbone.item_embedding] + list(z_all), axis=1)
        return self.masker(item_features, neighbors=self.backbone.knn_table)

    def sample_edge_mask(self, keep_logits):
        return ibmrec_terms.sample_edge_mask(keep_logits, self.config, self.step_seed())

    def _forward(self, users, items, training):
        backbone = self.backbone
        # The masker reads every item's Z; without GIB the backbone projects what it needs.
        z_all = z_stats = None
        if self.use_gib:
            z_all, *z_stats = backbone.content_with_stats(training)
        extras = {}
        mask = None
        if self.use_gib:
            logits = self.edge_keep_logits(z_all)
            keep = tf.sigmoid(logits)
            extras["keep"] = keep
            mask = self.sample_edge_mask(logits) if training else keep
        out = backbone.forward(users=users, items=items, training=training, z_all=z_all,
                               edge_scale=mask, z_stats=z_stats)
        return out, extras

    def forward(self, users=None, items=None, training=False):
        return self._forward(users, items, training)[0]

    # -- losses and updates -------------------------------------------------------------------
    def compute_losses(self, batch, training=True) -> dict:
        """The backbone's terms plus every denoiser's first-update terms, as this replica's share.

        The HSIC and DV terms are defined over the whole batch's distinct items, so every
        replica computes them over the global batch and contributes ``1 / replicas`` of each
        (as it does of every reported batch-level value); see :meth:`Recommender.compute_losses`.
        """
        backbone, config = self.backbone, self.config
        share, users, items, pos_rows, neg_rows = self.replica_batch(batch)
        if self.use_fib or self.use_gib or self.use_mrdib:
            items, pos_rows, neg_rows = self.hsic_sample(items, pos_rows, neg_rows)
        out, extras = self._forward(users, items, training)
        terms = backbone.add_backbone_terms(self._bpr_terms(share, out, pos_rows, neg_rows),
                                            share, out, pos_rows, neg_rows)
        added = []
        n = tf.shape(items)[0] if config.hsic_items <= 0 else \
            tf.minimum(tf.shape(items)[0], config.hsic_items)
        hsic_items = items[:n]  # a uniform sample of the batch's distinct items
        if self.use_fib:
            terms.update(ibmrec_terms.fib_terms(
                config, [z[:n] for z in out["z_items"]],
                [tf.gather(m, hsic_items) for m in backbone.raw_features], share))
            added.append("fib")
        if self.use_gib:
            # Y (the unmasked graph) only enters the HSIC, so only its HSIC rows are computed.
            original = backbone.on_item_graph(out, items, None, first=n)
            terms.update(ibmrec_terms.gib_terms(config, out["items"][:n], original,
                                                extras["keep"], share))
            added.append("gib")
        if self.use_mrdib:
            means, scales = (out["z_stats"] if "z_stats" in out
                             else backbone.projection_stats(items))
            terms.update(mrdib_terms.kl_terms(config, self.modalities, means, scales, share))
            terms.update(mrdib_terms.unique_terms(config, self.mrdib, out["users"],
                                                  out["z_items"], pos_rows, neg_rows, share))
            added += ["kl", "unique"]
            if not backbone.content:
                terms.update(mrdib_terms.synergy_terms(config, self.mrdib, out["users"],
                                                       out["z_items"], pos_rows, neg_rows, share))
                added.append("synergy")
            redundancy = mrdib_terms.redundancy_terms(
                config, self.mrdib, [z[:n] for z in out["z_items"]], self.step_seed(104729),
                share)
            if redundancy:
                terms.update(redundancy)
                added.append("redundancy")
        for name in added:
            terms["loss"] = terms["loss"] + terms[name]
        if backbone.item_item_graph and backbone.learned_fusion:
            weights = backbone.modality_weights()
            for k, name in enumerate(self.modalities):
                terms[f"modality_weight/{name}"] = weights[k] * share.scale
        return terms

    def second_stage_loss(self, batch):
        """IBMRec's second update's loss (:func:`ibmrec_tf.models.ibmrec.second_stage_loss`)."""
        return ibmrec_terms.second_stage_loss(self.backbone, batch, self.config.tau)

    def train_step(self, batch):
        critic_vars = self.critic_variables()
        critic_tape = (tf.GradientTape(watch_accessed_variables=False) if critic_vars
                       else contextlib.nullcontext())
        # tape.watch takes the Keras variables' underlying tf.Variables.
        watched = [getattr(v, "value", v) for v in critic_vars]
        with tf.GradientTape() as tape, critic_tape:
            if critic_vars:
                critic_tape.watch(watched)
            terms = self.compute_losses(batch, training=True)
            if critic_vars:  # the critics ascend the bound the encoders descend
                critic_loss = -terms["redundancy_estimate"]
        # The first update: L1 on every variable but the critics.
        self.minimize(self._optimizers["main"], tape, terms["loss"], self.main_variables())
        if critic_vars:
            self.minimize(self._optimizers["critic"], critic_tape, critic_loss, critic_vars,
                          sources=watched)
        if self.use_second_stage:
            second_vars = self.second_stage_variables()
            with tf.GradientTape() as tape:
                nce = self.second_stage_loss(batch)
            self.minimize(self._optimizers["second_stage"], tape, nce, second_vars)
            terms["infonce"] = nce
        return terms


class IBMRec(DenoisedRecommender):
    """IBMRec on a backbone (:mod:`ibmrec_tf.models.ibmrec`)."""
    denoisers = ("ibmrec",)


class MRdIB(DenoisedRecommender):
    """MRdIB on a backbone (:mod:`ibmrec_tf.models.mrdib`)."""
    denoisers = ("mrdib",)


class IBMRecMRdIB(DenoisedRecommender):
    """IBMRec and MRdIB together on one backbone."""
    denoisers = ("ibmrec", "mrdib")
