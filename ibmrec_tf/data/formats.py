"""The on-disk formats: reading a dataset folder, with one-line errors naming the file and row.

A dataset folder ``<data_dir>/<name>/`` holds the interactions in one of two formats and,
optionally, one ``<modality>_feat.npy`` per item modality:

* ``<name>.inter``: a tab-separated file whose header names at least ``userID``, ``itemID``
  and ``x_label`` (0 = train, 1 = valid, 2 = test). Extra columns (rating, timestamp) are
  ignored.
* ``5-core/{train,val,test}.json``: a JSON mapping of user id (a string) to a list of item ids.
* ``<modality>_missing.npy`` (optional, beside a feature file): a bool ``[num_items]`` mask of
  the items whose feature row is a fill (``runners.extract_features`` writes it); see
  :attr:`Dataset.feature_missing`.

When both are present the ``.inter`` file is read (``fmt='auto'``). Ids are 0-based and
contiguous. Every problem found is raised as :class:`DataError` with one line naming the file,
the line or row, and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import Sequence

import numpy as np

from ibmrec_tf.data.dataset import (FEATURE_SUFFIX, MISSING_SUFFIX, SPLITS, STANDIN_MARKER,
                                    DataError, Dataset, assemble)

_JSON_FILES = {"train": "train.json", "valid": "val.json", "test": "test.json"}


def load_dataset(data_dir: str, name: str, *, modalities: Sequence[str] | None = None,
                 fmt: str = "auto") -> Dataset:
    """Loads and validates ``<data_dir>/<name>/``.

    Args:
      data_dir: the folder holding one sub-folder per dataset.
      name: the dataset's folder name.
      modalities: which ``<modality>_feat.npy`` files to read; ``None`` reads every one present,
        an empty sequence reads none.
      fmt: ``'inter'``, ``'json'`` or ``'auto'`` (``.inter`` if present, else the JSON files).

    Raises:
      DataError: for anything missing or malformed, with a one-line message.
    """
    folder = os.path.join(data_dir, name)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: dataset folder not found (check --data_dir and --dataset)")
    inter_path = os.path.join(folder, f"{name}.inter")
    json_dir = os.path.join(folder, "5-core")
    if fmt not in ("auto", "inter", "json"):
        raise ValueError(f"fmt must be 'auto', 'inter' or 'json', got {fmt!r}")
    if fmt == "auto":
        if os.path.isfile(inter_path):
            fmt = "inter"
        elif os.path.isdir(json_dir):
            fmt = "json"
        else:
            raise DataError(f"{folder}: no interactions found: expected {name}.inter or "
                            f"5-core/{{train,val,test}}.json")
    if fmt == "inter":
        if not os.path.isfile(inter_path):
            raise DataError(f"{inter_path}: file not found")
        splits = read_inter(inter_path)
        source_files = [inter_path]
    else:
        splits = {}
        source_files = []
        for split, fname in _JSON_FILES.items():
            path = os.path.join(json_dir, fname)
            if not os.path.isfile(path):
                raise DataError(f"{path}: file not found")
            splits[split] = read_split_json(path)
            source_files.append(path)

    features = read_features(folder, modalities)
    missing = read_missing_masks(folder, features)
    notes = []
    if os.path.exists(os.path.join(folder, STANDIN_MARKER)):
        with open(os.path.join(folder, STANDIN_MARKER)) as f:
            first = f.readline().strip()
        notes.append(f"{folder} holds STAND-IN item features, not the real ones"
                     + (f" ({first})" if first else ""))
    return assemble(name, splits, features, source=folder, where=source_files[0], notes=notes,
                    feature_missing=missing)


def read_inter(path: str) -> dict[str, np.ndarray]:
    """Reads an MMRec-style ``.inter`` TSV into per-split ``[n, 2]`` int64 arrays.

    A file of digits, tabs and newlines only (what this project and MMRec write) is parsed by
    :func:`_plain_table`, vectorized (a 9.1M-row file in seconds); any other file, or one that
    breaks a rule, line by line, which names the first bad line.
    """
    try:
        with open(path, "rb") as f:
            content = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    head, _, body = content.partition(b"\n")
    try:
        header = head.decode("utf-8").rstrip("\r").split("\t")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if not content:
        raise DataError(f"{path}: file is empty (expected a header 'userID\\titemID\\tx_label')")
    missing = [c for c in ("userID", "itemID", "x_label") if c not in header]
    if missing:
        raise DataError(f"{path}:1: header {header!r} lacks column(s) {missing}; expected "
                        f"tab-separated 'userID', 'itemID', 'x_label'")
    cols = [header.index(c) for c in ("userID", "itemID", "x_label")]
    ncols = len(header)
    table = _plain_table(body, ncols, cols)
    if table is not None and len(table) and np.isin(table[:, 2], (0, 1, 2)).all():
        return {split: table[table[:, 2] == label, :2] for label, split in enumerate(SPLITS)}
    try:
        lines = content.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    rows = []
    for lineno, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != ncols:
            raise DataError(f"{path}:{lineno}: expected {ncols} tab-separated fields, "
                            f"found {len(fields)}")
        try:
            values = [int(fields[c]) for c in cols]
        except ValueError:
            bad = next(fields[c] for c in cols if not _is_int(fields[c]))
            raise DataError(f"{path}:{lineno}: {bad!r} is not a non-negative integer id "
                            f"or label") from None
        if values[0] < 0 or values[1] < 0:
            raise DataError(f"{path}:{lineno}: negative id {min(values[:2])}")
        if values[2] not in (0, 1, 2):
            raise DataError(f"{path}:{lineno}: unknown x_label {values[2]} "
                            f"(expected 0 train, 1 valid, 2 test)")
        rows.append(values)
    if not rows:
        raise DataError(f"{path}: no interactions after the header")
    table = np.asarray(rows, dtype=np.int64)
    return {split: table[table[:, 2] == label, :2] for label, split in enumerate(SPLITS)}


_PLAIN_BYTES = np.zeros(256, bool)
_PLAIN_BYTES[list(b"0123456789\t\n")] = True
_POW10 = 10.0 ** np.arange(16)
_PLAIN_CHUNK = 1 << 24  # bytes parsed at once: about 0.5 GB of index arrays


def _plain_table(body: bytes, ncols: int, cols) -> np.ndarray | None:
    """``[rows, len(cols)]`` int64 of a body of ``ncols`` tab-separated non-negative integers
    per line, or None where it is anything else (another byte, an empty field or line, a
    wrong field count, an id of over 15 digits). Vectorized: each chunk's digits are summed
    into their fields with their powers of ten; no Python object per field."""
    if not body:
        return None
    if not body.endswith(b"\n"):
        body += b"\n"
    data = np.frombuffer(body, np.uint8)
    pattern = np.array([9] * (ncols - 1) + [10], np.uint8)
    parts, start = [], 0
    while start < len(data):
        stop = len(data)
        if start + _PLAIN_CHUNK < stop:
            stop = body.rfind(b"\n", start, start + _PLAIN_CHUNK) + 1
            if stop <= start:
                return None
        chunk = data[start:stop]
        if not _PLAIN_BYTES[chunk].all():
            return None
        digit = chunk >= 48
        ends = np.flatnonzero(~digit)  # each field's separator
        if ends.size % ncols or not (chunk[ends].reshape(-1, ncols) == pattern).all():
            return None
        lengths = np.diff(ends, prepend=-1) - 1
        if lengths.min() < 1 or lengths.max() > 15:
            return None
        where = np.flatnonzero(digit)
        field = np.cumsum(~digit, dtype=np.int64)[where]
        values = np.bincount(field, weights=(chunk[where] - 48) * _POW10[ends[field] - where - 1],
                             minlength=len(ends))
        parts.append(values.astype(np.int64).reshape(-1, ncols)[:, cols])
        start = stop
    return np.concatenate(parts)


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def read_split_json(path: str) -> np.ndarray:
    """Reads a LATTICE-format JSON mapping ``{"user": [item, ...]}`` into ``[n, 2]`` pairs."""
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected a JSON object mapping user id to a list of item ids, "
                        f"found {type(payload).__name__}")
    users, items = [], []
    for key, value in payload.items():
        try:
            user = int(key)
        except ValueError:
            raise DataError(f"{path}: user key {key!r} is not an integer id") from None
        if user < 0:
            raise DataError(f"{path}: user key {key!r} is negative")
        if not isinstance(value, list):
            raise DataError(f"{path}: user {key}: expected a list of item ids, "
                            f"found {type(value).__name__}")
        for item in value:
            if isinstance(item, bool) or not isinstance(item, int):
                raise DataError(f"{path}: user {key}: item {item!r} is not an integer id")
            if item < 0:
                raise DataError(f"{path}: user {key}: negative item id {item}")
        users.extend([user] * len(value))
        items.extend(value)
    return np.stack([np.asarray(users, np.int64), np.asarray(items, np.int64)], axis=1) \
        if users else np.zeros((0, 2), np.int64)


def available_modalities(folder: str) -> list[str]:
    return sorted(f[: -len(FEATURE_SUFFIX)] for f in os.listdir(folder)
                  if f.endswith(FEATURE_SUFFIX))


def read_features(folder: str, modalities: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Reads ``<modality>_feat.npy`` files as float32 ``[rows, dim]`` arrays and checks them."""
    present = available_modalities(folder)
    if modalities is None:
        modalities = present
    features = {}
    for modality in modalities:
        path = os.path.join(folder, modality + FEATURE_SUFFIX)
        if modality not in present:
            raise DataError(f"{path}: modality {modality!r} was requested but has no feature file "
                            f"(present: {present or 'none'})")
        features[modality] = read_feature_file(path)
    return features


def read_missing_masks(folder: str, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``<modality>_missing.npy`` mask of each read modality that has one (bool, one flag
    per feature row)."""
    masks = {}
    for modality, array in features.items():
        path = os.path.join(folder, modality + MISSING_SUFFIX)
        if not os.path.exists(path):
            continue
        try:
            mask = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: not a valid .npy file ({str(e).splitlines()[0]})") from None
        if mask.dtype != np.bool_ or mask.shape != (array.shape[0],):
            raise DataError(f"{path}: expected a bool array of shape ({array.shape[0]},) (one "
                            f"flag per row of {modality}{FEATURE_SUFFIX}), found {mask.dtype} "
                            f"{mask.shape}")
        masks[modality] = mask
    return masks


#: Rows checked for non-finite values at once.
FINITE_CHECK_ROWS = 16384


def read_feature_file(path: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    if magic != b"\x93NUMPY":
        raise DataError(f"{path}: not a .npy file (it does not start with the NumPy header)")
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a valid .npy array file ({str(e).splitlines()[0]})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        shape = getattr(array, "shape", None)
        raise DataError(f"{path}: expected a 2-D [items, dim] array, found shape {shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{path}: expected real-valued features, found dtype {array.dtype}")
    # float32 stays memory-mapped (read-only, paged in as read); other dtypes are converted.
    if array.dtype != np.float32:
        array = array.astype(np.float32)
    bad, first = 0, None
    for begin in range(0, array.shape[0], FINITE_CHECK_ROWS):  # no full-size mask at once
        finite = np.isfinite(array[begin:begin + FINITE_CHECK_ROWS])
        if not finite.all():
            bad += int((~finite).sum())
            if first is None:
                row, col = np.argwhere(~finite)[0]
                first = (begin + int(row), int(col))
    if first is not None:
        row, col = first
        raise DataError(f"{path}: row {row}, column {col} is {array[row, col]} "
                        f"({bad} non-finite values in all)")
    return array


def file_checksums(folder: str) -> dict[str, str]:
    """sha256 of every regular file directly in ``folder`` and in ``folder/5-core``."""
    out = {}
    for sub in ("", "5-core"):
        path = os.path.join(folder, sub)
        if not os.path.isdir(path):
            continue
        for fname in sorted(os.listdir(path)):
            full = os.path.join(path, fname)
            if os.path.isfile(full):
                digest = hashlib.sha256()
                with open(full, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                out[os.path.join(sub, fname)] = digest.hexdigest()
    return out
