"""The floor of a training step: the products it cannot avoid, each timed alone."""

from __future__ import annotations

import statistics
import time

from runners import common

CONTENT_MODELS = ("vbpr", "vlightgcn", "vlattice")
GRAPH_MODELS = ("lightgcn", "vlightgcn", "lattice", "vlattice", "freedom", "mgcn")


DENOISED_MODELS = ("ibmrec", "mrdib", "ibmrec_mrdib")


def floor_parts(model: str, backbone: str, straightforward: bool) -> tuple[bool, bool, bool]:
    """``(content, user-item graph, projects every item each step)`` of a model configuration."""
    name = backbone if model in DENOISED_MODELS else model
    content = name in CONTENT_MODELS
    item_item = name in ("lattice", "vlattice", "freedom", "mgcn")
    # Every item's Z each step: the LATTICE-based models with content, IBMRec with GIB (its
    # masker reads every item's Z), MRdIB on a propagating content backbone (sampled Z cannot
    # be propagated from the raw features), or any content model in the straightforward
    # formulation; MGCN, whose purifier gates every item's ID embedding by its Z.
    all_items = ((item_item and (content or model in ("ibmrec", "ibmrec_mrdib")))
                 or name == "mgcn"
                 or (content and straightforward)
                 or (content and name != "vbpr" and model in ("mrdib", "ibmrec_mrdib")))
    return content, name in GRAPH_MODELS, all_items


def step_floor(data, model: str, extra: list[str], repeats: int = 5) -> dict[str, float]:
    """Seconds per training step of the products a step of ``model`` cannot avoid, each timed
    alone (median of ``repeats`` after one untimed) at the run's shapes in this process:

    * the user-item propagation: ``n_layers`` CSR products forward and as many backward, at the
      width the model propagates (``d`` for ID embeddings, ``d (1 + K)`` with K modalities);
    * for models that project every item each step: each modality's ``M W`` over all items and
      its kernel gradient ``(dZ^T M)^T``;
    * MGCN: the users' modality views ``R [H^1 .. H^K]``, forward and backward.

    Everything else a step does (gathers, the losses, HSIC, the edge masker, Adam) is above it.
    """
    import numpy as np
    import tensorflow as tf
    from ibmrec_tf import graph as graph_lib
    from ibmrec_tf.layers import CSRGraph

    config = common.model_config()
    straightforward = "--straightforward" in extra or config.straightforward
    backbone = next((a.split("=", 1)[1] for a in extra if a.startswith("--backbone=")),
                    config.backbone)
    content, ui_graph, all_items = floor_parts(model, backbone, straightforward)
    d = config.embedding_dim
    rng = np.random.default_rng(0)

    def timed(fn, *args) -> float:
        fn(*args).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*args).numpy()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    parts = {}
    if ui_graph and config.n_layers:
        graph = CSRGraph(graph_lib.normalized_adjacency(data.num_users, data.num_items, data.train),
                         symmetric=True)
        width = d * (1 + len(data.features)) if content else d
        x = tf.constant(rng.normal(size=(data.num_users + data.num_items, width)).astype(np.float32))
        product = tf.function(lambda e: graph.matmul(e)[:1])
        parts["sparse propagation"] = 2 * config.n_layers * timed(product, x)
    name = backbone if model in DENOISED_MODELS else model
    if name == "mgcn":  # the users' modality views R H^k, all modalities in one product
        adjacency = graph_lib.normalized_adjacency(data.num_users, data.num_items, data.train)
        block = CSRGraph(adjacency[:data.num_users, data.num_users:], symmetric=False)
        x = tf.constant(rng.normal(size=(data.num_items, d * len(data.features))).astype(np.float32))
        parts["user-item block"] = 2 * timed(tf.function(lambda e: block.matmul(e)[:1]), x)
    if all_items:
        forward = tf.function(lambda m, w: tf.matmul(m, w)[:1])
        kernel_gradient = tf.function(lambda m, dz: tf.transpose(tf.matmul(dz, m, transpose_a=True)))
        for name, features in data.features.items():
            m = tf.constant(features)
            w = tf.constant(rng.normal(size=(m.shape[1], d)).astype(np.float32))
            dz = tf.constant(rng.normal(size=(m.shape[0], d)).astype(np.float32))
            parts[f"{name} projection"] = timed(forward, m, w)
            parts[f"{name} kernel gradient"] = timed(kernel_gradient, m, dz)
    return parts


def floor_table(results: list[dict]) -> str:
    """Each run's seconds per epoch against its floor measured in the same benchmark run."""
    lines = ["| model | s/epoch | floor s/epoch | ratio | floor per step (ms) |",
             "|" + "---|" * 5]
    for r in results:
        floor = r.get("floor")
        if not floor:
            continue
        per_step = sum(floor["parts"].values())
        epoch_floor = per_step * floor["steps_per_epoch"]
        detail = ", ".join(f"{k} {v * 1000:.0f}" for k, v in floor["parts"].items()) or "none"
        lines.append(f"| {r['label']} | {r['seconds_per_epoch']:.2f} | {epoch_floor:.2f} | "
                     f"{r['seconds_per_epoch'] / epoch_floor if epoch_floor else float('nan'):.2f}x"
                     f" | {per_step * 1000:.0f} ({detail}) |")
    return "\n".join(lines)


_FLOOR_DATA = []


def floor_data():
    """The dataset, loaded once in this process for the floor measurements."""
    if not _FLOOR_DATA:
        common.configure_tensorflow()
        _FLOOR_DATA.append(common.load_data())
    return _FLOOR_DATA[0]


def gpu_count() -> int:
    return len(common.import_tensorflow_quietly().config.list_physical_devices("GPU"))


