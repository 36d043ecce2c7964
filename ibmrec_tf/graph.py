"""Pure functions that build the graphs the models propagate over (NumPy / SciPy, no TensorFlow).

* :func:`normalized_adjacency`: the symmetric-normalized user-item graph ``D^-1/2 A D^-1/2``
  with ``A = [[0, R], [R^T, 0]]`` (paper Eq. 4 and 6).
* :func:`knn_graph`: per modality, each item's ``k`` most cosine-similar items (Eq. 8-9),
  computed in row chunks so memory stays ``O(items * k + chunk * items)``; exact by default
  (``O(items^2 dim)`` time), or approximate with faiss's inverted-file index
  (``method="ivf"``, the optional ``[knn]`` extra) for catalogs where exact is too slow.
* :func:`bipartite_edge_weights` and :func:`degree_sensitive_prune`: FREEDOM's user-item edge
  pruning, which keeps a share of the edges drawn without replacement with probabilities
  proportional to ``1 / sqrt(d_u d_i)``, and the normalized graph of the kept edges.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def normalized_adjacency(num_users: int, num_items: int, pairs: np.ndarray) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` over ``num_users + num_items`` nodes (users first), float32 CSR.

    Nodes without edges (users or items absent from ``pairs``) have degree 0 and get an empty
    row and column instead of a division by zero.
    """
    pairs = np.asarray(pairs, dtype=np.int64)
    n = num_users + num_items
    rows = np.concatenate([pairs[:, 0], pairs[:, 1] + num_users])
    cols = np.concatenate([pairs[:, 1] + num_users, pairs[:, 0]])
    adjacency = sp.csr_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=(n, n))
    adjacency.data[:] = 1.0  # duplicate pairs count once
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    np.power(degree, -0.5, out=inv_sqrt, where=degree > 0)
    normalized = sp.diags(inv_sqrt) @ adjacency @ sp.diags(inv_sqrt)
    normalized = normalized.tocsr().astype(np.float32)
    normalized.sort_indices()
    return normalized


#: kNN builders: ``exact`` (chunked products) and ``ivf`` (faiss ``IndexIVFFlat``)
KNN_METHODS = ("exact", "ivf")


def knn_graph(features: np.ndarray, k: int, *, chunk_size: int = 2048,
              missing: np.ndarray | None = None, method: str = "exact",
              nprobe: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``k`` nearest items by cosine similarity (Eq. 8-9); an item is its own nearest.

    ``method="ivf"`` finds them approximately (:func:`_ivf_neighbors`): the same output, with
    each row's neighbours among the items of the ``nprobe`` inverted lists nearest to it.

    Args:
      features: ``[num_items, dim]`` raw features of one modality.
      k: neighbours kept per item (``1 <= k <= num_items``).
      chunk_size: rows of the similarity matrix computed at a time.
      missing: optional bool ``[num_items]``: items whose feature row is a fill. A missing
        item is chosen as no other item's neighbour while ``k`` present items remain, and its
        own row has similarity 0 to every neighbour (no edges; the ids are those of the
        nearest present items, kept only so every row has ``k`` entries).

    Returns:
      ``(neighbors, similarity)``: int64 ``[num_items, k]`` neighbour ids, sorted by decreasing
      similarity, and float32 ``[num_items, k]`` cosine similarities clipped at 0 (a negative
      similarity is no affinity, and keeps degrees non-negative for the normalization). An item
      whose features are all zero has similarity 0 to everything.
    """
    features = np.asarray(features, dtype=np.float32)
    num_items = features.shape[0]
    if not 1 <= k <= num_items:
        raise ValueError(f"k must be in [1, {num_items}] (the number of items), got {k}")
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.maximum(norms, 1e-12)
    if missing is not None:
        missing = np.asarray(missing, bool)
        if missing.shape != (num_items,):
            raise ValueError(f"missing must have shape ({num_items},), got {missing.shape}")
        if not missing.any():
            missing = None
    if method not in KNN_METHODS:
        raise ValueError(f"unknown kNN method {method!r}; choose one of {KNN_METHODS}")
    if method == "ivf":
        present = np.flatnonzero(~missing) if missing is not None else None
        if present is None or len(present) >= k:
            neighbors, similarity = _ivf_neighbors(unit, k, nprobe, present)
            similarity = np.clip(similarity, 0.0, None)
            if missing is not None:
                similarity[missing] = 0.0
            return neighbors, similarity
        # fewer present items than k: the exact builder fills rows with missing ones
    neighbors = np.empty((num_items, k), np.int64)
    similarity = np.empty((num_items, k), np.float32)
    for start in range(0, num_items, chunk_size):
        block = unit[start:start + chunk_size] @ unit.T
        if missing is not None:
            block[:, missing] = -2.0  # below any cosine: chosen only when nothing else is left
        rows = np.arange(block.shape[0])
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        top_sim = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        neighbors[start:start + len(rows)] = np.take_along_axis(top, order, axis=1)
        sims = np.take_along_axis(top_sim, order, axis=1)
        similarity[start:start + len(rows)] = np.clip(sims, 0.0, None)
    if missing is not None:
        similarity[missing] = 0.0
    return neighbors, similarity


def ivf_lists(num_items: int) -> int:
    """The inverted lists of the approximate builder: about ``4 sqrt(items)`` (faiss's guideline
    of 4-16 sqrt(N)), at most one per 39 items (k-means needs 39 points per centroid)."""
    return max(1, min(int(4 * np.sqrt(num_items)), num_items // 39))


def _ivf_neighbors(unit: np.ndarray, k: int, nprobe: int,
                   present: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ``k`` largest inner products with the ``present`` rows (all where None),
    approximately: faiss's ``IndexIVFFlat`` over unit rows, ``nprobe`` lists searched.

    Hand-written around faiss only where faiss says nothing: the ids of ``present``, and the
    few rows whose probed lists hold fewer than ``k`` items (faiss pads them with -1), which are
    searched exactly.
    """
    try:
        import faiss
    except ImportError:
        from ibmrec_tf.features.encoders import MissingExtra

        raise MissingExtra("--knn_method=ivf needs faiss: pip install -e \".[knn]\"") from None
    unit = np.ascontiguousarray(unit, dtype=np.float32)
    base = unit if present is None else np.ascontiguousarray(unit[present])
    dim = unit.shape[1]
    lists = ivf_lists(len(base))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 1234  # k-means is seeded: the same graph from the same features
    sample = base if len(base) <= 256 * lists else base[
        np.random.default_rng(0).choice(len(base), 256 * lists, replace=False)]
    index.train(sample)
    index.add(base)
    index.nprobe = min(nprobe, lists)
    similarity, ids = index.search(unit, k)
    short = np.flatnonzero((ids < 0).any(axis=1))
    if len(short):  # too few items in the probed lists: these rows exactly
        block = unit[short] @ base.T
        top = np.argsort(-block, axis=1, kind="stable")[:, :k]
        ids[short], similarity[short] = top, np.take_along_axis(block, top, axis=1)
    if present is not None:
        ids = present[ids]
    return ids.astype(np.int64), similarity.astype(np.float32)


def knn_dense_reference(features: np.ndarray, k: int) -> np.ndarray:
    """The dense ``[N, N]`` kNN similarity matrix (for tests on small inputs only)."""
    neighbors, similarity = knn_graph(features, k, chunk_size=max(1, features.shape[0]))
    dense = np.zeros((features.shape[0], features.shape[0]), np.float32)
    np.put_along_axis(dense, neighbors, similarity, axis=1)
    return dense


def bipartite_edge_weights(num_users: int, num_items: int, pairs: np.ndarray) -> np.ndarray:
    """``1 / sqrt(d_u d_i)`` of every (user, item) pair, with degrees counted over ``pairs``."""
    pairs = np.asarray(pairs, dtype=np.int64)
    user_degree = np.bincount(pairs[:, 0], minlength=num_users).astype(np.float64)
    item_degree = np.bincount(pairs[:, 1], minlength=num_items).astype(np.float64)
    return 1.0 / np.sqrt(user_degree[pairs[:, 0]] * item_degree[pairs[:, 1]])


def degree_sensitive_prune(num_users: int, num_items: int, pairs: np.ndarray, keep: int,
                           rng: np.random.Generator) -> np.ndarray:
    """Indices of ``keep`` of ``pairs``, drawn without replacement with probabilities
    proportional to ``1 / sqrt(d_u d_i)`` (FREEDOM's degree-sensitive edge pruning).

    Successive draws without replacement are taken at once as the ``keep`` largest
    ``log w + Gumbel`` keys (the Gumbel-top-k identity), in ``O(edges)``. Edges between
    high-degree nodes, the likeliest to be noise, are the likeliest to be dropped. The
    indices come back sorted.
    """
    pairs = np.asarray(pairs, dtype=np.int64)
    if not 0 < keep <= len(pairs):
        raise ValueError(f"keep must be in [1, {len(pairs)}] (the number of edges), got {keep}")
    keys = np.log(bipartite_edge_weights(num_users, num_items, pairs)) + rng.gumbel(size=len(pairs))
    if keep == len(pairs):
        return np.arange(len(pairs))
    return np.sort(np.argpartition(-keys, keep - 1)[:keep])
