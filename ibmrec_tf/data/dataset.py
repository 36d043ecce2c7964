"""The in-memory dataset, its validation, and the one error type of data problems."""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Sequence

import numpy as np
import scipy.sparse as sp


logger = logging.getLogger("ibmrec_tf")

SPLITS = ("train", "valid", "test")
STANDIN_MARKER = "STAND_IN_FEATURES"
FEATURE_SUFFIX = "_feat.npy"
MISSING_SUFFIX = "_missing.npy"


class DataError(ValueError):
    """Bad or missing input data; the message is one line naming the file and the problem."""


@dataclasses.dataclass
class Dataset:
    """Interactions and item features of one dataset, all in memory.

    Attributes:
      name: the dataset's name.
      num_users: number of users; user ids are ``0 .. num_users - 1``.
      num_items: number of items; item ids are ``0 .. num_items - 1``.
      train, valid, test: int64 arrays of shape ``[n, 2]`` holding ``(user, item)`` pairs.
      features: modality name -> float32 array ``[num_items, dim]``, in a fixed order.
      source: where the data came from (a folder, or ``synthetic(...)``).
      notes: warnings every run that reads this dataset must repeat (e.g. stand-in features).
      feature_missing: modality name -> bool ``[num_items]``, True for an item whose feature row
        is a fill, not a real feature (no image, an empty text), read from
        ``<modality>_missing.npy``. Such an item is nobody's neighbour in that modality's kNN
        graph and has no neighbours of its own there; it is still scored, from its ID
        embedding, its other modalities and its interactions. Modalities without a mask are
        complete.
    """

    name: str
    num_users: int
    num_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    source: str = ""
    notes: tuple[str, ...] = ()
    feature_missing: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    def interaction_matrix(self, split: str = "train") -> sp.csr_matrix:
        """The binary ``[num_users, num_items]`` matrix of one split, rows sorted."""
        pairs = self.split(split)
        matrix = sp.csr_matrix(
            (np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
            shape=(self.num_users, self.num_items))
        matrix.sort_indices()
        return matrix

    def summary(self) -> str:
        feats = ", ".join(
            f"{m} {f.shape[1]}-d" + (f" ({int(self.feature_missing[m].sum())} missing)"
                                     if m in self.feature_missing else "")
            for m, f in self.features.items()) or "none"
        return (f"{self.name}: {self.num_users} users, {self.num_items} items, "
                f"train/valid/test {len(self.train)}/{len(self.valid)}/{len(self.test)}, "
                f"features: {feats}")


def assemble(name: str, splits: Mapping[str, np.ndarray], features: dict[str, np.ndarray], *,
              source: str, where: str, notes: Sequence[str] = (),
              feature_missing: Mapping[str, np.ndarray] | None = None) -> Dataset:
    """Validates splits and features against each other and builds the Dataset."""
    clean = {s: np.asarray(splits[s], dtype=np.int64).reshape(-1, 2) for s in SPLITS}
    if len(clean["train"]) == 0:
        raise DataError(f"{where}: the training split is empty")
    all_pairs = np.concatenate([clean[s] for s in SPLITS])
    num_users = int(all_pairs[:, 0].max()) + 1
    max_item = int(all_pairs[:, 1].max())
    if features:
        rows = {m: f.shape[0] for m, f in features.items()}
        if len(set(rows.values())) > 1:
            raise DataError(f"{source}: feature files disagree on the number of items: {rows}")
        num_items = next(iter(rows.values()))
        if max_item >= num_items:
            modality = next(iter(rows))
            raise DataError(f"{where}: item id {max_item} is out of range: "
                            f"{modality}{FEATURE_SUFFIX} has {num_items} rows (one per item)")
    else:
        num_items = max_item + 1
    # Pairs as one int64 key each (1-D sorts: a 9M-row file's checks take seconds, where
    # np.unique(axis=0) and three intersect1d took half a minute).
    keys = {}
    for split in SPLITS:
        pairs = clean[split]
        key = pairs[:, 0] * num_items + pairs[:, 1]
        _, first = np.unique(key, return_index=True)  # the first occurrence of each pair
        if len(first) < len(key):
            logger.warning("%s: dropped %d duplicate %s interaction(s)", where,
                           len(key) - len(first), split)
            first = np.sort(first)  # kept in file order
            clean[split], key = pairs[first], key[first]
        keys[split] = key
    # A (user, item) pair may belong to one split only: each key's splits as a bit mask.
    every = np.concatenate([keys[s] for s in SPLITS])
    bits = np.concatenate([np.full(len(keys[s]), 1 << i, np.int64) for i, s in enumerate(SPLITS)])
    order = np.argsort(every, kind="stable")
    every, bits = every[order], bits[order]
    if len(every):
        starts = np.flatnonzero(np.concatenate([[True], every[1:] != every[:-1]]))
        masks = np.bitwise_or.reduceat(bits, starts)
        for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
            both_bits = (1 << SPLITS.index(a)) | (1 << SPLITS.index(b))
            both = every[starts[(masks & both_bits) == both_bits]]
            if len(both):
                user, item = divmod(int(both[0]), num_items)
                raise DataError(f"{where}: pair (user {user}, item {item}) is in both {a} and "
                                f"{b} ({len(both)} such pairs)")
    missing = {}
    for modality, mask in (feature_missing or {}).items():
        if modality not in features:
            continue
        mask = np.asarray(mask)
        if mask.shape != (num_items,):
            raise DataError(f"{source}: {modality}{MISSING_SUFFIX} has shape {mask.shape}, "
                            f"expected ({num_items},) (one flag per item)")
        if mask.any():
            missing[modality] = mask.astype(bool)
    return Dataset(name=name, num_users=num_users, num_items=num_items, train=clean["train"],
                   valid=clean["valid"], test=clean["test"], features=features, source=source,
                   notes=tuple(notes), feature_missing=missing)
