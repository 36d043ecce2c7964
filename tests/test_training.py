"""The training loop: early stopping on validation, atomic checkpoints, exact resumption."""

import dataclasses
import json
import os

import numpy as np
import pytest
import keras

from ibmrec_tf.data import make_synthetic
from ibmrec_tf.models import ModelConfig, build_model
from ibmrec_tf.training import LATEST, NumericalError, TrainConfig, Trainer


@pytest.fixture(scope="module")
def small():
    return make_synthetic(seed=2, num_users=100, num_items=70, interactions_per_user=8,
                          modality_dims={"image": 12, "text": 10})


def _trainer(small, model_dir, name, epochs, **config):
    keras.utils.set_random_seed(7)
    model = build_model(name, small, ModelConfig(embedding_dim=8, knn_k=4, **config))
    return Trainer(model, small, TrainConfig(epochs=epochs, batch_size=128, learning_rate=5e-3,
                                             patience=50, seed=3, verbose=0), str(model_dir))


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
    with np.load(tmp_path / "n" / "checkpoints" / LATEST) as state:
        assert json.loads(state["trainer_state"].tobytes().decode())["epoch"] == 3
