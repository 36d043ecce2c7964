"""A run's peak memory, estimated from the shapes before anything large is built.

:func:`estimate_peak_memory` adds up what a run holds, from the dataset's sizes (the feature
files are memory-mapped, so their shapes cost nothing to read) and the settings:

* ``runtime``: Python, TensorFlow and its thread pools (measured, about 0.8 GB on 2 cores);
* ``interactions``: the splits' id pairs, their CSR matrices, the sampler's and evaluator's
  arrays;
* ``features``: each modality's float32 file mapping (every model: the loader's finite check
  reads every page, and resident mapped pages count in the process's memory) and, for the
  multimodal models, the model's scaled copy;
* ``build``: what building holds for a moment and frees: the kNN builder's normalized copy and
  its similarity block (``2048 x items`` at a time, with its partition buffers);
* ``graphs``: the normalized user-item CSR matrix (SciPy's and TensorFlow's copies) and the
  kNN tables;
* ``tables``: every trained variable with its two Adam slots and its dense gradient (the
  fused Adam adds sparse gradients up densely), and MRdIB's noise bank;
* ``step``: one training step's activations and their gradients (the propagated layers, every
  item's projection, the batch's rows);
* ``evaluation``: one full-ranking block (``eval_batch_size x items`` scores, the masked copy,
  the top-k workspace) and the final embeddings.

The peak is ``runtime + interactions + features + graphs + max(build, tables + max(step,
evaluation))``. The constants are measured (BENCHMARKS.md, "Data at the large shapes", where
the estimate sits beside each run's measured peak). :func:`check_fits` compares the estimate
with the memory this process may use and raises :class:`MemoryBudgetError` with the settings
that lower it.
"""

from __future__ import annotations

import dataclasses
import os

from ibmrec_tf.config import ModelConfig, TrainConfig

GIB = 1024 ** 3
#: Python, TensorFlow and its thread pools, before any data (peak of a demo-sized run: 0.76-0.80
#: GB on 2 cores)
RUNTIME_BYTES = int(0.8 * GIB)
#: bytes per interaction across the splits' pairs, CSR matrices, sampler and evaluator arrays
BYTES_PER_INTERACTION = 64
#: bytes per stored user-item edge (both directions): SciPy's build and matrix, TensorFlow's CSR
BYTES_PER_EDGE = 48
#: rows of the kNN similarity block (graph.knn_graph's chunk_size) and bytes per block entry
#: (the float32 block, its negation and the int64 partition)
KNN_BLOCK_ROWS = 2048
KNN_BYTES_PER_ENTRY = 16


class MemoryBudgetError(ValueError):
    """The estimated peak exceeds the memory the run may use (one line, exit status 2)."""


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The sizes an estimate reads: from a :class:`~ibmrec_tf.data.Dataset` or given."""

    num_users: int
    num_items: int
    train: int
    interactions: int
    modality_dims: dict

    @classmethod
    def of(cls, dataset) -> Shapes:
        return cls(int(dataset.num_users), int(dataset.num_items), int(len(dataset.train)),
                   int(len(dataset.train) + len(dataset.valid) + len(dataset.test)),
                   {m: int(f.shape[1]) for m, f in dataset.features.items()})


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    parts: dict  # name -> bytes

    @property
    def peak(self) -> int:
        p = self.parts
        return (p["runtime"] + p["interactions"] + p["features"] + p["graphs"]
                + max(p["build"], p["tables"] + max(p["step"], p["evaluation"])))

    def describe(self) -> str:
        return ", ".join(f"{name} {value / GIB:.2f}" for name, value in self.parts.items()
                         if value) + " GiB"


def _structure(model: str, config: ModelConfig) -> dict:
    """What the model holds: the switches its class (or its backbone's) declares."""
    from ibmrec_tf.models import MODELS, DenoisedRecommender
    from ibmrec_tf.models.denoised import BACKBONES

    cls = MODELS[model]
    denoised = issubclass(cls, DenoisedRecommender)
    backbone = BACKBONES[config.backbone] if denoised else cls
    multimodal = bool(getattr(cls, "multimodal", False))
    return {"multimodal": multimodal,
            "content": multimodal and bool(getattr(backbone, "content", False)),
            "user_item": bool(getattr(backbone, "user_item_graph", model == "lightgcn")),
            "item_item": multimodal and bool(getattr(backbone, "item_item_graph", False)),
            "mrdib": "mrdib" in model}


def estimate_peak_memory(model: str, shapes: Shapes, model_config: ModelConfig,
                         train_config: TrainConfig) -> MemoryEstimate:
    """The run's peak memory, by part (see the module docstring), in bytes."""
    s = _structure(model, model_config)
    users, items, d = shapes.num_users, shapes.num_items, model_config.embedding_dim
    dims = shapes.modality_dims if s["multimodal"] else {}
    k = len(dims)
    f32 = 4
    width = d * (1 + k) if s["content"] else d  # the propagated width, [P, C] / [Q, Z]
    mapped = sum(items * dim * f32 for dim in shapes.modality_dims.values())
    feature_bytes = sum(items * dim * f32 for dim in dims.values())
    largest = max(dims.values(), default=0) * items * f32
    knn_k = min(model_config.knn_k, max(items - 1, 1))
    parts = {"runtime": RUNTIME_BYTES,
             "interactions": shapes.interactions * BYTES_PER_INTERACTION,
             "features": mapped + feature_bytes,
             "build": (2 * largest + (min(KNN_BLOCK_ROWS, items) * items * KNN_BYTES_PER_ENTRY
                                      if s["item_item"] else 0)),
             "graphs": ((2 * shapes.train * BYTES_PER_EDGE if s["user_item"] else 0)
                        + (3 * k * items * knn_k * 12 if s["item_item"] else 0))}
    params = (users + items) * d + (users * d * k if s["content"] else 0)
    params += sum(dim * d for dim in dims.values())  # the projections
    bank = (1 << max(16, int(items - 1).bit_length())) * d * f32 if s["mrdib"] and dims else 0
    parts["tables"] = 4 * params * f32 + bank
    step = 0
    if s["user_item"]:
        step += 3 * (users + items) * width * f32 * (model_config.n_layers + 1)
    if s["item_item"]:
        step += 3 * items * width * f32 * (model_config.item_layers + 1)
    if dims:
        step += 4 * items * d * k * f32  # every item's Z, its gradient and the fused copies
    step += 8 * 3 * train_config.batch_size * width * f32  # the triplets' rows
    parts["step"] = step
    block = min(train_config.eval_batch_size, users)
    padded = -(-items // 64) * 64
    parts["evaluation"] = 4 * block * padded * f32 + (users + items) * width * f32
    return MemoryEstimate(parts)


def peak_rss_bytes() -> int:
    """This process's own peak resident set: ``VmHWM`` of ``/proc/self/status``.

    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used where ``/proc`` exists: on Linux it is
    carried across ``fork`` and ``exec``, so a run started by a large process (a test worker, a
    notebook) would report its parent's peak. Elsewhere it is the fallback (kilobytes on Linux,
    bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def available_bytes() -> int | None:
    """What this process may still use: the memory the kernel calls available plus this
    process's resident set (already counted by the estimate), capped by a cgroup limit; None
    where neither can be read."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        available = int(info["MemAvailable"].split()[0]) * 1024
        with open("/proc/self/statm") as f:
            available += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, KeyError, ValueError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            available = min(available, int(text)) if available else int(text)
    return available


def _lowered(model, shapes, model_config, train_config, estimate) -> list[str]:
    """The settings that lower the estimate most, each as ``--flag=value (-x.x GiB)``."""
    structure = _structure(model, model_config)
    options = []
    if train_config.eval_batch_size > 64:
        options.append(("eval_batch_size", train_config.eval_batch_size // 2, None))
    if train_config.batch_size > 256:
        options.append(("batch_size", train_config.batch_size // 2, None))
    if structure["item_item"] and model_config.knn_k > 2:
        options.append(("knn_k", model_config.knn_k // 2, None))
    if model_config.embedding_dim > 16:
        options.append(("embedding_dim", model_config.embedding_dim // 2, None))
    if len(shapes.modality_dims) > 1 and structure["multimodal"]:
        largest = max(shapes.modality_dims, key=shapes.modality_dims.get)
        rest = {m: v for m, v in shapes.modality_dims.items() if m != largest}
        options.append(("modalities", ",".join(rest), dataclasses.replace(shapes,
                                                                          modality_dims=rest)))
    found = []
    for name, value, other_shapes in options:
        m, t = model_config, train_config
        if hasattr(m, name):
            m = dataclasses.replace(m, **{name: value})
        elif hasattr(t, name):
            t = dataclasses.replace(t, **{name: value})
        saved = estimate.peak - estimate_peak_memory(model, other_shapes or shapes, m, t).peak
        if saved > 0.01 * GIB:
            found.append((saved, f"--{name}={value} (-{saved / GIB:.1f} GiB)"))
    return [text for _, text in sorted(found, reverse=True)[:3]]


def check_fits(model: str, shapes: Shapes, model_config: ModelConfig, train_config: TrainConfig,
               limit_gb: float = 0.0) -> MemoryEstimate:
    """Returns the estimate; raises :class:`MemoryBudgetError` when it exceeds ``limit_gb``
    (0: :func:`available_bytes`; negative: no check)."""
    estimate = estimate_peak_memory(model, shapes, model_config, train_config)
    if limit_gb < 0:
        return estimate
    limit = int(limit_gb * GIB) if limit_gb > 0 else available_bytes()
    if limit is None or estimate.peak <= limit:
        return estimate
    lower = _lowered(model, shapes, model_config, train_config, estimate)
    source = "--memory_limit_gb" if limit_gb > 0 else "available"
    raise MemoryBudgetError(
        f"estimated peak memory {estimate.peak / GIB:.1f} GiB exceeds the {limit / GIB:.1f} GiB "
        f"{source} ({estimate.describe()}); lower it with "
        + (", ".join(lower) if lower else "a smaller dataset")
        + ", or set --memory_limit_gb (negative: no check)")


def estimate_run(model_dir: str, dataset=None) -> MemoryEstimate:
    """The estimate of the run in ``model_dir``, from its ``config.json`` (with this version's
    formula); ``dataset``: its data, already loaded (else loaded here)."""
    from ibmrec_tf.config import read_configs

    model, data_config, model_config, train_config = read_configs(model_dir)
    if dataset is None:
        dataset = data_config.load(seed=train_config.seed)
    return estimate_peak_memory(model, Shapes.of(dataset), model_config, train_config)
