"""Synthetic datasets at the field's largest catalogs' shapes, in memory linear in the data.

:func:`make_scaled` draws users, items, interactions and item features with

* **long tails matched to the Amazon 5-core sets** (measured here on ``../shared/data``'s Baby,
  Sports and Clothing, every user and item with at least 5 interactions): user activity is 5
  plus a Lomax (Pareto II) excess whose tail exponent is ``USER_TAIL`` (the sets' maximum
  likelihood exponents above 5 interactions: 3.03, 3.04, 3.62), rescaled to the requested
  number of interactions and capped at ``USER_CAP`` times the mean; item popularity weights follow a Zipf-Mandelbrot law
  ``(rank + ZIPF_OFFSET) ** -ZIPF_EXPONENT``, whose degree tail exponent
  ``1 + 1 / ZIPF_EXPONENT`` is 2.1 (the sets' item exponents: 1.90, 2.13, 2.38) and whose most
  popular item takes about 0.2-0.4% of the interactions (Sports: 0.35%);
* **a planted preference**: users and items have ``latent_dim`` (8) latent vectors; a user's
  items are drawn
  without replacement among candidates drawn by popularity, with weights
  ``exp(sharpness * <user, item>)`` (``sharpness`` 3; Gumbel top-k over ``CANDIDATES`` times
  as many candidates as the user's interactions; repeated candidates count once, which
  flattens the heaviest users' draws slightly). At 3,000 users, 1,200 items and 30,000
  interactions, ranking by the true preference gives about 2.5x popularity's validation
  Recall@20 and LightGCN about 2x (``tests/test_scaled.py`` asks for 1.3x);
* **features with a signal subspace and irrelevant dimensions**: per modality, the item latent
  vector mapped into ``signal_dims`` directions, the rest Gaussian noise, rotated by a random
  orthogonal matrix (as :func:`ibmrec_tf.data.make_synthetic` does);
* a random per-user split, 10% valid and 10% test with at least one of each (as the Amazon
  sets have it: Sports is 73.7% / 13.5% / 12.8%, since most users have 5 to 8 interactions).

Nothing of size users x items is built: candidates are drawn and scored per chunk of users.
:func:`write_scaled` writes the project's dataset folder (``<name>.inter``,
``<modality>_feat.npy`` written row block by row block, ``dataset.json``, ``README.md``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable, Mapping

import numpy as np

USER_MIN = 5
USER_TAIL = 3.0
USER_CAP = 30
ZIPF_EXPONENT = 1 / 1.1
ZIPF_OFFSET = 50.0
CANDIDATES = 16


@dataclasses.dataclass(frozen=True)
class Shape:
    """A dataset's size: users, items, interactions and modality dimensions."""

    num_users: int
    num_items: int
    num_interactions: int
    modality_dims: Mapping[str, int]
    source: str = ""


#: Named shapes (the sizes are from secondary sources: ``../shared/ANCHORS.md``). MicroLens's
#: feature dimensions are not given there; the Amazon sets' image and text shapes are used.
SHAPES = {
    "elec": Shape(192_403, 63_001, 1_689_188, {"image": 4096, "text": 384},
                  "Amazon Electronics (5-core) as MMRec ships it"),
    "microlens1m": Shape(1_000_000, 91_402, 9_100_000, {"image": 4096, "text": 384},
                         "MicroLens-1M (about 9.1M interactions; feature sizes assumed)"),
    "sports": Shape(35_598, 18_357, 296_337, {"image": 4096, "text": 384},
                    "Amazon Sports (5-core), the largest set measured here"),
}


def check_shape(shape: Shape) -> None:
    """Raises ``ValueError`` naming the size that cannot work."""
    if shape.num_users < 1 or shape.num_items < 2 * USER_MIN:
        raise ValueError(f"need at least 1 user and {2 * USER_MIN} items, got "
                         f"{shape.num_users} users and {shape.num_items} items")
    if shape.num_interactions < USER_MIN * shape.num_users:
        raise ValueError(f"{shape.num_interactions} interactions for {shape.num_users} users: "
                         f"every user has at least {USER_MIN} (a 5-core set), so give at least "
                         f"{USER_MIN * shape.num_users}")
    if shape.num_interactions > shape.num_users * shape.num_items // 2:
        raise ValueError(f"{shape.num_interactions} interactions exceed half of users x items; "
                         f"the generator draws sparse data")
    for modality, dim in shape.modality_dims.items():
        if dim < 1:
            raise ValueError(f"modality {modality}: dimension {dim} must be >= 1")


def user_activity(rng, shape: Shape) -> np.ndarray:
    """Interactions per user: 5 plus a Lomax excess (tail exponent ``USER_TAIL``), rescaled
    to the requested total, capped at ``USER_CAP`` times the mean (the Amazon sets' heaviest
    users have 15 to 36 times the mean) and at half the catalog, rounded at random."""
    excess = rng.pareto(USER_TAIL - 1, size=shape.num_users)
    target = shape.num_interactions - USER_MIN * shape.num_users
    cap = min(USER_CAP * shape.num_interactions / shape.num_users, shape.num_items // 2)
    cap -= USER_MIN
    for _ in range(8):  # rescale, clip the heaviest, rescale the rest
        if excess.sum() <= 0:
            break
        excess = np.minimum(excess * (target / excess.sum()), cap)
    counts = USER_MIN + np.floor(excess + rng.random(shape.num_users)).astype(np.int64)
    return np.minimum(counts, shape.num_items // 2)


def item_popularity(rng, num_items: int) -> np.ndarray:
    """Zipf-Mandelbrot weights in a random item order, summing to 1."""
    weights = (np.arange(num_items) + 1 + ZIPF_OFFSET) ** -ZIPF_EXPONENT
    weights = weights[rng.permutation(num_items)]
    return weights / weights.sum()


def _draw_chunk(rng, counts, user_latent, item_latent, cumulative, sharpness):
    """Distinct items for a chunk of users: ``(users, items)`` pairs, grouped by user."""
    owners = np.repeat(np.arange(len(counts)), CANDIDATES * counts)
    candidates = np.minimum(np.searchsorted(cumulative, rng.random(len(owners)), side="right"),
                            len(cumulative) - 1)
    num_items = len(cumulative)
    keys = np.unique(owners * num_items + candidates)  # sorted by user, repeats dropped
    owners, candidates = np.divmod(keys, num_items)
    scores = sharpness * np.einsum("nd,nd->n", user_latent[owners], item_latent[candidates])
    scores += rng.gumbel(size=len(scores))
    order = np.lexsort((-scores, owners))
    owners, candidates = owners[order], candidates[order]
    starts = np.searchsorted(owners, np.arange(len(counts)))
    rank = np.arange(len(owners)) - starts[owners]
    keep = rank < counts[owners]
    return owners[keep], candidates[keep]


def _split_labels(rng, users: np.ndarray) -> np.ndarray:
    """0/1/2 (train/valid/test) per interaction of ``users`` (grouped): per user 10% valid and
    10% test (at least one each), the rest train, at random."""
    order = np.lexsort((rng.random(len(users)), users))
    sizes = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank = np.empty(len(users), np.int64)
    rank[order] = np.arange(len(users)) - starts[users[order]]
    held = np.maximum(1, np.rint(0.1 * sizes)).astype(np.int64)[users]
    return np.where(rank < held, 1, np.where(rank < 2 * held, 2, 0)).astype(np.int8)


@dataclasses.dataclass
class ScaledData:
    """Interactions (``users``, ``items``, ``labels``: 0 train, 1 valid, 2 test) and the truth
    behind them; features are written by :func:`write_scaled` (they can exceed memory's
    comfort at these shapes)."""

    shape: Shape
    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    item_latent: np.ndarray
    seed: int
    signal_dims: int
    seconds: float
    latent_dim: int = 8
    sharpness: float = 3.0


def make_scaled(shape: Shape, *, seed: int = 0, latent_dim: int = 8, sharpness: float = 3.0,
                signal_dims: int = 16, chunk_users: int = 20_000,
                echo: Callable[[str], None] | None = None) -> ScaledData:
    """Draws a dataset of ``shape`` (see the module's docstring); ``echo`` gets a progress line
    per chunk of users."""
    check_shape(shape)
    start = time.perf_counter()
    rng = np.random.default_rng([seed, 0x5CA1ED])
    counts = user_activity(rng, shape)
    cumulative = np.cumsum(item_popularity(rng, shape.num_items))
    user_latent = (rng.standard_normal((shape.num_users, latent_dim)) / np.sqrt(latent_dim)
                   ).astype(np.float32)
    item_latent = rng.standard_normal((shape.num_items, latent_dim)).astype(np.float32)
    users, items = [], []
    for begin in range(0, shape.num_users, chunk_users):
        end = min(begin + chunk_users, shape.num_users)
        owners, chosen = _draw_chunk(rng, counts[begin:end], user_latent[begin:end], item_latent,
                                     cumulative, sharpness)
        users.append(owners + begin)
        items.append(chosen)
        if echo:
            done = sum(len(u) for u in users)
            echo(f"  users {end:,}/{shape.num_users:,}: {done:,} interactions "
                 f"({time.perf_counter() - start:.0f} s)")
    users, items = np.concatenate(users), np.concatenate(items)
    labels = _split_labels(rng, users)
    return ScaledData(shape, users, items, labels, item_latent, seed, signal_dims,
                      time.perf_counter() - start, latent_dim, sharpness)


def write_features(path: str, item_latent: np.ndarray, dim: int, signal_dims: int, rng, *,
                   rows_per_block: int = 8192) -> None:
    """``[items, dim]`` float32: the latent vector mapped into ``min(signal_dims, dim)``
    directions plus Gaussian noise in the rest, rotated; written block by block."""
    signal = min(signal_dims, dim)
    mixing = rng.standard_normal((item_latent.shape[1], signal)).astype(np.float32)
    mixing /= np.sqrt(item_latent.shape[1])
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)).astype(np.float32))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                    shape=(item_latent.shape[0], dim))
    for begin in range(0, item_latent.shape[0], rows_per_block):
        block = item_latent[begin:begin + rows_per_block]
        parts = [block @ mixing]
        if dim > signal:
            parts.append(rng.standard_normal((len(block), dim - signal), dtype=np.float32))
        out[begin:begin + len(block)] = np.concatenate(parts, axis=1) @ rotation
    out.flush()
    del out


def write_inter(path: str, users: np.ndarray, items: np.ndarray, labels: np.ndarray, *,
                rows_per_block: int = 1 << 20) -> None:
    """``userID\\titemID\\tx_label`` rows, written in blocks."""
    with open(path, "w", encoding="ascii") as f:
        f.write("userID\titemID\tx_label\n")
        for begin in range(0, len(users), rows_per_block):
            block = np.stack([users[begin:begin + rows_per_block],
                              items[begin:begin + rows_per_block],
                              labels[begin:begin + rows_per_block]], axis=1)
            f.write("\n".join("\t".join(map(str, row)) for row in block.tolist()) + "\n")


def statistics(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> dict:
    """Degree statistics, with the maximum-likelihood power-law exponent above 5."""
    out = {}
    for what, ids, size in (("user", users, num_users), ("item", items, num_items)):
        degree = np.bincount(ids, minlength=size)
        tail = degree[degree >= USER_MIN]
        alpha = 1 + len(tail) / np.log(tail / (USER_MIN - 0.5)).sum() if len(tail) else None
        out[what] = {"count_with_interactions": int((degree > 0).sum()),
                     "mean_degree": round(float(degree[degree > 0].mean()), 3),
                     "median_degree": float(np.median(degree[degree > 0])),
                     "max_degree": int(degree.max()),
                     "max_share": round(float(degree.max()) / len(ids), 5),
                     "tail_exponent_above_5": None if alpha is None else round(float(alpha), 3)}
    return out


def write_scaled(data: ScaledData, out_dir: str, name: str, *, command: str = "",
                 echo: Callable[[str], None] | None = None) -> str:
    """Writes ``<out_dir>/<name>/``; returns the folder. Raises ``FileExistsError`` when it
    exists."""
    folder = os.path.join(out_dir, name)
    if os.path.exists(folder):
        raise FileExistsError(f"{folder} already exists; remove it or choose another --dataset")
    partial = f"{folder}.partial-{os.getpid()}"
    os.makedirs(partial)
    rng = np.random.default_rng([data.seed, 0xFEA7])
    write_inter(os.path.join(partial, f"{name}.inter"), data.users, data.items, data.labels)
    for modality, dim in data.shape.modality_dims.items():
        start = time.perf_counter()
        write_features(os.path.join(partial, f"{modality}_feat.npy"), data.item_latent, dim,
                       data.signal_dims, rng)
        if echo:
            echo(f"  {modality}_feat.npy: {data.shape.num_items:,} x {dim} "
                 f"({time.perf_counter() - start:.0f} s)")
    stats = statistics(data.users, data.items, data.shape.num_users, data.shape.num_items)
    card = {"name": name, "kind": "synthetic (ibmrec_tf.data.scaled)", "command": command,
            "seed": data.seed, "shape": dataclasses.asdict(data.shape),
            "interactions": int(len(data.users)),
            "splits": {s: int((data.labels == i).sum()) for i, s in
                       enumerate(("train", "valid", "test"))},
            "generator": {"user_min": USER_MIN, "user_tail_exponent": USER_TAIL,
                          "zipf_exponent": ZIPF_EXPONENT, "zipf_offset": ZIPF_OFFSET,
                          "candidates_per_interaction": CANDIDATES,
                          "signal_dims": data.signal_dims, "latent_dim": data.latent_dim,
                          "sharpness": data.sharpness},
            "statistics": stats}
    with open(os.path.join(partial, "dataset.json"), "w") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    with open(os.path.join(partial, "README.md"), "w") as f:
        f.write(f"# {name}: synthetic\n\nDrawn by `ibmrec_tf.data.scaled` (seed {data.seed}): "
                f"{len(data.users):,} interactions of {data.shape.num_users:,} users and "
                f"{data.shape.num_items:,} items, with planted preferences and features whose "
                f"signal lies in {data.signal_dims} directions of each modality. Not real data; "
                f"`dataset.json` has the generator's settings and the degree statistics.\n")
    os.rename(partial, folder)
    return folder
