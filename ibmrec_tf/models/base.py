"""The base Keras model shared by every recommender in the package, and the pieces every
model's step uses: the typed forward result (:class:`ForwardResult`), the step's seeds and
counter (:class:`StepSeeds`) and the named loss terms with their replica shares
(:class:`Terms`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import keras

from ibmrec_tf import losses
from ibmrec_tf.config import ModelConfig  # noqa: F401  (re-exported)
from ibmrec_tf.optimizers import FusedAdam


class Recommender(keras.Model):
    """A recommender scored by inner products of final user and item representations.

    Subclasses implement :meth:`forward`; the base class provides the BPR + L2 loss dict
    (:meth:`compute_losses`), a one-optimizer :meth:`train_step`, scoring and the final
    embeddings used for evaluation and export. Models with more update phases override
    :meth:`train_step` and :meth:`create_optimizers`.
    """

    #: whether the model needs item features
    multimodal = False

    #: The :class:`ModelConfig` fields every model reads; a model adds its own in
    #: :meth:`settings_read`, and a field no part of the chosen model reads must stay at its
    #: default (:func:`ibmrec_tf.models.check_settings`).
    SETTINGS: tuple[str, ...] = ("embedding_dim", "reg_weight", "init_stddev", "precision")

    @classmethod
    def settings_read(cls, config: ModelConfig) -> frozenset[str]:
        """The settings (``ModelConfig`` field names) this model reads under ``config``."""
        return frozenset(cls.SETTINGS)

    @classmethod
    def search_space(cls, config: ModelConfig) -> dict:
        """What a hyper-parameter search varies for this model: the learning rate and every
        setting it reads under ``config`` that :data:`ibmrec_tf.tuning.RANGES` has a range
        for (``{field: Range | Choice}``). A model may override it to narrow or widen its own."""
        from ibmrec_tf import tuning

        read = cls.settings_read(config)
        return {name: tuning.RANGES[name]
                for name in (*tuning.TRAINING, *sorted(read)) if name in tuning.RANGES}

    def __init__(self, num_users: int, num_items: int, config: ModelConfig, *, seed: int = 0,
                 seeds: "StepSeeds | None" = None, **kwargs):
        """``seed``: the seed of the model's stateless samples (edge masks, projection noise,
        the HSIC sample); ``seeds``: a :class:`StepSeeds` to share instead (a backbone built by
        a model that wraps it reads its wrapper's). The initial weights follow Keras's global
        seed (``keras.utils.set_random_seed``, which :func:`ibmrec_tf.run` sets)."""
        super().__init__(**kwargs)
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        self.config = config
        self.seeds = seeds if seeds is not None else StepSeeds(seed, name="seeds")
        self._optimizers: dict[str, keras.optimizers.Optimizer] = {}

    @property
    def score_dtype(self) -> str:
        """The dtype evaluation scores in: float32 under every precision policy, as the exported
        SavedModel does (it stores the final embeddings in float32 and ranks their float32
        products), so the epoch selected on validation and ``metrics.json`` are the served
        model's. The final embeddings themselves are computed in the policy's compute dtype."""
        return "float32"

    def step_seed(self, offset: int = 0):
        """``[2]`` int32 seed of this step's stateless samples (see :class:`StepSeeds`)."""
        return self.seeds.step_seed(offset)

    def build(self, input_shape=None):
        # Every variable is created in __init__ (shapes come from the dataset).
        self.built = True

    # -- pieces for subclasses ----------------------------------------------------------------
    def _embedding(self, rows: int, name: str, dim: int | None = None):
        return self.add_weight(
            shape=(rows, dim or self.config.embedding_dim), name=name,
            initializer=keras.initializers.RandomNormal(stddev=self.config.init_stddev))

    # -- the model ----------------------------------------------------------------------------
    def forward(self, users=None, items=None, training=False) -> "ForwardResult":
        """Final representations of the rows ``users`` and ``items`` (all rows when ``None``),
        as a :class:`ForwardResult`. Gathering the batch's rows here, once, keeps the backward
        pass to one dense gradient per propagated matrix.
        """
        raise NotImplementedError

    def call(self, user_ids, training=False):
        """Scores ``[batch, num_items]`` of ``user_ids`` for every item."""
        out = self.forward(training=training)
        return tf.matmul(tf.gather(out.users, user_ids), out.items, transpose_b=True)

    def final_embeddings(self):
        """``(users [num_users, d], items [num_items, d])`` at inference (no sampling)."""
        out = self.forward(training=False)
        return out.users, out.items

    # -- training -----------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int, seed: int) -> None:
        """Called by the trainer before every epoch (1-based) with the run's seed; models that
        change a structure between epochs (FREEDOM's pruned graph) draw it here, as a function
        of ``(seed, epoch)`` so that a resumed run draws the same."""

    def batch_items(self, batch):
        """The batch's distinct items and, for positives and negatives, their row among them."""
        both = tf.concat([batch["pos"], batch["neg"]], axis=0)
        unique, index = tf.unique(both)
        size = tf.shape(batch["pos"])[0]
        return unique, index[:size], index[size:]

    def compute_losses(self, batch, training=True) -> dict:
        """Named loss terms for one (global) batch; ``'loss'`` is their weighted sum (Eq. 29).

        Under a ``tf.distribute`` strategy each replica computes its share (see
        :func:`replica_share`): the per-triplet terms over its slice of the batch, divided by
        the global batch size, and the batch-level terms divided by the number of replicas, so
        that the shares (and their gradients, which the optimizer sums) add up to the one-replica
        values. Outside a strategy the share is the whole.
        """
        share, users, items, pos_rows, neg_rows = self.replica_batch(batch)
        out = self.forward(users=users, items=items, training=training)
        terms = Terms(share)
        self.add_bpr_terms(terms, out, pos_rows, neg_rows)
        return terms.as_dict()

    def replica_batch(self, batch):
        """``(share, users, items, pos_rows, neg_rows)``: this replica's share of ``batch``, its
        slice's users, the whole batch's distinct items, and the slice's positives and negatives
        as rows of those items."""
        items, pos_rows, neg_rows = self.batch_items(batch)
        share = replica_share(batch)
        return (share, tf.gather(batch["user"], share.rows), items,
                tf.gather(pos_rows, share.rows), tf.gather(neg_rows, share.rows))

    def add_bpr_terms(self, terms: "Terms", out: "ForwardResult", pos_rows, neg_rows) -> None:
        """BPR and L2 over the share's triplets, each divided by the global batch size."""
        batch_size = terms.share.batch_size
        terms.per_triplet("bpr", losses.bpr_on_rows(out.users, out.items, pos_rows, neg_rows,
                                                    batch_size=batch_size), loss=True)
        terms.per_triplet("reg", self.config.reg_weight * losses.l2_loss(
            self.regularized_rows(out, pos_rows, neg_rows), batch_size), loss=True)

    def regularized_rows(self, out: "ForwardResult", pos_rows, neg_rows) -> list:
        """What the L2 term reads: the share's users' and items' ego embeddings."""
        return [out.user_ego, tf.gather(out.item_ego, pos_rows), tf.gather(out.item_ego, neg_rows)]

    def new_optimizer(self, learning_rate: float, variables,
                      kind: str = "adam") -> keras.optimizers.Optimizer:
        """An optimizer built for ``variables``: ``'adam'`` (:class:`~ibmrec_tf.optimizers.FusedAdam`,
        Keras's Adam with the fused update kernel) or ``'sgd'`` (plain gradient descent); under
        ``mixed_float16`` wrapped in Keras's dynamic loss scaling (float16 gradients underflow
        without it). Under a ``tf.distribute`` strategy, call it in the strategy's scope."""
        if kind not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {kind!r}; choose adam or sgd")
        optimizer = (FusedAdam(learning_rate=learning_rate) if kind == "adam"
                     else keras.optimizers.SGD(learning_rate=learning_rate))
        if self.config.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(variables)
        return optimizer

    def create_optimizers(self, learning_rate: float, kind: str = "adam") -> dict:
        """Creates and builds the optimizers (name -> optimizer) this model trains with."""
        self._optimizers = {"main": self.new_optimizer(learning_rate, self.trainable_variables,
                                                       kind)}
        return self._optimizers

    @staticmethod
    def minimize(optimizer, tape, loss, variables, sources=None) -> None:
        """Applies ``optimizer`` to the gradient of ``loss`` (recorded on ``tape``) for
        ``variables``, scaled as the optimizer asks: the upstream gradient is
        ``scale_loss(1)``, the same as differentiating ``scale_loss(loss)`` (1 without loss
        scaling; a loss-scale optimizer unscales before it applies). ``sources``: what the tape
        watched for ``variables``, where that is not the Keras variables themselves (a tape
        that watches by hand watches their underlying ``tf.Variable``s)."""
        scale = optimizer.scale_loss(tf.ones_like(loss))
        grads = tape.gradient(loss, variables if sources is None else sources,
                              output_gradients=scale)
        # A variable of the group with no gradient path from the loss is a wiring error (a
        # term that never reads it), not something to skip over in silence.
        missing = [v.path for g, v in zip(grads, variables) if g is None]
        if missing:
            raise ValueError(f"no gradient reaches {missing} from the loss of the update that "
                             f"trains them: a term that should read them does not")
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            # Keras checks an IndexedSlices gradient's finiteness through a bool scatter that
            # has no GPU kernel (gpu_audit); FusedAdam adds it up densely in any case.
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                     for g in grads]
        optimizer.apply_gradients(list(zip(grads, variables)))

    @property
    def optimizers(self) -> dict:
        return self._optimizers

    def train_step(self, batch):
        with tf.GradientTape() as tape:
            terms = self.compute_losses(batch, training=True)
        self.minimize(self._optimizers["main"], tape, terms["loss"], self.trainable_variables)
        self.seeds.advance()
        return terms

    def get_config(self):
        """Not serializable by config: a recommender is built from a :class:`Dataset`.

        Its graphs and item features come from the data, not from hyper-parameters, so a
        config dict cannot rebuild it. Rebuild with ``build_model(name, dataset, config)`` and
        restore a checkpoint (``training.load_weights``), or serve the exported SavedModel.
        """
        raise NotImplementedError(
            f"{type(self).__name__} is built from a Dataset, not from a config dict: rebuild it "
            f"with ibmrec_tf.models.build_model(name, dataset, ModelConfig(...)) and restore a "
            f"checkpoint with ibmrec_tf.training.load_weights")


@dataclasses.dataclass
class ForwardResult:
    """What a forward pass gives, for the rows it was asked for (all rows when ``None``).

    Every model fills ``users``, ``items`` (the final representations that are scored) and
    ``user_ego`` / ``item_ego`` (the same rows' layer-0 embeddings, which the L2 term
    regularizes). The multimodal backbones add, where they have them:

    * ``item_base``: the items before the item-item term (equal to ``items`` without one);
    * ``item_ego_all``: every item's layer-0 embedding, which the item-item graph propagates;
    * ``z_items``: each modality's ``Z^k`` of the asked items, before the fusion MLP (samples
      in a stochastic training pass), for a backbone with a projection;
    * ``z_means`` / ``z_scales``: each modality's ``mu_k`` and ``sigma_k`` of the same items, in
      a stochastic training pass.
    """

    users: tf.Tensor
    items: tf.Tensor
    user_ego: tf.Tensor
    item_ego: tf.Tensor
    item_base: tf.Tensor | None = None
    item_ego_all: tf.Tensor | None = None
    z_items: list | None = None
    z_means: list | None = None
    z_scales: list | None = None


class StepSeeds(keras.layers.Layer):
    """A model's seed and step counter: its stateless samples are a pure function of both.

    ``seed``: the run's seed, turned into the ``sampling_seed`` variable; ``step``: the
    number of training steps taken, advanced by every ``train_step`` (checkpointed with the
    model, so a resumed run draws the same samples; the same on every replica).
    :meth:`step_seed` gives the ``[2]`` int32 seed ``(sampling_seed + offset, step)`` of one kind of sample (each
    kind has its own ``offset``, a prime).
    """

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        sampling_seed = int(np.random.default_rng([int(seed), 0x5EED5]).integers(0, 2**30))
        self.sampling_seed = self.add_weight(
            shape=(), dtype="int32", trainable=False, name="sampling_seed",
            initializer=keras.initializers.Constant(sampling_seed))
        self.step = self.add_weight(shape=(), dtype="int64", trainable=False, name="step",
                                    initializer="zeros", aggregation="only_first_replica")
        self.built = True

    def step_seed(self, offset: int = 0):
        return tf.stack([tf.convert_to_tensor(self.sampling_seed) + offset,
                         tf.cast(tf.convert_to_tensor(self.step), tf.int32)])

    def advance(self) -> None:
        self.step.assign_add(1)


class Terms:
    """The named terms of one batch's update, as this replica's share, and their sum ``loss``.

    The one place where a term is scaled for the replicas of a ``tf.distribute`` strategy:

    * :meth:`per_triplet`: a sum over this replica's triplets, already divided by the global
      batch size (BPR, L2, a per-modality BPR): recorded as it is;
    * :meth:`batch_level`: a value computed over the whole (global) batch (HSIC over its
      distinct items, InfoNCE with in-batch negatives, the DV bound, a reported mean): each
      replica records ``1 / replicas`` of it;
    * :meth:`weighted`: ``weight`` times recorded terms (already shares), added to the loss;
    * :meth:`report`: a value recorded as it is and never summed (a histogram).

    The replicas' shares (and their gradients, which the optimizer sums) add up to the
    one-replica values. :meth:`as_dict` gives the terms with ``'loss'``.
    """

    def __init__(self, share: "ReplicaShare"):
        self.share = share
        self.values: dict = {}
        self._loss = None

    def _record(self, name: str, value, loss: bool):
        if name in self.values or name == "loss":
            raise ValueError(f"loss term {name!r} recorded twice")
        self.values[name] = value
        if loss:
            self._loss = value if self._loss is None else self._loss + value
        return value

    def per_triplet(self, name: str, value, *, loss: bool = False):
        return self._record(name, value, loss)

    def batch_level(self, name: str, value, *, loss: bool = False):
        return self._record(name, value * self.share.scale, loss)

    def weighted(self, name: str, weight: float, of) -> None:
        """Records ``weight * sum(terms[n] for n in of)`` as ``name`` and adds it to the loss."""
        parts = [self.values[n] for n in ([of] if isinstance(of, str) else of)]
        return self._record(name, weight * tf.add_n(parts), True)

    def report(self, name: str, value) -> None:
        self._record(name, value, False)

    def __getitem__(self, name: str):
        return self.loss if name == "loss" else self.values[name]

    def __contains__(self, name: str) -> bool:
        return name == "loss" or name in self.values

    @property
    def loss(self):
        return self._loss if self._loss is not None else tf.constant(0.0)

    def as_dict(self) -> dict:
        return {"loss": self.loss, **self.values}


class ReplicaShare:
    """This replica's part of a global batch: its rows and the factor of batch-level terms.

    ``rows``: the replica's slice of the batch's triplets (all of them outside a strategy);
    ``batch_size``: the global batch size, which divides every per-triplet sum;
    ``scale``: ``1 / replicas``, which multiplies every term computed over the whole batch
    (HSIC over its distinct items, InfoNCE with in-batch negatives), so that the replicas'
    shares add up to the term.
    """

    def __init__(self, rows, batch_size, scale):
        self.rows = rows
        self.batch_size = batch_size
        self.scale = scale


def replica_share(batch) -> ReplicaShare:
    """The current replica's :class:`ReplicaShare` of ``batch`` (see ``compute_losses``)."""
    size = tf.shape(batch["user"])[0]
    context = tf.distribute.get_replica_context()
    count = 1 if context is None else context.num_replicas_in_sync
    if count == 1:
        return ReplicaShare(tf.range(size), size, 1.0)
    index = tf.cast(context.replica_id_in_sync_group, tf.int32)
    return ReplicaShare(tf.range(size * index // count, size * (index + 1) // count), size,
                        1.0 / count)


def rows_of(matrix, rows):
    """``matrix[rows]``, or all of ``matrix`` when ``rows`` is None."""
    return tf.convert_to_tensor(matrix) if rows is None else tf.gather(matrix, rows)


def node_rows(num_users: int, num_items: int, users=None, items=None):
    """Row ids of ``users`` and ``items`` in a stacked ``[users; items]`` node matrix."""
    users = tf.range(num_users) if users is None else users
    items = tf.range(num_items) if items is None else items
    return users, items + num_users


