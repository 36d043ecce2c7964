"""The base Keras model shared by every recommender in the package."""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import keras

from ibmrec_tf import losses


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of every model; each model reads the fields it uses.

    Backbone fields:
      embedding_dim: size of the ID embeddings ``P``, ``Q`` and of each projected modality.
      n_layers: user-item propagation layers (LightGCN-based models).
      reg_weight: ``lambda`` of the L2 term on the batch's ego embeddings (Eq. 29).
      init_stddev: std of the normal initializer of the ID embeddings (paper: 0.01).
      knn_k: neighbours per item in each modality's kNN graph (LATTICE-based models).
      item_layers: item-item propagation layers (LATTICE-based models).
      projection_layers: hidden layers of each modality MLP (0 = one affine map).
      projection_activation: activation of those hidden layers.
      straightforward: training projects every item's features, even where only the batch's
        items are used (VBPR, IBMRec without GIB) or where the raw features can be propagated
        first (VLightGCN with an affine projection), and takes TensorFlow's own matmul
        gradient for the projection. Same values; slower. The reference for tests and the
        speed benchmark.

    Information-bottleneck fields (IBMRec):
      backbone: IBMRec's backbone (vbpr, vlightgcn, lattice, vlattice).
      fib, gib, second_stage: the feature-level IB, the graph-level IB and the second
        (InfoNCE) update: ``None`` = wherever the backbone supports it, ``True`` = required
        (an error where unsupported), ``False`` = off.
      hsic_items: distinct batch items the HSIC terms are computed on (0 = all of them).
      alpha, sigma2_fib: coefficient and RBF width of the FIB term (Eq. 22, 30).
      beta, sigma2_gib: coefficient and RBF width of the GIB term (Eq. 28, 30).
      tau: InfoNCE temperature (Eq. 31).
      mask_temperature: temperature of the RelaxedBernoulli edge samples.
      hard_mask: straight-through hard 0/1 edge samples instead of relaxed ones.
      masker_hidden: hidden units of the edge-masking MLP.
    """

    embedding_dim: int = 64
    n_layers: int = 2
    reg_weight: float = 1e-4
    init_stddev: float = 0.01
    knn_k: int = 10
    item_layers: int = 1
    projection_layers: int = 0
    projection_activation: str = "leaky_relu"
    straightforward: bool = False
    backbone: str = "vlattice"
    fib: bool | None = None
    gib: bool | None = None
    second_stage: bool | None = None
    hsic_items: int = 256
    alpha: float = 1.0
    sigma2_fib: float = 0.2
    beta: float = 0.5
    sigma2_gib: float = 0.25
    tau: float = 0.2
    mask_temperature: float = 0.5
    hard_mask: bool = False
    masker_hidden: int = 8


class Recommender(keras.Model):
    """A recommender scored by inner products of final user and item representations.

    Subclasses implement :meth:`forward`; the base class provides the BPR + L2 loss dict
    (:meth:`compute_losses`), a one-optimizer :meth:`train_step`, scoring and the final
    embeddings used for evaluation and export. Models with more update phases override
    :meth:`train_step` and :meth:`create_optimizers`.
    """

    #: whether the model needs item features
    multimodal = False

    def __init__(self, num_users: int, num_items: int, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.config = config
        self._optimizers: dict[str, keras.optimizers.Optimizer] = {}

    def build(self, input_shape=None):
        # Every variable is created in __init__ (shapes come from the dataset).
        self.built = True

    # -- pieces for subclasses ----------------------------------------------------------------
    def _embedding(self, rows: int, name: str, dim: int | None = None):
        return self.add_weight(
            shape=(rows, dim or self.config.embedding_dim), name=name,
            initializer=keras.initializers.RandomNormal(stddev=self.config.init_stddev))

    # -- the model ----------------------------------------------------------------------------
    def forward(self, users=None, items=None, training=False) -> dict:
        """Final representations of the rows ``users`` and ``items`` (all rows when ``None``).

        Returns a dict with at least ``'users'`` ``[len(users), d]``, ``'items'``
        ``[len(items), d]`` and ``'user_ego'`` / ``'item_ego'``: the same rows' layer-0
        embeddings, which the L2 term regularizes. Gathering the batch's rows here, once, keeps
        the backward pass to one dense gradient per propagated matrix.
        """
        raise NotImplementedError

    def call(self, user_ids, training=False):
        """Scores ``[batch, num_items]`` of ``user_ids`` for every item."""
        out = self.forward(training=training)
        return tf.matmul(tf.gather(out["users"], user_ids), out["items"], transpose_b=True)

    def final_embeddings(self):
        """``(users [num_users, d], items [num_items, d])`` at inference (no sampling)."""
        out = self.forward(training=False)
        return out["users"], out["items"]

    # -- training -----------------------------------------------------------------------------
    def batch_items(self, batch):
        """The batch's distinct items and, for positives and negatives, their row among them."""
        both = tf.concat([batch["pos"], batch["neg"]], axis=0)
        unique, index = tf.unique(both)
        size = tf.shape(batch["pos"])[0]
        return unique, index[:size], index[size:]

    def compute_losses(self, batch, training=True) -> dict:
        """Named loss terms for one batch; ``'loss'`` is their weighted sum (Eq. 29)."""
        items, pos_rows, neg_rows = self.batch_items(batch)
        out = self.forward(users=batch["user"], items=items, training=training)
        return self._bpr_terms(batch, out, pos_rows, neg_rows)

    def _bpr_terms(self, batch, out, pos_rows, neg_rows) -> dict:
        users = out["users"]
        pos = tf.gather(out["items"], pos_rows)
        neg = tf.gather(out["items"], neg_rows)
        bpr = losses.bpr_loss(tf.reduce_sum(users * pos, 1), tf.reduce_sum(users * neg, 1))
        reg = self.config.reg_weight * losses.l2_loss(
            [out["user_ego"], tf.gather(out["item_ego"], pos_rows),
             tf.gather(out["item_ego"], neg_rows)], tf.shape(batch["user"])[0])
        return {"loss": bpr + reg, "bpr": bpr, "reg": reg}

    def create_optimizers(self, learning_rate: float) -> dict:
        """Creates and builds the optimizers (name -> optimizer) this model trains with."""
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        optimizer.build(self.trainable_variables)
        self._optimizers = {"main": optimizer}
        return self._optimizers

    @property
    def optimizers(self) -> dict:
        return self._optimizers

    def train_step(self, batch):
        with tf.GradientTape() as tape:
            terms = self.compute_losses(batch, training=True)
        variables = self.trainable_variables
        grads = tape.gradient(terms["loss"], variables)
        self._optimizers["main"].apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None])
        return terms

    def get_config(self):
        return {"num_users": self.num_users, "num_items": self.num_items,
                "config": dataclasses.asdict(self.config), "name": self.name}


def rows_of(matrix, rows):
    """``matrix[rows]``, or all of ``matrix`` when ``rows`` is None."""
    return tf.convert_to_tensor(matrix) if rows is None else tf.gather(matrix, rows)


def node_rows(num_users: int, num_items: int, users=None, items=None):
    """Row ids of ``users`` and ``items`` in a stacked ``[users; items]`` node matrix."""
    users = tf.range(num_users) if users is None else users
    items = tf.range(num_items) if items is None else items
    return users, items + num_users


