"""Denoisers as plug-ins on the multimodal backbones: IBMRec, MRdIB, and both together.

One model, :class:`DenoisedRecommender`, wraps a backbone (``config.backbone``: VBPR,
VLightGCN, LATTICE, VLATTICE, FREEDOM or MGCN) and the denoisers named by its class:

| model (``--model``) | denoisers |
|---|---|
| ``ibmrec`` (:class:`IBMRec`) | IBMRec (:mod:`ibmrec_tf.models.ibmrec`) |
| ``mrdib`` (:class:`MRdIB`) | MRdIB (:mod:`ibmrec_tf.models.mrdib`) |
| ``ibmrec_mrdib`` (:class:`IBMRecMRdIB`) | both |

Each denoiser is a part (:class:`~ibmrec_tf.models.parts.Denoiser`, a Keras layer in its own
module) that plugs in at four points, the whole interface (:mod:`ibmrec_tf.models.parts`):

1. **The backbone's build options**, OR-ed over the parts. IBMRec's GIB needs the modality
   projection for its masker; MRdIB makes the projection stochastic and may add the fusion
   MLP (see :mod:`ibmrec_tf.models.multimodal`).
2. **The forward pass.** GIB passes an edge scale (the sampled mask) for the item-item graph;
   MRdIB's noise is drawn inside the backbone's projection from this model's step seed.
3. **Terms of the first update** ``L1`` on every trainable variable but those of the
   parts' exclusive updates: the backbone's BPR, L2 and own terms, then each part's, in the order
   of :attr:`DenoisedRecommender.denoisers` (FIB and GIB, then MRdIB's KL, unique, synergy
   and redundancy terms). Every term is also reported (TensorBoard ``train/<term>``).
4. **Updates of their own**, each with its own optimizer over a declared variable group,
   checked at :meth:`DenoisedRecommender.create_optimizers`: IBMRec's second update (InfoNCE on
   ``C`` and the projection) and MRdIB's critics (maximizing the Donsker-Varadhan bound,
   recorded by one more tape during the first update's forward pass, which watches only the
   critics).

This model loops over its parts and never names one.

With both, the projection that FIB ties to the raw features is MRdIB's stochastic one (its
samples in training), GIB's masker reads the samples, and the second update reads the means.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from ibmrec_tf.data import Dataset
from ibmrec_tf.models.base import ModelConfig, Recommender, Terms
from ibmrec_tf.models.freedom import FREEDOM
from ibmrec_tf.models.ibmrec import IBMRecDenoiser
from ibmrec_tf.models.mgcn import MGCN
from ibmrec_tf.models.mrdib import MRdIBDenoiser
from ibmrec_tf.models.multimodal import BACKBONES as _MULTIMODAL
from ibmrec_tf.models.multimodal import BackboneOptions, ForwardInputs
from ibmrec_tf.models.parts import Denoiser, OwnUpdate, StepContext

BACKBONES = {**_MULTIMODAL, "freedom": FREEDOM, "mgcn": MGCN}
#: the denoisers a model may name by key in :attr:`DenoisedRecommender.denoisers`
DENOISERS = {"ibmrec": IBMRecDenoiser, "mrdib": MRdIBDenoiser}
#: offset of the HSIC sample's seed among a step's stateless samples (a prime, as the others)
_HSIC_SAMPLE_SEED_OFFSET = 15485863


def _backbone_class(config: ModelConfig) -> type:
    if config.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {config.backbone!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[config.backbone]


class DenoisedRecommender(Recommender):
    """A backbone with the denoisers of :attr:`denoisers` (see the module docstring)."""

    multimodal = True
    #: the denoisers this model plugs in: :class:`~ibmrec_tf.models.parts.Denoiser` subclasses
    #: or keys of :data:`DENOISERS`, in the order their terms are added
    denoisers: tuple = ()

    @classmethod
    def denoiser_classes(cls) -> list[type[Denoiser]]:
        return [DENOISERS[d] if isinstance(d, str) else d for d in cls.denoisers]

    @classmethod
    def settings_read(cls, config: ModelConfig) -> frozenset[str]:
        """The backbone's settings (and its projection's where a denoiser asks for one), then
        each denoiser's, as far as its terms apply on that backbone."""
        backbone = _backbone_class(config)
        parts = cls.denoiser_classes()
        options = cls.backbone_options(config)
        projection = backbone.projects_modalities() or options.projection
        read = set(backbone.settings_read(config, projection=projection)) | {"backbone"}
        for part in parts:
            read |= part.settings_read(config, backbone)
        return frozenset(read)

    @classmethod
    def backbone_options(cls, config: ModelConfig) -> BackboneOptions:
        backbone = _backbone_class(config)
        options = BackboneOptions()
        for part in cls.denoiser_classes():
            options = options | part.backbone_options(config, backbone)
        return options

    def __init__(self, dataset: Dataset, config: ModelConfig, **kwargs):
        super().__init__(dataset.num_users, dataset.num_items, config, **kwargs)
        cls = _backbone_class(config)
        self.backbone = cls(dataset, config, options=self.backbone_options(config),
                            seeds=self.seeds, name=config.backbone)
        self.modalities = self.backbone.modalities
        # Each part is an attribute under its key (a list of layers would not be tracked).
        self.part_keys = []
        for part_cls in self.denoiser_classes():
            if not part_cls.key or part_cls.key in self.part_keys or hasattr(self, part_cls.key):
                raise ValueError(f"denoiser {part_cls.__name__} needs a key of its own, not "
                                 f"{part_cls.key!r}")
            setattr(self, part_cls.key, part_cls(backbone=self.backbone, config=config,
                                                 seeds=self.seeds, name=part_cls.key))
            self.part_keys.append(part_cls.key)
        self.uses_hsic_sample = any(type(p).uses_hsic_sample(config, cls) for p in self.parts)
        self._updates: list[OwnUpdate] | None = None

    @property
    def parts(self) -> list[Denoiser]:
        """The denoisers, in the order of :attr:`denoisers`."""
        return [getattr(self, key) for key in self.part_keys]

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
    def own_updates(self) -> list[OwnUpdate]:
        """Every part's updates of its own, in the order of the parts."""
        if self._updates is None:
            self._updates = [u for part in self.parts for u in part.updates()]
        return self._updates

    def update_variables(self, name: str) -> list:
        """The variable group of the update ``name`` (``'main'``: the first update's)."""
        if name == "main":
            return self.main_variables()
        for update in self.own_updates():
            if update.name == name:
                return list(update.variables)
        raise KeyError(f"no update {name!r}; this model has main and "
                       f"{[u.name for u in self.own_updates()]}")

    def main_variables(self) -> list:
        """The first update's variables: every trainable variable but those of the exclusive
        updates (MRdIB's critics)."""
        own = {id(v) for u in self.own_updates() if u.exclusive for v in u.variables}
        return [v for v in self.trainable_variables if id(v) not in own]

    def create_optimizers(self, learning_rate: float, kind: str = "adam") -> dict:
        """One optimizer for the first update and one per part's update, each built for its
        declared group. A group that holds a variable that is not trainable, one it excludes,
        or one of another update's group is a ``ValueError`` naming the update."""
        main_vars = self.main_variables()
        self._optimizers = {"main": self.new_optimizer(learning_rate, main_vars, kind)}
        allowed = {id(v) for v in self.trainable_variables}
        claimed: dict[int, str] = {}
        for update in self.own_updates():
            ids = {id(v) for v in update.variables}
            problem = None
            if not update.variables:
                problem = "holds no variable"
            elif not ids <= allowed:
                problem = "holds a variable that is not trainable in this model"
            elif ids & {id(v) for v in update.excludes}:
                problem = "holds a variable it excludes"
            elif ids & set(claimed):
                problem = f"overlaps the group of update {claimed[next(iter(ids & set(claimed)))]!r}"
            elif update.name in self._optimizers:
                problem = "has the name of another update"
            if problem:
                raise ValueError(f"the variable group of update {update.name!r} {problem}")
            claimed.update({i: update.name for i in ids})
            self._optimizers[update.name] = self.new_optimizer(learning_rate, update.variables,
                                                               kind)
        return self._optimizers

    # -- the forward pass ---------------------------------------------------------------------
    def _forward(self, users, items, training):
        inputs = ForwardInputs()
        for part in self.parts:
            part.forward_inputs(inputs, training)
        return self.backbone.forward(users=users, items=items, training=training,
                                     inputs=inputs), inputs

    def forward(self, users=None, items=None, training=False):
        return self._forward(users, items, training)[0]

    # -- losses and updates -------------------------------------------------------------------
    def compute_losses(self, batch, training=True) -> dict:
        """The backbone's terms plus every part's first-update terms, as this replica's share
        (:class:`~ibmrec_tf.models.base.Terms`: the HSIC and DV terms are defined over the
        whole batch's distinct items, so every replica computes them over the global batch and
        contributes ``1 / replicas`` of each)."""
        share, users, items, pos_rows, neg_rows = self.replica_batch(batch)
        if self.uses_hsic_sample:
            items, pos_rows, neg_rows = self.hsic_sample(items, pos_rows, neg_rows)
        out, inputs = self._forward(users, items, training)
        terms = Terms(share)
        self.backbone.add_terms(terms, out, pos_rows, neg_rows, batch)
        hsic_rows = (tf.shape(items)[0] if self.config.hsic_items <= 0 else
                     tf.minimum(tf.shape(items)[0], self.config.hsic_items))
        step = StepContext(batch=batch, share=share, users=users, items=items,
                           pos_rows=pos_rows, neg_rows=neg_rows, hsic_rows=hsic_rows, out=out,
                           inputs=inputs, training=training)
        for part in self.parts:
            part.add_terms(terms, step)
        return terms.as_dict()

    def train_step(self, batch):
        updates = self.own_updates()
        during = [u for u in updates if u.during_first]
        # tape.watch takes the Keras variables' underlying tf.Variables.
        watched = [[getattr(v, "value", v) for v in u.variables] for u in during]
        tapes = [tf.GradientTape(watch_accessed_variables=False) for _ in during]
        with tf.GradientTape() as tape, contextlib.ExitStack() as stack:
            for own_tape, sources in zip(tapes, watched):
                stack.enter_context(own_tape)
                own_tape.watch(sources)
            terms = self.compute_losses(batch, training=True)
            during_losses = [u.loss(terms) for u in during]
        # The first update: L1 on every variable but those of the exclusive updates.
        self.minimize(self._optimizers["main"], tape, terms["loss"], self.main_variables())
        for update, own_tape, loss, sources in zip(during, tapes, during_losses, watched):
            self.minimize(self._optimizers[update.name], own_tape, loss, update.variables,
                          sources=sources)
        for update in updates:
            if update.during_first:
                continue
            with tf.GradientTape() as own_tape:
                loss = update.loss(batch)
            self.minimize(self._optimizers[update.name], own_tape, loss, update.variables)
            terms[update.report or update.name] = loss
        self.seeds.advance()
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
