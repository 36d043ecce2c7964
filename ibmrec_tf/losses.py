"""Loss functions, all pure functions of tensors (the one losses module of the project).

* :func:`bpr_loss`: ``mean(-log sigmoid(r_ai - r_aj))`` (Eq. 16e, 29).
* :func:`l2_loss`: ``(1/2) sum ||theta||^2 / batch_size`` on the batch's embeddings (Eq. 29).
* :func:`hsic_rbf`: the biased HSIC estimator ``(n-1)^-2 tr(K_X H K_Y H)`` with RBF kernels
  (Eq. 2-3), the feature- and graph-level bottleneck terms (Eq. 22, 28).
* :func:`info_nce`: in-batch InfoNCE with cosine similarity and temperature (Eq. 20, 31).
* :func:`kl_standard_normal`: ``KL(N(mu, diag sigma^2) || N(0, I))`` per row (MRdIB's
  compression term).
* :func:`donsker_varadhan`: the Donsker-Varadhan lower bound of mutual information from a
  critic's scores (MRdIB's redundancy estimator).
"""

from __future__ import annotations

import tensorflow as tf


def bpr_loss(positive_scores, negative_scores, batch_size=None):
    """``mean(-log sigmoid(pos - neg))``, computed stably as ``softplus(neg - pos)``.

    With ``batch_size``, the sum divided by it instead of the mean (a replica's share of a
    larger batch's mean).
    """
    terms = tf.nn.softplus(negative_scores - positive_scores)
    if batch_size is None:
        return tf.reduce_mean(terms)
    return tf.reduce_sum(terms) / tf.cast(batch_size, terms.dtype)


def bpr_on_rows(users, items, pos_rows, neg_rows, batch_size=None):
    """:func:`bpr_loss` of ``<users, items[pos_rows]>`` against ``<users, items[neg_rows]>``
    (row-wise inner products; ``users`` and the gathered rows are paired by position)."""
    return bpr_loss(tf.reduce_sum(users * tf.gather(items, pos_rows), 1),
                    tf.reduce_sum(users * tf.gather(items, neg_rows), 1), batch_size=batch_size)


def l2_loss(tensors, batch_size):
    """``(1/2) * sum_t ||t||_F^2 / batch_size`` (LightGCN's regularizer on ego embeddings)."""
    total = tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors])
    return 0.5 * total / tf.cast(batch_size, total.dtype)


def rbf_kernel(x, sigma2):
    """``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` (Eq. 3) for the rows of ``x``."""
    sq_norms = tf.reduce_sum(tf.square(x), axis=1)
    sq_dist = sq_norms[:, None] + sq_norms[None, :] - 2.0 * tf.matmul(x, x, transpose_b=True)
    sq_dist = tf.maximum(sq_dist, 0.0)
    return tf.exp(-sq_dist / (2.0 * sigma2))


def hsic_rbf(x, y, sigma2_x, sigma2_y=None, *, normalize=True):
    """HSIC between paired samples ``x[i] <-> y[i]`` with RBF kernels (Eq. 2-3).

    ``HSIC(X, Y) = (n-1)^-2 tr(K_X H K_Y H)`` with ``H = I - (1/n) 1 1^T``, computed as
    ``sum((H K_X H) * K_Y) / (n-1)^2`` in ``O(n^2 (d + 1))`` without forming ``H``.

    Args:
      x: ``[n, d_x]`` samples.
      y: ``[n, d_y]`` samples paired with ``x`` row by row.
      sigma2_x: kernel width ``sigma^2`` for ``x``.
      sigma2_y: kernel width for ``y`` (defaults to ``sigma2_x``).
      normalize: scale each row to unit L2 norm before the kernel. This makes the estimate
        invariant to the scale of the inputs, so that raw features of any magnitude and
        dimension share one meaningful ``sigma^2``, and so that a model cannot lower the
        penalty by shrinking its representation towards zero (every kernel entry would tend
        to 1 and HSIC to 0 without removing any information).

    Returns:
      A scalar, ``>= 0`` up to rounding; 0 when either kernel is constant.
    """
    if sigma2_y is None:
        sigma2_y = sigma2_x
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    if normalize:
        x = tf.math.l2_normalize(x, axis=1, epsilon=1e-12)
        y = tf.math.l2_normalize(y, axis=1, epsilon=1e-12)
    n = tf.cast(tf.shape(x)[0], tf.float32)
    k_x = rbf_kernel(x, sigma2_x)
    k_y = rbf_kernel(y, sigma2_y)
    centered = (k_x - tf.reduce_mean(k_x, axis=0, keepdims=True)
                - tf.reduce_mean(k_x, axis=1, keepdims=True) + tf.reduce_mean(k_x))
    return tf.reduce_sum(centered * k_y) / tf.square(n - 1.0)


def info_nce(anchors, candidates, temperature, labels=None):
    """In-batch InfoNCE (Eq. 31): anchor ``a`` should match candidate ``labels[a]``.

    ``-(1/N) sum_a log( exp(cos(c_a, z_{l_a})/tau) / sum_j exp(cos(c_a, z_j)/tau) )`` where
    ``j`` runs over all rows of ``candidates`` (the batch's items). ``labels`` defaults to
    ``0 .. N-1`` (candidate ``a`` belongs to anchor ``a``).
    """
    anchors = tf.math.l2_normalize(anchors, axis=1, epsilon=1e-12)
    candidates = tf.math.l2_normalize(candidates, axis=1, epsilon=1e-12)
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    if labels is None:
        labels = tf.range(tf.shape(logits)[0])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def kl_standard_normal(mean, scale):
    """``KL(N(mean, diag(scale^2)) || N(0, I))`` of each row: ``[n]``.

    ``0.5 * sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)``, summed over the dimensions.
    """
    variance = tf.square(scale)
    return 0.5 * tf.reduce_sum(tf.square(mean) + variance - 1.0
                               - tf.math.log(tf.maximum(variance, 1e-30)), axis=1)


def donsker_varadhan(joint_scores, marginal_scores):
    """``E_joint[T] - log E_marginal[exp T]``, a lower bound of ``I(X; Y)`` in nats.

    ``joint_scores``: a critic's ``T(x_i, y_i)`` on paired samples; ``marginal_scores``: its
    scores on pairs from the product of the marginals (``y`` shuffled), any shape. The bound is
    tight at ``T = log p(x, y) / (p(x) p(y)) + c``; its gradient in the critic is biased by the
    mini-batch estimate of the log-mean-exp (as MINE's is without its moving average).
    """
    marginal = tf.reshape(marginal_scores, [-1])
    count = tf.cast(tf.size(marginal), marginal.dtype)
    return tf.reduce_mean(joint_scores) - (tf.reduce_logsumexp(marginal) - tf.math.log(count))
