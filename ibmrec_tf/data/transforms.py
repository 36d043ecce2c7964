"""Seeded changes to a dataset: appended noise dimensions, a fraction of the training set."""

from __future__ import annotations

import dataclasses

import numpy as np

from ibmrec_tf.data.dataset import Dataset


def with_noise_dims(dataset: Dataset, dims: int, *, seed: int = 0) -> Dataset:
    """A copy whose every modality has ``dims`` extra columns of seeded irrelevant noise.

    The noise is ``N(0, s^2)`` with ``s`` the modality's own feature standard deviation, so it
    is as loud as the real features but carries no preference signal (the irrelevant-feature
    experiment).
    """
    if dims < 0:
        raise ValueError(f"dims must be >= 0, got {dims}")
    if dims == 0:
        return dataset
    rng = np.random.default_rng([seed, 7919])
    features = {}
    for modality, feats in dataset.features.items():
        noise = rng.standard_normal((feats.shape[0], dims), dtype=np.float32) * float(feats.std())
        features[modality] = np.concatenate([feats, noise], axis=1)
    note = f"each modality has {dims} appended dimensions of seeded noise (seed {seed})"
    return dataclasses.replace(dataset, features=features, notes=dataset.notes + (note,))


def with_train_fraction(dataset: Dataset, fraction: float, *, seed: int = 0) -> Dataset:
    """A copy keeping a seeded random ``fraction`` of the training interactions.

    Valid and test stay whole (the scaling benchmark grows the training set only). Users left
    without training items are simply not trained on; evaluation still ranks for them.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return dataset
    rng = np.random.default_rng([seed, 104729])
    keep = np.sort(rng.permutation(len(dataset.train))[:max(1, round(fraction * len(dataset.train)))])
    note = (f"training interactions subsampled to {fraction:g} ({len(keep)} of "
            f"{len(dataset.train)}, seed {seed})")
    return dataclasses.replace(dataset, train=dataset.train[keep], notes=dataset.notes + (note,))
