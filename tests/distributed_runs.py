"""Runs one model on one replica and on several (N mirrored CPU replicas, or the workers of
TF_CONFIG) and compares them. A subprocess of tests/test_distribute.py: splitting the CPU into
logical devices, or joining a cluster, must precede every TensorFlow op.

    python -m tests.distributed_runs --cases=ibmrec:sgd,ibmrec:adam --replicas=2 --steps=4 --epochs=2
    TF_CONFIG=... python -m tests.distributed_runs --strategy=multi_worker --cases=...   # each worker

For each model:optimizer case (model:optimizer:updates compares the updates only), prints one
JSON line: the largest relative difference of any
variable's update after --steps steps, and the valid/test Recall@20 and NDCG@20 and the epoch
losses of both after --epochs epochs of the Trainer (0: not compared).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="lightgcn:adam")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--strategy", default="mirrored", choices=["mirrored", "multi_worker"])
    args = parser.parse_args()

    import tensorflow as tf

    if args.strategy == "multi_worker":
        distributed = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas)
        distributed = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(args.replicas)])
    from ibmrec_tf.data import make_synthetic
    from ibmrec_tf.models import ModelConfig
    from ibmrec_tf.training import TrainConfig

    data = make_synthetic(seed=2, num_users=120, num_items=80, interactions_per_user=8,
                          modality_dims={"image": 16, "text": 12})
    model_config = ModelConfig(embedding_dim=8, knn_k=4, n_layers=2, hsic_items=64)
    # An odd batch size: the replicas' slices differ in size, and the last batch is shorter.
    train_config = TrainConfig(epochs=max(args.epochs, 1), batch_size=101, learning_rate=1e-2,
                               patience=50, seed=3, verbose=0)
    strategies = {"one": None, "distributed": distributed}
    if args.strategy == "multi_worker" and json.loads(os.environ["TF_CONFIG"])["task"]["index"]:
        del strategies["one"]  # the comparison is made on worker 0; the others only take part

    for case in args.cases.split(","):
        model_name, optimizer, *only = case.split(":")  # ':updates': no epoch comparison
        result = compare(data, model_config, train_config.replace(optimizer=optimizer),
                         strategies, model_name, args, epochs=0 if only == ["updates"] else None)
        print(json.dumps({**result, "case": case}), flush=True)


def compare(data, model_config, train_config, strategies, model_name, args, epochs=None) -> dict:
    import numpy as np
    import tensorflow as tf
    import keras

    from ibmrec_tf.data import TripletSampler
    from ibmrec_tf.models import build_model, without_unread
    from ibmrec_tf.training import Trainer

    def build(strategy):
        keras.utils.set_random_seed(11)
        scope = strategy.scope() if strategy else tf.distribute.get_strategy().scope()
        with scope:
            return build_model(model_name, data, without_unread(model_name, model_config))

    epochs = args.epochs if epochs is None else epochs
    out = {"case": f"{model_name}:{train_config.optimizer}",
           "replicas": strategies["distributed"].num_replicas_in_sync}
    weights = {}
    batches = list(TripletSampler(data, 0).epoch_dataset(1, train_config.batch_size))
    for name, strategy in strategies.items():
        model = build(strategy)
        trainer = Trainer(model, data, train_config, tempfile.mkdtemp(), strategy=strategy,
                          write_logs=False)
        for i, batch in enumerate(batches[:args.steps]):
            trainer.run_step(batch, i + 1)
        weights[name] = {v.path: v.numpy() for v in model.variables}
        backbone = getattr(model, "backbone", model)
        if name == "distributed" and hasattr(backbone, "item_content"):
            out["projection_sharded"] = backbone.item_content.sharded
        graph = getattr(backbone, "ui_graph", None) or getattr(backbone, "user_item_graph", None)
        if name == "distributed" and graph is not None:  # each replica reads its own copy
            out["graph_devices"] = graph._operands.devices
    # Compared on each variable's update (after - before): ||update_R - update_1|| / ||update_1||
    # (Frobenius norms). A missing 1/R or a wrong slice changes an update by a factor; rounding
    # (sums in another order) by ~1e-6 of it.
    if "one" not in strategies:  # a worker that only takes part
        for name, strategy in strategies.items() if epochs and train_config.optimizer == "adam" else ():
            Trainer(build(strategy), data, train_config, tempfile.mkdtemp(), strategy=strategy,
                    write_logs=False).fit()
        return out
    initial = {v.path: v.numpy() for v in build(None).variables}
    worst, moved = 0.0, 0.0
    # A variable whose gradient is 0 in exact arithmetic (a bias that cancels out of a
    # difference of scores) moves by rounding only; its relative difference says nothing.
    largest = max(float(np.linalg.norm(weights["one"][p] - b)) for p, b in initial.items())
    for path, before in initial.items():
        one = (weights["one"][path] - before).astype(np.float64)
        mirrored = (weights["distributed"][path] - before).astype(np.float64)
        size = float(np.linalg.norm(one))
        moved = max(moved, float(np.abs(one).max()))
        if size <= 1e-6 * largest and np.linalg.norm(mirrored) <= 1e-6 * largest:
            continue
        if size > 0:
            difference = float(np.linalg.norm(one - mirrored)) / size
            if difference > worst:
                worst, out["worst_variable"] = difference, path
        elif np.abs(mirrored).max() > 0:
            worst, out["worst_variable"] = float("inf"), path
    out["max_relative_difference"] = worst
    out["largest_update"] = moved
    # The metrics after --epochs epochs, with Adam (the SGD runs check the updates above).
    for name, strategy in strategies.items() if epochs and train_config.optimizer == "adam" else ():
        model = build(strategy)
        result = Trainer(model, data, train_config, tempfile.mkdtemp(), strategy=strategy,
                         write_logs=False).fit()
        out[name] = {f"{split}/{k}": getattr(result, split)[k] for split in ("valid", "test")
                     for k in ("recall@20", "ndcg@20")}
        out[name]["loss"] = [h["train/loss"] for h in result.history]
    return out


if __name__ == "__main__":
    main()
