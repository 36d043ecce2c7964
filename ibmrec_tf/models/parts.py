"""The denoiser interface: what a plug-in (IBMRec, MRdIB, or one of your own) declares.

A denoiser is a Keras layer (as a TF Recommenders task is: it owns its weights and its terms)
that :class:`~ibmrec_tf.models.denoised.DenoisedRecommender` builds on a backbone and calls at
four points, without naming it:

1. :meth:`Denoiser.backbone_options` (a class method): what it asks of the backbone's build
   (:class:`~ibmrec_tf.models.multimodal.BackboneOptions`: a projection, a stochastic one, a
   fusion MLP);
2. :meth:`Denoiser.forward_inputs`: what it adds to the forward pass before the backbone runs
   (:class:`~ibmrec_tf.models.multimodal.ForwardInputs`: every item's ``Z``, a factor on the
   item-item edges, its own values for step 3);
3. :meth:`Denoiser.add_terms`: its terms of the first update, recorded into the step's
   :class:`~ibmrec_tf.models.base.Terms` (which scales batch-level terms for the replicas);
4. :meth:`Denoiser.updates`: updates of its own, each an :class:`OwnUpdate` with its optimizer
   and declared variable group, checked when the optimizers are created.

Besides, it declares the settings it reads (:meth:`Denoiser.settings_read`) and whether its
terms read the batch's HSIC sample (:meth:`Denoiser.uses_hsic_sample`). What it may read of
the backbone is the forward result (:class:`~ibmrec_tf.models.base.ForwardResult`) and the
surface listed in :data:`~ibmrec_tf.models.multimodal.DENOISER_SURFACE`.

Adding one: subclass :class:`Denoiser` in a module of its own and name it in a model's
``denoisers``::

    class CenteredItems(Denoiser):
        key = "centered"

        def add_terms(self, terms, step):
            mean = tf.reduce_mean(step.out.items[:step.hsic_rows], axis=0)
            terms.batch_level("centered", tf.reduce_sum(mean ** 2), loss=True)

    class CenteredModel(DenoisedRecommender):
        denoisers = (CenteredItems,)

``tests/test_parts.py`` trains such a denoiser, defined only in the test, on two backbones.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras

from ibmrec_tf.models.base import ForwardResult, ModelConfig, ReplicaShare, StepSeeds, Terms
from ibmrec_tf.models.multimodal import BackboneOptions, ForwardInputs


@dataclasses.dataclass
class StepContext:
    """What a denoiser's :meth:`~Denoiser.add_terms` reads of one training (or loss) pass.

    ``users``: this replica's users; ``items``: the whole batch's distinct items (in a seeded
    random order when a denoiser uses the HSIC sample); ``pos_rows`` / ``neg_rows``: this
    replica's positives and negatives as rows of ``items``; ``hsic_rows``: how many of the
    first ``items`` form the HSIC sample (a uniform sample of the batch's distinct items);
    ``out``: the backbone's forward result for ``users`` and ``items``; ``inputs``: what the
    denoisers passed into it; ``share``: this replica's part of the batch.
    """

    batch: dict
    share: ReplicaShare
    users: object
    items: object
    pos_rows: object
    neg_rows: object
    hsic_rows: object
    out: ForwardResult
    inputs: ForwardInputs
    training: bool


@dataclasses.dataclass
class OwnUpdate:
    """An update of a denoiser's own, with its optimizer (named ``name``) over ``variables``.

    ``loss``: for an update after the first (``during_first=False``), a function of the batch
    giving this replica's share of the loss (use :class:`~ibmrec_tf.models.base.Terms` for
    batch-level values), reported as ``name`` unless ``report`` names it otherwise; for one
    recorded during the first update's forward pass (``during_first=True``), a function of the
    first update's terms (the critic ascending the bound: ``-terms['redundancy_estimate']``).
    ``exclusive``: the variables are trained by this update alone, left out of the first
    update's group (MRdIB's critics); otherwise the first update trains them too (IBMRec's
    second update on ``C`` and the projection). ``excludes``: variables the group must not
    hold (checked). Groups of different updates may not overlap.
    """

    name: str
    variables: list
    loss: Callable
    during_first: bool = False
    exclusive: bool = False
    excludes: list = dataclasses.field(default_factory=list)
    report: str | None = None


class Denoiser(keras.layers.Layer):
    """A plug-in denoiser (see the module docstring). Subclasses set :attr:`key` and override
    what they use; every default adds nothing."""

    #: the denoiser's name: its attribute on the model and its name in messages
    key: str = ""

    @classmethod
    def settings_read(cls, config: ModelConfig, backbone: type) -> frozenset[str]:
        """The ``ModelConfig`` fields this denoiser reads on ``backbone`` (a backbone class)."""
        return frozenset()

    @classmethod
    def backbone_options(cls, config: ModelConfig, backbone: type) -> BackboneOptions:
        return BackboneOptions()

    @classmethod
    def uses_hsic_sample(cls, config: ModelConfig, backbone: type) -> bool:
        """Whether :meth:`add_terms` reads the HSIC sample (``step.items[:step.hsic_rows]``)."""
        return False

    def __init__(self, *, backbone, config: ModelConfig, seeds: StepSeeds, **kwargs):
        """``backbone``: the built backbone; ``seeds``: the model's :class:`StepSeeds`, for
        stateless samples that are a pure function of ``(seed, step)``."""
        super().__init__(name=kwargs.pop("name", self.key), **kwargs)
        # Plain attributes, not tracked: the backbone and the seeds belong to the model.
        object.__setattr__(self, "_backbone_ref", backbone)
        object.__setattr__(self, "_seeds_ref", seeds)
        self.config = config
        self.built = True

    @property
    def backbone(self):
        return self._backbone_ref

    def step_seed(self, offset: int):
        """``[2]`` int32 seed of one kind of this step's samples (``offset``: a prime)."""
        return self._seeds_ref.step_seed(offset)

    def forward_inputs(self, inputs: ForwardInputs, training: bool) -> None:
        """Adds to ``inputs`` before the backbone's forward pass (default: nothing)."""

    def add_terms(self, terms: Terms, step: StepContext) -> None:
        """Records this denoiser's terms of the first update into ``terms``."""

    def updates(self) -> list[OwnUpdate]:
        """The updates of its own (default: none)."""
        return []
