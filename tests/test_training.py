"""The training loop: early stopping on validation, atomic checkpoints, exact resumption."""

import dataclasses
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import keras

from ibmrec_tf.data import make_synthetic
from ibmrec_tf.models import ModelConfig, build_model, without_unread
from ibmrec_tf.training import (LATEST, CheckpointError, NumericalError, TrainConfig, Trainer,
                                checkpointed_epoch, load_weights, untracked_variables)


@pytest.fixture(scope="module")
def small():
    return make_synthetic(seed=2, num_users=100, num_items=70, interactions_per_user=8,
                          modality_dims={"image": 12, "text": 10})


def _trainer(small, model_dir, name, epochs, **config):
    keras.utils.set_random_seed(7)
    model = build_model(name, small, without_unread(name, ModelConfig(embedding_dim=8, knn_k=4,
                                                                      **config)))
    return Trainer(model, small, TrainConfig(epochs=epochs, batch_size=128, learning_rate=5e-3,
                                             patience=50, seed=3, verbose=0), str(model_dir))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lightgcn", "ibmrec"])
def test_resumed_run_equals_uninterrupted_run(small, tmp_path, name):
    straight = _trainer(small, tmp_path / "a", name, 4).fit()
    _trainer(small, tmp_path / "b", name, 2).fit()
    # A new process would rebuild the model from scratch (fresh initial weights) and resume.
    resumed = _trainer(small, tmp_path / "b", name, 4).fit(resume=True)
    assert resumed.epochs_run == 4
    for a, b in zip(straight.history, resumed.history):
        for key in a:
            if key.startswith(("valid/", "train/")):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    assert resumed.test["recall@20"] == pytest.approx(straight.test["recall@20"], abs=1e-7)


def test_early_stopping_restores_best_epoch(small, tmp_path):
    trainer = _trainer(small, tmp_path / "m", "bprmf", 200)
    trainer.config = dataclasses.replace(trainer.config, patience=2)
    result = trainer.fit()
    assert result.stopped_early and result.epochs_run == result.best_epoch + 2
    best = max(h["valid/recall@20"] for h in result.history)
    assert result.valid["recall@20"] == pytest.approx(best, abs=1e-9)
    assert os.path.exists(tmp_path / "m" / "checkpoints" / LATEST)
    assert not [f for f in os.listdir(tmp_path / "m" / "checkpoints") if ".tmp" in f]


def test_nan_loss_stops_with_named_term(small, tmp_path):
    trainer = _trainer(small, tmp_path / "n", "bprmf", 3)
    trainer.fit()
    trainer.model.user_embedding.assign(np.full(trainer.model.user_embedding.shape, np.nan, np.float32))
    trainer.config = dataclasses.replace(trainer.config, epochs=5)
    with pytest.raises(NumericalError, match=r"loss term '(loss|bpr|reg)' is nan at epoch 4, step 1"):
        trainer.fit()
    assert checkpointed_epoch(str(tmp_path / "n")) == 3


def test_step_terms_are_accumulated_on_device_and_first_bad_step_named(small, tmp_path):
    """The epoch's mean of each term, and the first non-finite term's name and step (1-based)."""
    trainer = _trainer(small, tmp_path / "acc", "bprmf", 1)
    steps = trainer.sampler.steps_per_epoch(trainer.config.batch_size)
    counter = tf.Variable(0.0)

    def fake_step(batch):  # step i (1-based) gives loss i, reg 2 i; 'bpr' turns inf at step 3
        counter.assign_add(1.0)
        bpr = tf.where(tf.equal(counter, 3.0), tf.constant(np.inf), counter * 0.5)
        return {"loss": counter * 1.0, "reg": counter * 2.0, "bpr": bpr}

    trainer.model.train_step = fake_step
    trainer.config = dataclasses.replace(trainer.config, log_every=1000)
    with pytest.raises(NumericalError, match=r"loss term 'bpr' is inf at epoch 1, step 3$"):
        trainer._run_epoch(1)
    counter.assign(-100.0)  # never 3 again: a finite epoch
    means = trainer._run_epoch(2)
    values = np.arange(-99.0, -99.0 + steps)
    assert means["loss"] == pytest.approx(values.mean())
    assert means["reg"] == pytest.approx(2 * values.mean())
    assert means["bpr"] == pytest.approx(0.5 * values.mean())


def test_the_step_is_traced_once_for_every_batch_size(small, tmp_path):
    """A short last batch and a second epoch reuse the first trace (each trace of IBMRec's step
    costs seconds)."""
    trainer = _trainer(small, tmp_path / "once", "ibmrec", 2)
    sizes = {len(b["user"]) for b in trainer.sampler.epoch_dataset(1, trainer.config.batch_size)}
    assert len(sizes) == 2  # a full and a short batch
    trainer.fit()
    assert trainer._step.experimental_get_tracing_count() == 1


ALL_MODELS = [("bprmf", {}), ("lightgcn", {}), ("vbpr", {}), ("vlightgcn", {}), ("lattice", {}),
              ("vlattice", {}), ("vlattice", {"projection_layers": 1})] + [
    ("ibmrec", {"backbone": b}) for b in ("vbpr", "vlightgcn", "lattice", "vlattice")] + [
    ("ibmrec", {"backbone": "vlattice", "projection_layers": 1})] + [
    ("freedom", {}), ("ibmrec", {"backbone": "freedom"}),
    ("mgcn", {}), ("ibmrec_mrdib", {"backbone": "mgcn"}),
    ("mrdib", {"backbone": "vbpr"}), ("mrdib", {"backbone": "lattice", "mrdib_fusion_mlp": True}),
    ("ibmrec_mrdib", {"backbone": "vlattice", "mrdib_fusion_mlp": True})]


@pytest.mark.parametrize("name, extra", ALL_MODELS, ids=lambda x: str(x))
def test_every_variable_round_trips_through_a_checkpoint_by_name(small, tmp_path, name, extra):
    config = without_unread(name, ModelConfig(embedding_dim=8, knn_k=4, **extra))
    keras.utils.set_random_seed(1)
    source = build_model(name, small, config)
    source.create_optimizers(1e-3)
    rng = np.random.default_rng(0)
    for v in source.variables:
        v.assign(rng.normal(size=v.shape).astype(v.dtype) if v.dtype != "int32"
                 else rng.integers(0, 1000, size=v.shape).astype(np.int32))
    path = tf.train.Checkpoint(model=source).write(str(tmp_path / "ckpt"))
    keras.utils.set_random_seed(2)
    target = build_model(name, small, config)
    load_weights(target, path)
    by_path = {v.path: v for v in target.variables}
    assert len(by_path) == len(target.variables) == len(source.variables)
    for v in source.variables:
        np.testing.assert_array_equal(by_path[v.path].numpy(), v.numpy(), err_msg=v.path)
    saved = {key for key, _ in tf.train.list_variables(path) if key.startswith("model/")}
    assert len(saved) == len(source.variables)


def test_variables_are_matched_by_path_not_creation_order(tmp_path):
    """P and Q of the same shape (as many users as items), created in the other order."""
    from ibmrec_tf.models import BPRMF

    square = make_synthetic(seed=4, num_users=60, num_items=60, interactions_per_user=6)

    class ItemsFirst(BPRMF):
        def __init__(self, dataset, config, **kwargs):
            super(BPRMF, self).__init__(dataset.num_users, dataset.num_items, config, **kwargs)
            self.item_embedding = self._embedding(self.num_items, "Q")
            self.user_embedding = self._embedding(self.num_users, "P")

    config = ModelConfig(embedding_dim=4)
    source = BPRMF(square, config, name="bprmf")
    path = tf.train.Checkpoint(model=source).write(str(tmp_path / "ckpt"))
    target = ItemsFirst(square, config, name="bprmf")
    assert [v.shape for v in target.variables] == [v.shape for v in source.variables]
    load_weights(target, path)
    np.testing.assert_array_equal(target.user_embedding.numpy(), source.user_embedding.numpy())
    np.testing.assert_array_equal(target.item_embedding.numpy(), source.item_embedding.numpy())


@pytest.mark.slow
def test_optimizer_slots_restore_with_their_variables(small, tmp_path):
    a = _trainer(small, tmp_path / "opt", "ibmrec", 1)
    a.fit()
    b = _trainer(small, tmp_path / "opt", "ibmrec", 1)
    assert b.resume()
    for name, opt in a.model.optimizers.items():
        restored = {v.name: v for v in b.model.optimizers[name].variables}
        assert len(restored) == len(opt.variables)
        for v in opt.variables:  # 'iteration', 'vlattice_P_momentum', ...
            np.testing.assert_array_equal(restored[v.name].numpy(), v.numpy(), err_msg=v.name)


def test_a_layer_in_a_plain_list_is_refused(small, tmp_path):
    """Keras 3 leaves such a layer out of tf.train.Checkpoint: the trainer must not save without it."""
    model = build_model("bprmf", small, ModelConfig(embedding_dim=4))
    hidden = keras.layers.Dense(3)
    hidden.build((None, 4))
    model.extra_layers = [hidden]  # tracked by Keras, invisible to tf.train.Checkpoint
    assert untracked_variables(model) == [v.path for v in hidden.variables]
    with pytest.raises(CheckpointError, match="not tracked for checkpoints"):
        Trainer(model, small, TrainConfig(epochs=1, verbose=0), str(tmp_path / "list"))


def test_old_npz_model_dir_is_one_clear_error(small, tmp_path):
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    (tmp_path / "old" / "checkpoints" / "latest.npz").write_bytes(b"")
    model = build_model("bprmf", small, ModelConfig(embedding_dim=4))
    with pytest.raises(CheckpointError, match=r"latest.npz: a checkpoint of the old .npz format"):
        Trainer(model, small, TrainConfig(epochs=1, verbose=0), str(tmp_path / "old"))


def test_profile_steps_write_a_tensorboard_profile(small, tmp_path):
    from ibmrec_tf.config import ConfigError

    model = build_model("bprmf", small, ModelConfig(embedding_dim=4))
    lines = []
    Trainer(model, small, TrainConfig(epochs=1, batch_size=64, profile_steps=(2, 3), seed=0),
            str(tmp_path / "p"), echo=lines.append).fit()
    traces = [f for _, _, files in os.walk(tmp_path / "p" / "logs" / "profile") for f in files]
    assert any(f.endswith(".xplane.pb") for f in traces), traces
    assert any("profile of steps 2-3" in line for line in lines)
    for bad in ((3, 2), (0, 1), (1, 2, 3)):
        with pytest.raises(ConfigError, match="profile_steps"):
            TrainConfig(profile_steps=bad)


def test_a_resume_from_another_dir_outlives_that_dir(small, tmp_path):
    """A non-chief worker resumes from the chief's checkpoints, which the chief then replaces.
    Everything the resumed state needs is read at resume time, so a later save in the worker's
    own directory does not go back to the chief's (by then deleted) files."""
    _trainer(small, tmp_path / "chief", "bprmf", 2).fit()
    keras.utils.set_random_seed(7)
    model = build_model("bprmf", small, without_unread("bprmf", ModelConfig(embedding_dim=8)))
    worker = Trainer(model, small, TrainConfig(epochs=3, batch_size=128, learning_rate=5e-3,
                                               patience=50, seed=3, verbose=0),
                     str(tmp_path / "worker"), restore_dir=str(tmp_path / "chief" / "checkpoints"),
                     write_logs=False)
    assert worker.resume()

    shutil.rmtree(tmp_path / "chief")
    result = worker.fit(resume=False)
    assert result.epochs_run == 3 and checkpointed_epoch(str(tmp_path / "worker")) == 3
