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
(VBPR, VLightGCN, VLATTICE, FREEDOM); GIB needs the item-item graph (LATTICE, VLATTICE,
FREEDOM); the second update needs the user content embeddings ``C`` (VBPR, VLightGCN,
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
from ibmrec_tf.models.base import replica_share


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
        return hard + keep - tf.stop_gradient(keep)  # straight-through
    return relaxed_bernoulli_sample(keep_logits, config.mask_temperature, seed)


def fib_terms(config, z_items, raw_items, share) -> dict:
    """``alpha * sum_k HSIC(Z^k, M^k)`` over the HSIC items (Eq. 22): ``z_items`` and
    ``raw_items`` are each modality's ``Z^k`` and ``M^k`` of the same items."""
    hsic = tf.add_n([losses.hsic_rbf(z, m, config.sigma2_fib) for z, m in zip(z_items, raw_items)])
    terms = {"hsic_fib": hsic * share.scale}
    terms["fib"] = config.alpha * terms["hsic_fib"]
    return terms


def gib_terms(config, masked_items, original_items, keep, share) -> dict:
    """``beta * HSIC(Y', Y)`` between the HSIC items on the masked and the unmasked graph
    (Eq. 28), and the mean keep probability."""
    terms = {"hsic_gib": losses.hsic_rbf(masked_items, original_items, config.sigma2_gib)
             * share.scale}
    terms["gib"] = config.beta * terms["hsic_gib"]
    terms["edge_keep_prob"] = tf.reduce_mean(keep) * share.scale
    terms["hist/edge_keep_prob"] = keep
    return terms


def second_stage_loss(backbone, batch, tau):
    """InfoNCE between ``c_a`` and ``z_i`` of the batch's (user, positive) pairs (Eq. 31).

    The candidates are the batch's distinct positive items, so an item that is the positive
    of several pairs is never a negative for any of them; ``z_i`` is the projection's output
    (its mean, for a stochastic projection). Over the whole (global) batch; under a strategy
    each replica returns ``1 / replicas`` of it.
    """
    items, labels = tf.unique(batch["pos"])
    user_content = tf.gather(backbone.user_content, batch["user"])
    z_items = tf.concat(backbone.projection([tf.gather(m, items) for m in backbone.raw_features]),
                        axis=1)
    return losses.info_nce(user_content, z_items, tau, labels=labels) * replica_share(batch).scale
