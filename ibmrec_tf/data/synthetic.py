"""Built-in synthetic data: the quick-start dataset and the planted-structure dataset.

* :func:`make_synthetic`: planted preferences and partly irrelevant item features (the
  quick-start and most tests).
* :func:`make_planted`: items whose modalities carry a shared factor, one unique factor each,
  one bit each whose product decides one user group's taste, and high-variance nuisance
  dimensions, with the truth returned beside the data, so that linear probes on learned
  representations show what each MRdIB term does.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from ibmrec_tf.data.dataset import SPLITS, Dataset, assemble


def _split_by_user(rng, chosen: np.ndarray) -> dict[str, np.ndarray]:
    """Each user's items split 80/10/10 at random into train/valid/test (>= 1 valid, test)."""
    splits = {s: [] for s in SPLITS}
    for user in range(chosen.shape[0]):
        items = rng.permutation(chosen[user])
        n_valid = n_test = max(1, int(round(0.1 * len(items))))
        parts = {"valid": items[:n_valid], "test": items[n_valid:n_valid + n_test],
                 "train": items[n_valid + n_test:]}
        for split, part in parts.items():
            splits[split].append(np.stack([np.full(len(part), user), part], axis=1))
    return {s: np.concatenate(v).astype(np.int64) for s, v in splits.items()}


def _draw_items(rng, logits: np.ndarray, count: int) -> np.ndarray:
    """``count`` distinct items per row, drawn without replacement with probabilities
    proportional to ``exp(logits)`` (Gumbel top-k)."""
    keys = logits + rng.gumbel(size=logits.shape)
    return np.argpartition(-keys, count, axis=1)[:, :count]


def make_synthetic(*, num_users: int = 1200, num_items: int = 900, latent_dim: int = 8,
                   interactions_per_user: int = 20, modality_dims: Mapping[str, int] | None = None,
                   signal_dims: int = 8, noise_scale: float = 1.0, seed: int = 0) -> Dataset:
    """A seeded dataset with planted preferences and partly irrelevant item features.

    Users and items get latent vectors in ``latent_dim`` dimensions; each user draws
    ``interactions_per_user`` distinct items with probability proportional to
    ``exp(2 * <user, item>) * popularity``. Each modality's features are the item latent
    vector mapped into ``signal_dims`` directions plus ``dim - signal_dims`` directions of
    pure noise (``noise_scale``), then rotated by a random orthogonal matrix, so that only a
    subspace of each modality carries the preference signal and the rest is irrelevant.
    Each user's items are split 80/10/10 at random into train/valid/test, with at least one
    training item.
    """
    if modality_dims is None:
        modality_dims = {"image": 64, "text": 48}
    if interactions_per_user >= num_items:
        raise ValueError("interactions_per_user must be smaller than num_items")
    rng = np.random.default_rng(seed)
    user_latent = rng.normal(size=(num_users, latent_dim)) / np.sqrt(latent_dim)
    item_latent = rng.normal(size=(num_items, latent_dim)) / np.sqrt(latent_dim)
    popularity = rng.pareto(2.0, size=num_items) + 1.0
    logits = 2.0 * np.sqrt(latent_dim) * user_latent @ item_latent.T + np.log(popularity)[None]
    chosen = _draw_items(rng, logits, interactions_per_user)
    splits = _split_by_user(rng, chosen)
    features = {}
    for modality, dim in modality_dims.items():
        if dim < signal_dims:
            raise ValueError(f"modality {modality}: dim {dim} < signal_dims {signal_dims}")
        mixing = rng.normal(size=(latent_dim, signal_dims))
        signal = item_latent @ mixing
        noise = noise_scale * rng.normal(size=(num_items, dim - signal_dims))
        rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        features[modality] = (np.concatenate([signal, noise], axis=1) @ rotation).astype(np.float32)
    name = f"synthetic(seed={seed})"
    return assemble("synthetic", splits, features, source=name, where=name)


@dataclasses.dataclass
class PlantedData:
    """A planted-structure dataset and its truth (see :func:`make_planted`).

    Attributes:
      dataset: the :class:`Dataset` (modalities ``'image'`` and ``'audio'``).
      shared: ``[items, shared_dim]`` the factor both modalities carry.
      unique: modality -> ``[items, unique_dim]`` the factor only that modality carries.
      bits: modality -> ``[items]`` +-1, the bit that modality carries; the product of the two
        bits decides the synergy group's taste.
      nuisance: modality -> ``[items, nuisance_dim]`` high-variance dimensions no user cares for.
      user_group: ``[users]`` 0 (shared), 1 (the first modality's unique factor), 2 (the second
        one's), 3 (synergy: the product of the bits).
    """

    dataset: Dataset
    shared: np.ndarray
    unique: dict[str, np.ndarray]
    bits: dict[str, np.ndarray]
    nuisance: dict[str, np.ndarray]
    user_group: np.ndarray


GROUPS = ("shared", "unique_first", "unique_second", "synergy")


def make_planted(*, num_users: int = 800, num_items: int = 600, interactions_per_user: int = 16,
                 shared_dim: int = 4, unique_dim: int = 4, nuisance_dim: int = 16,
                 nuisance_scale: float = 3.0, bit_scale: float = 1.0, sharpness: float = 3.0,
                 groups: Sequence[str] = GROUPS, seed: int = 0) -> PlantedData:
    """Items with planted shared, unique, synergistic and nuisance parts in two modalities.

    Every item draws a shared factor ``s``, a unique factor ``u^k`` and a bit ``b^k = +-1`` per
    modality, and per modality ``nuisance_dim`` dimensions of ``N(0, nuisance_scale^2)``
    nuisance. Modality ``k``'s features are ``[s, u^k, bit_scale * b^k, nuisance^k]`` times a
    random rotation of its own. Users fall into four equal groups, whose taste for an item is
    ``<w_a, s>`` (shared), ``<w_a, u^1>`` or ``<w_a, u^2>`` (unique to one modality), or
    ``b^1 b^2`` (synergy: an interaction no linear map of either modality, or of both
    concatenated, expresses); each user draws ``interactions_per_user`` items with
    probabilities proportional to ``exp(sharpness * taste)``, split 80/10/10 per user.
    ``groups`` (names of :data:`GROUPS`) lists the groups the users cycle through.
    """
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ValueError(f"groups must name some of {GROUPS}, got {list(groups)}")
    if interactions_per_user >= num_items:
        raise ValueError("interactions_per_user must be smaller than num_items")
    rng = np.random.default_rng([seed, 31337])
    modalities = ("image", "audio")
    shared = rng.normal(size=(num_items, shared_dim))
    unique = {m: rng.normal(size=(num_items, unique_dim)) for m in modalities}
    bits = {m: rng.choice([-1.0, 1.0], size=num_items) for m in modalities}
    nuisance = {m: nuisance_scale * rng.normal(size=(num_items, nuisance_dim)) for m in modalities}
    user_group = np.array([GROUPS.index(groups[u % len(groups)]) for u in range(num_users)])
    taste = np.zeros((num_users, num_items))
    for group, factor in enumerate([shared, unique["image"], unique["audio"]]):
        rows = user_group == group
        if not rows.any():
            continue
        weights = rng.normal(size=(int(rows.sum()), factor.shape[1]))
        weights /= np.linalg.norm(weights, axis=1, keepdims=True)
        taste[rows] = weights @ factor.T
    taste[user_group == 3] = (bits["image"] * bits["audio"])[None, :]
    chosen = _draw_items(rng, sharpness * taste, interactions_per_user)
    splits = _split_by_user(rng, chosen)
    features = {}
    for m in modalities:
        parts = np.concatenate([shared, unique[m], bit_scale * bits[m][:, None], nuisance[m]],
                               axis=1)
        rotation, _ = np.linalg.qr(rng.normal(size=(parts.shape[1], parts.shape[1])))
        features[m] = (parts @ rotation).astype(np.float32)
    name = f"planted(seed={seed})"
    data = assemble("planted", splits, features, source=name, where=name)
    return PlantedData(dataset=data, shared=shared, unique=unique, bits=bits, nuisance=nuisance,
                       user_group=user_group)
