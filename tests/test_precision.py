"""--precision: reduced precision for the dense projection and scoring products only."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from ibmrec_tf.data import TripletSampler, make_synthetic
from ibmrec_tf.evaluation import Evaluator
from ibmrec_tf.models import ModelConfig, build_model, without_unread
from ibmrec_tf.training import TrainConfig, Trainer


pytestmark = pytest.mark.slow  # subprocesses and trainings: CI runs them, -m "not slow" does not


@pytest.fixture(scope="module")
def data():
    return make_synthetic(seed=2, num_users=300, num_items=200, interactions_per_user=10,
                          modality_dims={"image": 32, "text": 16})


def _fit(data, tmp_path, name, precision):
    keras.utils.set_random_seed(7)
    model = build_model(name, data, without_unread(name, ModelConfig(
        embedding_dim=16, knn_k=5, precision=precision)))
    config = TrainConfig(epochs=3, batch_size=256, learning_rate=5e-3, patience=50, seed=3,
                         verbose=0)
    return model, Trainer(model, data, config, str(tmp_path / f"{name}-{precision}")).fit()


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_runs_train_within_tolerance_of_float32(data, tmp_path, precision):
    """Measured on this data: every epoch's loss within 0.1% of float32, valid Recall@20 within
    0.007; the bounds below leave room for other CPUs' rounding."""
    _, reference = _fit(data, tmp_path, "ibmrec", "float32")
    model, mixed = _fit(data, tmp_path, "ibmrec", precision)
    assert model.backbone.projection.compute_dtype == precision.split("_")[1]
    if precision == "mixed_float16":
        assert isinstance(model.optimizers["main"], keras.optimizers.LossScaleOptimizer)
    for a, b in zip(reference.history, mixed.history):
        for key in ("train/loss", "train/bpr", "train/hsic_fib", "train/hsic_gib", "train/infonce"):
            assert b[key] == pytest.approx(a[key], rel=1e-2), key
    assert mixed.valid["recall@20"] == pytest.approx(reference.valid["recall@20"], abs=0.03)
    assert mixed.test["recall@20"] == pytest.approx(reference.test["recall@20"], abs=0.03)
    # The reported metrics are the exported SavedModel's: evaluated from its float32 scores.
    from ibmrec_tf import export
    users, items = model.final_embeddings()
    path = export.export_saved_model(str(tmp_path / f"sm-{precision}"), users.numpy(),
                                     items.numpy(), data.interaction_matrix("train"), top_k=10)
    served = Evaluator(data, "test").evaluate(*export.load_embeddings(path))
    assert served == mixed.test


def test_only_the_dense_products_change_dtype(data):
    model = build_model("ibmrec", data, ModelConfig(embedding_dim=8, knn_k=4,
                                                    precision="mixed_bfloat16"))
    model.create_optimizers(1e-3)
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert [m.dtype for m in model.backbone.item_content.projection_inputs] == [tf.bfloat16, tf.bfloat16]
    assert [m.dtype for m in model.backbone.raw_features] == [tf.float32, tf.float32]  # HSIC
    batch = next(iter(TripletSampler(data, 0).epoch_dataset(1, 128)))
    terms = model.compute_losses(batch)
    assert all(t.dtype == tf.float32 for t in terms.values())
    users, items = model.final_embeddings()
    assert users.dtype == items.dtype == tf.float32
    assert model.score_dtype == "float32"  # evaluation ranks as the SavedModel does


def test_evaluator_scores_in_reduced_precision_rank_alike(data):
    rng = np.random.default_rng(0)
    users = rng.normal(size=(data.num_users, 16)).astype(np.float32)
    items = rng.normal(size=(data.num_items, 16)).astype(np.float32)
    full = Evaluator(data, "test").evaluate(users, items)
    half = Evaluator(data, "test", score_dtype="bfloat16").evaluate(users, items)
    assert half["recall@20"] == pytest.approx(full["recall@20"], abs=0.02)
