"""Every op that training, evaluation and serving run has a GPU kernel for its dtypes.

No GPU is needed: TensorFlow's wheel registers its GPU kernels on any machine, and
``ibmrec_tf.gpu_audit`` checks each traced op against them. An op without one would be placed on
the host in silence and copy its tensors across the bus at every step.
"""

import numpy as np
import pytest
import tensorflow as tf

from ibmrec_tf.data import make_synthetic
from ibmrec_tf.evaluation import Evaluator
from ibmrec_tf.export import export_saved_model
from ibmrec_tf.gpu_audit import host_only_ops
from ibmrec_tf.models import ModelConfig, build_model, without_unread
from ibmrec_tf.training import TrainConfig, Trainer
from tests.conftest import model_cases


def test_the_audit_names_an_op_without_a_gpu_kernel_and_passes_one_with():
    # UniqueV2 (tf.unique with an axis) and AsString have CPU kernels only; Unique with int64
    # ids and a float32 MatMul have GPU kernels.
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int64)])
    def host_bound(x):
        return tf.raw_ops.UniqueV2(x=x, axis=[0]).y, tf.strings.as_string(x)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([3, 3], tf.float32)])
    def device_bound(ids, m):
        return tf.unique(ids).y, tf.matmul(m, m)

    found = host_only_ops(host_bound)
    assert any(op.startswith("UniqueV2(") for op in found), found
    assert any(op.startswith("AsString(") and "T=int64" in op for op in found), found
    assert host_only_ops(device_bound) == []
    # The dtype matters: ArgMin has GPU kernels for floats and bool, none for int32.
    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def argmin_int(x):
        return tf.argmin(x, output_type=tf.int64)

    assert host_only_ops(argmin_int) == ["ArgMin(T=int32, Tidx=int32, output_type=int64)"]
    assert host_only_ops(tf.function(lambda x: tf.argmin(x), input_signature=[
        tf.TensorSpec([None], tf.float32)])) == []


def _trained_step_and_inference(small, tmp_path, name, backbone, precision):
    settings = dict(embedding_dim=8, knn_k=4, mrdib_fusion_mlp=True, precision=precision)
    if backbone:
        settings["backbone"] = backbone
    model = build_model(name, small, without_unread(name, ModelConfig(**settings)))
    trainer = Trainer(model, small, TrainConfig(epochs=1, batch_size=64, verbose=0),
                      str(tmp_path), write_logs=False)
    trainer.run_step(next(iter(trainer.sampler.epoch_dataset(1, 64))), 1)
    inference = tf.function(model.final_embeddings, autograph=False).get_concrete_function()
    return trainer._step, inference  # the step as the trainer compiled and ran it


@pytest.mark.parametrize("name,backbone", list(model_cases()))
def test_every_models_training_step_and_inference_have_gpu_kernels(small, tmp_path, name,
                                                                   backbone):
    step, inference = _trained_step_and_inference(small, tmp_path, name, backbone, "float32")
    assert host_only_ops(step) == [], (name, backbone)
    assert host_only_ops(inference) == [], (name, backbone)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name,backbone", [(n, b) for n, b in model_cases()
                                           if b in (None, "vlightgcn", "vlattice", "freedom")])
def test_mixed_precision_steps_have_gpu_kernels(small, tmp_path, name, backbone, precision):
    # mixed_float16 wraps the optimizers in loss scaling, whose finiteness check of a sparse
    # gradient is a bool scatter without a GPU kernel unless the gradient is made dense first.
    step, inference = _trained_step_and_inference(small, tmp_path, name, backbone, precision)
    assert host_only_ops(step) == [], (name, backbone, precision)
    assert host_only_ops(inference) == [], (name, backbone, precision)


@pytest.mark.parametrize("num_items,ks", [(60, (10, 20)), (300, (1, 2))])
def test_the_evaluator_and_the_saved_model_have_gpu_kernels(tmp_path, num_items, ks):
    data = make_synthetic(seed=0, num_users=40, num_items=num_items, interactions_per_user=8,
                          modality_dims={"image": 12})
    evaluator = Evaluator(data, "valid", ks=ks)
    assert (evaluator._padding is not None) == (num_items == 300)  # both ranking paths
    users, items = tf.zeros([data.num_users, 8]), evaluator._padded_items(tf.zeros([num_items, 8]))
    ids, mask = evaluator._batches[0]
    assert host_only_ops(evaluator._batch_top_k.get_concrete_function(users, items, ids, mask)) == []

    path = export_saved_model(str(tmp_path / "export"), np.zeros((data.num_users, 8), np.float32),
                              np.zeros((num_items, 8), np.float32),
                              data.interaction_matrix("train"), top_k=5)
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) >= {"serving_default"}
    assert host_only_ops(*loaded.signatures.values()) == []
