"""The denoiser interface: a denoiser defined here, in the test alone, trains on two backbones;
every trainable variable of every model gets a nonzero gradient from the update that owns it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ibmrec_tf.data import TripletSampler
from ibmrec_tf.models import (BackboneOptions, DenoisedRecommender, Denoiser, ModelConfig,
                              OwnUpdate, build_model, without_unread)
from ibmrec_tf.models.denoised import BACKBONES
from ibmrec_tf.models.multimodal import DENOISER_SURFACE
from ibmrec_tf.training import TrainConfig, Trainer
from tests.conftest import model_cases


class CenteredContent(Denoiser):
    """A toy denoiser: pulls the mean of the HSIC sample's ``Z^k`` towards 0, scales the
    item-item edges by a constant (which the symmetric normalization undoes), and trains a
    scalar of its own by an update of its own."""

    key = "centered"

    @classmethod
    def backbone_options(cls, config, backbone):
        return BackboneOptions(projection=True)

    @classmethod
    def uses_hsic_sample(cls, config, backbone):
        return True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.target = self.add_weight(shape=(), initializer="zeros", name="target")

    def forward_inputs(self, inputs, training):
        if self.backbone.item_item_graph:
            width = int(self.backbone.knn_neighbors.shape[1])
            inputs.scale_edges(tf.fill([self.backbone.num_items, width], 3.0))
        inputs.extras[self.key] = "seen"

    def add_terms(self, terms, step):
        assert step.inputs.extras[self.key] == "seen"
        sample = [z[:step.hsic_rows] for z in step.out.z_items]
        terms.batch_level("center", tf.add_n([tf.reduce_sum(tf.reduce_mean(z, axis=0) ** 2)
                                              for z in sample]))
        terms.weighted("centered", 0.5, "center")

    def updates(self):
        return [OwnUpdate("target", [self.target], lambda batch: (self.target - 1.0) ** 2,
                          exclusive=True, excludes=[self.backbone.item_embedding])]


class CenteredModel(DenoisedRecommender):
    denoisers = (CenteredContent,)


class UnreadProjection(CenteredContent):
    """Asks for a projection on backbones without one, and never reads it."""

    key = "unread"

    def add_terms(self, terms, step):
        pass


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["vbpr", "lattice"])
def test_a_denoiser_defined_in_a_test_trains_on_two_backbones(small, tmp_path, backbone):
    keras.utils.set_random_seed(0)
    config = ModelConfig(embedding_dim=8, knn_k=4, backbone=backbone)
    model = CenteredModel(small, config, seed=0, name="centered")
    assert model.parts == [model.centered]
    assert model.backbone.projection is not None  # asked for on LATTICE, which has none
    # The edge scale reached the backbone and the normalization undid it.
    alone, with_part = model.backbone.forward().items, model.forward().items
    np.testing.assert_allclose(with_part.numpy(), alone.numpy(), rtol=1e-5, atol=1e-7)

    batch = next(iter(TripletSampler(small, 0).epoch_dataset(1, 128)))
    model.create_optimizers(1e-2)
    terms = model.compute_losses(batch)
    own = ["bpr", "reg", "centered"]
    assert float(terms["loss"]) == pytest.approx(sum(float(terms[k]) for k in own), rel=1e-6)
    assert float(terms["centered"]) == pytest.approx(0.5 * float(terms["center"]), rel=1e-6)

    result = Trainer(model, small, TrainConfig(epochs=2, batch_size=128, verbose=0, seed=0),
                     str(tmp_path / backbone)).fit()
    steps = int(model.seeds.step)
    assert steps == 2 * -(-len(small.train) // 128)
    assert int(model.optimizers["target"].iterations) == steps
    assert 0.0 < float(model.centered.target) < 1.0
    assert all(np.isfinite(h["train/centered"]) and np.isfinite(h["train/target"])
               for h in result.history)
    assert result.history[-1]["train/target"] < result.history[0]["train/target"]


def test_an_update_group_that_overlaps_what_it_excludes_is_refused(small):
    class Greedy(CenteredContent):
        key = "greedy"

        def updates(self):
            return [OwnUpdate("greedy", [self.target, self.backbone.item_embedding],
                              lambda batch: self.target ** 2,
                              excludes=[self.backbone.item_embedding])]

    class GreedyModel(DenoisedRecommender):
        denoisers = (Greedy,)

    model = GreedyModel(small, ModelConfig(embedding_dim=8, backbone="vbpr"), name="greedy")
    with pytest.raises(ValueError, match="update 'greedy' holds a variable it excludes"):
        model.create_optimizers(1e-2)


def test_a_variable_no_term_reads_is_an_error_naming_it(small):
    class UnreadModel(DenoisedRecommender):
        denoisers = (UnreadProjection,)

    model = UnreadModel(small, ModelConfig(embedding_dim=8, knn_k=4, backbone="lattice"),
                        name="unread")
    model.create_optimizers(1e-2)
    batch = next(iter(TripletSampler(small, 0).epoch_dataset(1, 64)))
    with pytest.raises(ValueError, match="no gradient reaches .*projection"):
        model.train_step(batch)


def test_every_backbone_offers_the_denoiser_surface(small):
    for name, cls in BACKBONES.items():
        model = cls(small, ModelConfig(embedding_dim=8, knn_k=4), name=name)
        for attribute in DENOISER_SURFACE:
            optional = {"user_content": cls.content, "knn_table": cls.item_item_graph,
                        "modality_logits": cls.item_item_graph and cls.learned_fusion,
                        "projection": cls.projects_modalities()}
            if optional.get(attribute, True):
                assert getattr(model, attribute, None) is not None, (name, attribute)


@pytest.mark.parametrize("name,backbone", list(model_cases()))
def test_every_variable_gets_a_nonzero_gradient_from_its_update(small, name, backbone):
    """After two steps (the fusion MLP's output starts at zero, so its hidden layer's first
    gradient is zero), the gradient of every update's loss is nonzero on each variable of its
    group, and the groups cover every trainable variable."""
    keras.utils.set_random_seed(0)
    settings = dict(embedding_dim=8, knn_k=4, mrdib_fusion_mlp=True)
    if backbone:
        settings["backbone"] = backbone
    model = build_model(name, small, without_unread(name, ModelConfig(**settings)))
    model.create_optimizers(1e-2)
    batches = iter(TripletSampler(small, 0).epoch_dataset(1, 128))
    for _ in range(2):
        model.train_step(next(batches))
    batch = next(batches)
    updates = model.own_updates() if isinstance(model, DenoisedRecommender) else []
    groups = {"main": (model.main_variables() if updates else model.trainable_variables,
                       lambda terms: terms["loss"])}
    for update in updates:
        groups[update.name] = (update.variables, update.loss if update.during_first else None)
    owned = {id(v) for variables, _ in groups.values() for v in variables}
    assert owned == {id(v) for v in model.trainable_variables}
    for update, (variables, of_terms) in groups.items():
        with tf.GradientTape() as tape:
            if of_terms is not None:
                loss = of_terms(model.compute_losses(batch, training=True))
            else:
                loss = next(u for u in updates if u.name == update).loss(batch)
        grads = tape.gradient(loss, variables)
        for variable, grad in zip(variables, grads):
            assert grad is not None, (update, variable.path)
            size = float(tf.reduce_max(tf.abs(tf.convert_to_tensor(grad))))
            assert size > 0, (update, variable.path)
