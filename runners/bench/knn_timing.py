"""The knn study: the exact and the approximate kNN builders on the data's features."""

from __future__ import annotations

import time
import tracemalloc

from absl import flags

from runners import common

FLAGS = flags.FLAGS


def _timed(fn):
    """``(result, seconds, peak bytes NumPy allocated)`` of ``fn()``; NumPy reports its
    allocations to tracemalloc, faiss's own buffers are not counted."""
    tracemalloc.start()
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, seconds, peak


def knn_study() -> list[dict]:
    """For each modality and each of ``--knn_sizes`` (the first N items; 0: all), the exact
    builder's seconds and memory, then the approximate one's for each of ``--knn_nprobes`` with
    its recall@k against exact (the share of exact neighbours found, averaged over items)."""
    import numpy as np

    from ibmrec_tf import graph

    common.configure_tensorflow()
    data = common.load_data()
    if not data.features:
        raise common.UsageError(f"the knn study needs item features; {data.name} has none")
    k = common.model_config().knn_k
    # Untimed: faiss's import and its thread pool's start.
    graph.knn_graph(np.random.default_rng(0).normal(size=(400, 8)), 2, method="ivf")
    rows = []
    for size in sorted(int(s) or data.num_items for s in FLAGS.knn_sizes):
        size = min(size, data.num_items)
        for modality, features in data.features.items():
            subset = np.asarray(features[:size], np.float32)
            (exact_ids, _), exact_s, exact_mem = _timed(lambda: graph.knn_graph(subset, k))
            row = {"label": f"{modality} items={size}", "modality": modality, "items": size,
                   "dim": int(subset.shape[1]), "k": k, "exact_seconds": exact_s,
                   "exact_peak_mb": exact_mem / 2 ** 20, "lists": graph.ivf_lists(size),
                   "approximate": []}
            print(f"  {modality} items={size}: exact {exact_s:.1f} s", flush=True)
            for nprobe in (int(n) for n in FLAGS.knn_nprobes):
                (ids, _), seconds, memory = _timed(lambda: graph.knn_graph(
                    subset, k, method="ivf", nprobe=nprobe))
                found = (ids[:, :, None] == exact_ids[:, None, :]).any(axis=2).mean()
                row["approximate"].append({"nprobe": nprobe, "seconds": seconds,
                                           "peak_mb": memory / 2 ** 20,
                                           "recall": float(found)})
                print(f"    ivf nprobe={nprobe}: {seconds:.1f} s, recall@{k} {found:.4f}",
                      flush=True)
            rows.append(row)
    return rows


def knn_table(results: list[dict]) -> str:
    lines = ["| modality | items | dim | exact s | exact NumPy peak MB | lists | nprobe | "
             "ivf s | speed-up | recall@k |", "|" + "---|" * 10]
    for r in results:
        for a in r["approximate"]:
            lines.append(f"| {r['modality']} | {r['items']:,} | {r['dim']} | "
                         f"{r['exact_seconds']:.2f} | {r['exact_peak_mb']:.0f} | {r['lists']} | "
                         f"{a['nprobe']} | {a['seconds']:.2f} | "
                         f"{r['exact_seconds'] / a['seconds']:.1f}x | {a['recall']:.4f} |")
    return "\n".join(lines)
