"""IBMRec's pieces: feature- and graph-level information bottlenecks and the second update.

The model that trains them on a backbone is :class:`~ibmrec_tf.models.denoised.IBMRec`
(``--model=ibmrec``); this module holds the terms. Per batch (Algorithm 1), two updates:

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

Which terms apply follows the backbone (Section 5.3.1): FIB needs modality projections
(VBPR, VLightGCN, VLATTICE, FREEDOM, MGCN); GIB needs the item-item graph (LATTICE, VLATTICE,
FREEDOM, MGCN; on MGCN each modality's own kNN graph, :mod:`ibmrec_tf.models.mgcn`); the second update needs the user content embeddings ``C`` (VBPR, VLightGCN,
VLATTICE).

On FREEDOM (:mod:`ibmrec_tf.models.freedom`): FIB ties each modality projection (which
FREEDOM trains by its per-modality BPR terms) to its raw features; GIB's masker reads
``[z_i || q_i]`` and masks the frozen item-item graph, whose rows are renormalized to means
over the kept neighbours (the graph itself stays frozen: the mask is a function of the
trained embeddings); FREEDOM has no ``C``, so there is no second update.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from ibmrec_tf import losses
from ibmrec_tf.layers import EdgeMasker
from ibmrec_tf.models.base import Terms, replica_share
from ibmrec_tf.models.multimodal import BackboneOptions
from ibmrec_tf.models.parts import Denoiser, OwnUpdate

#: offset of the edge mask's seed among a step's stateless samples
_MASK_SEED_OFFSET = 0


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


def sample_edge_mask(keep_logits, config, seed):
    """``rho_ij``: a RelaxedBernoulli sample, or with ``config.hard_mask`` a straight-through
    hard ``Bernoulli(w_ij)`` sample, of every edge's keep decision (Eq. 25-27)."""
    if config.hard_mask:
        keep = tf.sigmoid(keep_logits)
        hard = tfp.distributions.Bernoulli(logits=keep_logits, dtype=tf.float32).sample(seed=seed)
        return hard + (keep - tf.stop_gradient(keep))  # straight-through, exactly 0/1 forward
    return relaxed_bernoulli_sample(keep_logits, config.mask_temperature, seed)


def _resolve(requested: bool | None, supported: bool, what: str, backbone: str, needs: str) -> bool:
    if requested and not supported:
        raise ValueError(f"{what} does not apply to backbone {backbone!r}: it needs {needs}")
    return supported if requested is None else bool(requested)


def terms_used(config, backbone) -> dict[str, bool]:
    """Which of IBMRec's terms apply on ``backbone`` (a backbone class): ``fib``, ``gib`` and
    ``second_stage``. ``None`` settings resolve to "wherever the backbone supports it"; an
    explicit ``True`` where unsupported is a ``ValueError``."""
    name = config.backbone
    return {"fib": _resolve(config.fib, backbone.projects_modalities(), "FIB", name,
                            "modality projections (vbpr, vlightgcn, vlattice, freedom, mgcn)"),
            "gib": _resolve(config.gib, backbone.item_item_graph, "GIB", name,
                            "an item-item graph (lattice, vlattice, freedom, mgcn)"),
            "second_stage": _resolve(config.second_stage, backbone.content, "the second stage",
                                     name, "user content embeddings C (vbpr, vlightgcn, vlattice)")}


class IBMRecDenoiser(Denoiser):
    """IBMRec as a plug-in (see the module docstring): FIB and GIB in the first update, the
    InfoNCE update on ``C`` and the projection as an update of its own."""

    key = "ibmrec"

    @classmethod
    def settings_read(cls, config, backbone) -> frozenset[str]:
        used = terms_used(config, backbone)
        read = {"fib", "gib", "second_stage"}
        if used["fib"]:
            read |= {"alpha", "sigma2_fib", "hsic_items"}
        if used["gib"]:
            read |= {"beta", "sigma2_gib", "mask_temperature", "hard_mask", "masker_hidden",
                     "hsic_items"}
        if used["second_stage"]:
            read.add("tau")
        return frozenset(read)

    @classmethod
    def backbone_options(cls, config, backbone) -> BackboneOptions:
        # GIB's masker reads every item's Z, which a backbone without content lacks.
        return BackboneOptions(projection=terms_used(config, backbone)["gib"])

    @classmethod
    def uses_hsic_sample(cls, config, backbone) -> bool:
        used = terms_used(config, backbone)
        return used["fib"] or used["gib"]

    def __init__(self, *, backbone, config, seeds, **kwargs):
        super().__init__(backbone=backbone, config=config, seeds=seeds, **kwargs)
        used = terms_used(config, type(backbone))
        self.use_fib, self.use_gib = used["fib"], used["gib"]
        self.use_second_stage = used["second_stage"]
        if self.use_gib:
            self.masker = EdgeMasker(hidden_units=config.masker_hidden, name="edge_masker")
            self.masker.build((None, config.embedding_dim * (1 + len(backbone.modalities))))

    # -- the graph-level IB's mask --------------------------------------------------------------
    def edge_keep_logits(self, z_all):
        """Logits of ``w_ij`` for every kNN edge, ``[num_items, K * knn_k]`` (Eq. 24)."""
        item_features = tf.concat([self.backbone.item_embedding] + list(z_all), axis=1)
        return self.masker(item_features, neighbors=self.backbone.knn_table)

    def sample_edge_mask(self, keep_logits):
        return sample_edge_mask(keep_logits, self.config, self.step_seed(_MASK_SEED_OFFSET))

    def forward_inputs(self, inputs, training) -> None:
        """GIB: every item's ``Z`` (the masker reads it), the keep probabilities, and the
        sampled mask (its expectation, the keep probabilities, outside training)."""
        if not self.use_gib:
            return
        if inputs.z_all is None:
            inputs.z_all, inputs.z_means, inputs.z_scales = \
                self.backbone.content_with_stats(training)
        logits = self.edge_keep_logits(inputs.z_all)
        keep = tf.sigmoid(logits)
        inputs.extras[self.key] = keep
        inputs.scale_edges(self.sample_edge_mask(logits) if training else keep)

    def add_terms(self, terms, step) -> None:
        n, out = step.hsic_rows, step.out
        if self.use_fib:
            sample = step.items[:n]
            fib_terms(terms, self.config, [z[:n] for z in out.z_items],
                      [tf.gather(m, sample) for m in self.backbone.raw_features])
        if self.use_gib:
            # Y (the unmasked graph) only enters the HSIC, so only its HSIC rows are computed.
            original = self.backbone.on_item_graph(out, step.items, None, first=n)
            gib_terms(terms, self.config, out.items[:n], original, step.inputs.extras[self.key])

    def second_stage_variables(self) -> list:
        """``Theta_2 = [C, Z]`` (Eq. 31): the user content embeddings and the projection."""
        return [self.backbone.user_content] + list(self.backbone.projection.trainable_variables)

    def updates(self) -> list[OwnUpdate]:
        if not self.use_second_stage:
            return []
        backbone = self.backbone
        excludes = [backbone.user_embedding, backbone.item_embedding]
        if self.use_gib:
            excludes += list(self.masker.trainable_variables)
        if backbone.item_item_graph and backbone.learned_fusion:
            excludes.append(backbone.modality_logits)
        return [OwnUpdate("second_stage", self.second_stage_variables(),
                          lambda batch: second_stage_loss(backbone, batch, self.config.tau),
                          excludes=excludes, report="infonce")]


def fib_terms(terms: Terms, config, z_items, raw_items) -> None:
    """``alpha * sum_k HSIC(Z^k, M^k)`` over the HSIC items (Eq. 22): ``z_items`` and
    ``raw_items`` are each modality's ``Z^k`` and ``M^k`` of the same items."""
    terms.batch_level("hsic_fib", tf.add_n([losses.hsic_rbf(z, m, config.sigma2_fib)
                                            for z, m in zip(z_items, raw_items)]))
    terms.weighted("fib", config.alpha, "hsic_fib")


def gib_terms(terms: Terms, config, masked_items, original_items, keep) -> None:
    """``beta * HSIC(Y', Y)`` between the HSIC items on the masked and the unmasked graph
    (Eq. 28), and the mean keep probability."""
    terms.batch_level("hsic_gib", losses.hsic_rbf(masked_items, original_items, config.sigma2_gib))
    terms.weighted("gib", config.beta, "hsic_gib")
    terms.batch_level("edge_keep_prob", tf.reduce_mean(keep))
    terms.report("hist/edge_keep_prob", keep)


def second_stage_loss(backbone, batch, tau):
    """InfoNCE between ``c_a`` and ``z_i`` of the batch's (user, positive) pairs (Eq. 31).

    The candidates are the batch's distinct positive items, so an item that is the positive
    of several pairs is never a negative for any of them; ``z_i`` is the projection's output
    (its mean, for a stochastic projection). Over the whole (global) batch; under a strategy
    each replica returns ``1 / replicas`` of it (a batch-level :class:`Terms` entry).
    """
    items, labels = tf.unique(batch["pos"])
    user_content = tf.gather(backbone.user_content, batch["user"])
    z_items = tf.concat(backbone.projection([tf.gather(m, items) for m in backbone.raw_features]),
                        axis=1)
    terms = Terms(replica_share(batch))
    return terms.batch_level("infonce", losses.info_nce(user_content, z_items, tau,
                                                        labels=labels))
