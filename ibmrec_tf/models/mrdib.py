"""MRdIB's pieces: compression, unique, redundant and synergistic information, as terms.

Wang et al., "Multimodal Representation-disentangled Information Bottleneck for Multimodal
Recommendation" (arXiv 2509.20225). No code is public and the method section was not in hand:
what follows is **the paper's reported design** where its abstract and secondary summaries
state it, and **this project's reading** where they do not (marked so below). The model that
trains these terms on a backbone is :class:`~ibmrec_tf.models.denoised.MRdIB`
(``--model=mrdib``).

* **Compression** (reported: a multimodal information bottleneck, Mai et al. 2022). Each
  modality's projection is stochastic, ``Z^k ~ N(mu_k, diag(sigma_k^2))`` with
  ``sigma_k = softplus`` of an affine map (reported), offset so it starts at a tenth of the ID
  embeddings' init std (reading); training uses a reparameterized sample, evaluation and
  export the mean (reported). The term is ``mrdib_kl_weight * sum_k mean_i KL(N(mu_k,
  sigma_k^2) || N(0, I))`` over the batch's items, summed over dimensions (reading: the
  dimension sum of the standard variational bottleneck).
* **Unique information** (reported: each modality alone predicts the target). A BPR term per
  modality, scored from that modality alone: ``<u^k_a, z^k_i>`` where ``u^k_a`` is the
  modality's part of the user's content embedding on backbones with one (VBPR, VLightGCN,
  VLATTICE: the user's final representation's ``k``-th content block), and a learned map
  ``u^k_a = W_k x_a`` of the user's representation on the others (LATTICE, FREEDOM) (reading).
  Weight ``mrdib_unique_weight``.
* **Redundant information** (reported: minimized, estimated by a Donsker-Varadhan bound). For
  each pair of modalities, ``mrdib_redundancy_estimator=dv``: a critic ``T``
  (:class:`~ibmrec_tf.layers.PairCritic`) scores the batch's pairs ``(z^a_i, z^b_i)`` and the
  pairs with ``z^b`` shuffled, and the bound ``E_joint T - log E_product exp T`` is maximized
  by the critic's own optimizer and minimized by the encoders (reported). The critic reads
  unit-norm rows (reading: as the project's HSIC does, so that shrinking a modality cannot
  lower the estimate). ``hsic``: the project's RBF HSIC between the two modalities, which needs
  no critic (reading: the notes' second estimator; minimizing a lower bound does not guarantee
  less dependence, minimizing HSIC does). Weight ``mrdib_redundancy_weight``; over the first
  ``hsic_items`` distinct items of the batch drawn uniformly, as IBMRec's HSIC terms.
* **Synergistic information** (reported: the fused representation predicts the target). The
  backbone's own loss on the sampled representations; ``mrdib_fusion_mlp`` adds a residual
  MLP (:class:`~ibmrec_tf.layers.FusionMLP`) over the concatenated modalities before the
  backbone reads them, which a linear fusion lacks for an interaction of two modalities
  (reading). On LATTICE and FREEDOM the scores do not read the modalities, so the fused
  modalities (their mean, through the MLP when enabled) get a BPR term of their own with a
  mapped user, weight ``mrdib_synergy_weight`` (reading).

Reported defaults (the paper's best on MGCN): KL 5e-3, redundancy 5e-2, unique 5e-3. Known
weaknesses of this reading are in ``README.md`` ("MRdIB").
"""

from __future__ import annotations

import itertools

import keras
import tensorflow as tf

from ibmrec_tf import losses
from ibmrec_tf.layers import FusionMLP, PairCritic
from ibmrec_tf.models.base import Terms
from ibmrec_tf.models.multimodal import BackboneOptions
from ibmrec_tf.models.parts import Denoiser, OwnUpdate

#: offset of the DV bound's shuffles among a step's stateless samples
_SHUFFLE_SEED_OFFSET = 104729


class MRdIBDenoiser(Denoiser):
    """MRdIB as a plug-in (see the module docstring). Its own weights: the critics, and on
    backbones whose scores do not read the modalities the users' maps and the fusion MLP."""

    key = "mrdib"

    @classmethod
    def settings_read(cls, config, backbone) -> frozenset[str]:
        read = {"mrdib_kl_weight", "mrdib_unique_weight", "mrdib_redundancy_weight",
                "mrdib_redundancy_estimator", "mrdib_fusion_mlp", "hsic_items"}
        read.add("mrdib_critic_hidden" if config.mrdib_redundancy_estimator == "dv"
                 else "sigma2_fib")
        if not backbone.content:
            read.add("mrdib_synergy_weight")
        return frozenset(read)

    @classmethod
    def backbone_options(cls, config, backbone) -> BackboneOptions:
        return BackboneOptions(projection=True, stochastic=True, fusion_mlp=config.mrdib_fusion_mlp)

    @classmethod
    def uses_hsic_sample(cls, config, backbone) -> bool:
        return True

    def __init__(self, *, backbone, config, seeds, **kwargs):
        super().__init__(backbone=backbone, config=config, seeds=seeds, **kwargs)
        self.modalities = tuple(backbone.modalities)
        dim = config.embedding_dim
        self.content = bool(backbone.content)
        self.estimator = config.mrdib_redundancy_estimator
        self.pairs = list(itertools.combinations(range(len(self.modalities)), 2))
        # Attribute names (a list of layers would not be tracked for tf.train.Checkpoint).
        self.critic_names = []
        if self.estimator == "dv":
            for a, b in self.pairs:
                name = f"critic_{self.modalities[a]}_{self.modalities[b]}"
                setattr(self, name, PairCritic(hidden_units=config.mrdib_critic_hidden, name=name))
                getattr(self, name).build(((None, dim), (None, dim)))
                self.critic_names.append(name)
        self.fusion = None
        if not self.content:
            init = keras.initializers.Identity()
            for k in range(len(self.modalities)):
                setattr(self, f"user_map_{k}", self.add_weight(
                    shape=(dim, dim), initializer=init, name=f"user_map_{self.modalities[k]}"))
            self.user_map_fused = self.add_weight(shape=(dim, dim), initializer=init,
                                                  name="user_map_fused")
            if config.mrdib_fusion_mlp:
                self.fusion = FusionMLP(units=dim * len(self.modalities), name="fusion_mlp")
                self.fusion.build((None, dim * len(self.modalities)))

    def critics(self) -> list:
        return [getattr(self, name) for name in self.critic_names]

    def critic_variables(self) -> list:
        return [v for c in self.critics() for v in c.trainable_variables]

    def user_parts(self, users) -> list:
        """``[u^1, ..., u^K]``: the user's content blocks (content backbones; one split, whose
        gradient is one concat), or ``W_k x_a``."""
        if self.content:
            return tf.split(users, 1 + len(self.modalities), axis=1)[1:]
        return [tf.matmul(users, getattr(self, f"user_map_{k}"))
                for k in range(len(self.modalities))]

    def fused(self, z_list):
        """The mean of the modalities, through the fusion MLP when there is one."""
        if self.fusion is not None:
            z_list = tf.split(self.fusion(tf.concat(z_list, axis=1)), len(z_list), axis=1)
        return tf.add_n(list(z_list)) / float(len(z_list))

    def add_terms(self, terms, step) -> None:
        out, config = step.out, self.config
        means, scales = ((out.z_means, out.z_scales) if out.z_means is not None
                         else self.backbone.projection_stats(step.items))
        kl_terms(terms, config, self.modalities, means, scales)
        unique_terms(terms, config, self, out.users, out.z_items, step.pos_rows, step.neg_rows)
        if not self.content:
            synergy_terms(terms, config, self, out.users, out.z_items, step.pos_rows,
                          step.neg_rows)
        redundancy_terms(terms, config, self, [z[:step.hsic_rows] for z in out.z_items],
                         self.step_seed(_SHUFFLE_SEED_OFFSET))

    def updates(self) -> list[OwnUpdate]:
        """The critics ascend the DV bound the encoders descend, recorded during the first
        update's forward pass (with the DV estimator and two or more modalities)."""
        if not self.critic_names:
            return []
        return [OwnUpdate("critic", self.critic_variables(),
                          lambda terms: -terms["redundancy_estimate"], during_first=True,
                          exclusive=True)]


def kl_terms(terms: Terms, config, modalities, means, scales) -> None:
    """``kl/<modality>``: the batch items' mean KL; ``kl``: ``mrdib_kl_weight`` times their sum."""
    for name, mean, scale in zip(modalities, means, scales):
        terms.batch_level(f"kl/{name}", tf.reduce_mean(losses.kl_standard_normal(mean, scale)))
    terms.weighted("kl", config.mrdib_kl_weight, [f"kl/{m}" for m in modalities])


def unique_terms(terms: Terms, config, head, users, z_items, pos_rows, neg_rows) -> None:
    """``unique/<modality>``: each modality's BPR alone; ``unique``: the weighted sum."""
    for name, part, z in zip(head.modalities, head.user_parts(users), z_items):
        terms.per_triplet(f"unique/{name}", losses.bpr_on_rows(
            part, z, pos_rows, neg_rows, batch_size=terms.share.batch_size))
    terms.weighted("unique", config.mrdib_unique_weight, [f"unique/{m}" for m in head.modalities])


def synergy_terms(terms: Terms, config, head, users, z_items, pos_rows, neg_rows) -> None:
    """On backbones whose scores do not read the modalities: the fused modalities' BPR."""
    terms.per_triplet("synergy_bpr", losses.bpr_on_rows(
        tf.matmul(users, head.user_map_fused), head.fused(z_items), pos_rows, neg_rows,
        batch_size=terms.share.batch_size))
    terms.weighted("synergy", config.mrdib_synergy_weight, "synergy_bpr")


def redundancy_terms(terms: Terms, config, head, z_items, seed) -> None:
    """The dependence between each pair of modalities over the same items, averaged over the
    pairs: ``redundancy_estimate`` (the DV bound in nats, which the critics' optimizer
    maximizes, or HSIC) and ``redundancy``, the weighted term the encoders minimize. Nothing
    with one modality."""
    if not head.pairs:
        return
    estimates = []
    for index, (a, b) in enumerate(head.pairs):
        za, zb = z_items[a], z_items[b]
        if head.estimator == "hsic":
            estimates.append(losses.hsic_rbf(za, zb, config.sigma2_fib))
            continue
        n = tf.shape(za)[0]
        permutation = tf.argsort(tf.random.stateless_uniform([n], seed=seed + index))
        scores = head.critics()[index].pair_scores(tf.math.l2_normalize(za, axis=1),
                                                   tf.math.l2_normalize(zb, axis=1),
                                                   [permutation])
        estimates.append(losses.donsker_varadhan(scores[0], scores[1]))
    terms.batch_level("redundancy_estimate", tf.add_n(estimates) / float(len(estimates)))
    terms.weighted("redundancy", config.mrdib_redundancy_weight, "redundancy_estimate")
