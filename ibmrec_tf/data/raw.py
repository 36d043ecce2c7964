"""Raw interaction logs to a dataset folder: read, clean, k-core filter, split, write.

A raw log is a CSV, TSV or JSON-lines file (optionally gzipped) with one interaction per row: a
user column, an item column and, optionally, a rating and a timestamp column. The defaults are
the column names of the Amazon review files (``reviewerID``, ``asin``, ``overall``,
``unixReviewTime``). :func:`prepare_raw` turns such a log into a folder that
:func:`~ibmrec_tf.data.load_dataset` reads:

1. read every row (:func:`read_raw_log`); a missing column, a row that is not UTF-8 or not
   JSON, an empty id, a rating or timestamp that is not a number is a :class:`DataError` naming
   the file and row;
2. drop repeated (user, item) pairs, keeping the earliest (by timestamp where there is one,
   else by file order);
3. optionally keep only ratings ``>= min_rating``;
4. the iterated k-core filter (:func:`k_core`): users and items with fewer than ``k``
   interactions are removed, again and again, until every remaining user and item has ``k``;
5. each user's interactions split into train / valid / test (:func:`split_labels`): at random
   (seeded; LATTICE's and MMHCL's protocol) or by timestamp, earliest first (MMRec's);
6. contiguous ids by sorted raw id, written as ``<name>.inter``, ``user_ids.tsv`` and
   ``item_ids.tsv`` (raw id -> id), ``dataset.json`` (what each step removed and the
   statistics) and a short ``README.md``.

Everything is computed in memory before anything is written; the folder is written under a
temporary name beside its destination and renamed into place, so a failed run leaves nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import time
from typing import Iterator, Sequence

import numpy as np

from ibmrec_tf.data.dataset import SPLITS, DataError

#: Column names of the Amazon review files (McAuley et al.'s JSON lines), the field's usual source.
DEFAULT_COLUMNS = {"user": "reviewerID", "item": "asin", "rating": "overall",
                   "timestamp": "unixReviewTime"}
#: The name of the card every prepared folder carries; ``--overwrite`` replaces only such folders.
CARD = "dataset.json"
RAW_FORMATS = ("auto", "csv", "tsv", "jsonl")
SPLIT_METHODS = ("random", "chronological")


@dataclasses.dataclass
class RawLog:
    """The rows of a raw log, in file order.

    Attributes:
      users, items: raw ids as strings (object arrays).
      ratings: float64 ratings, or ``None`` where the log has no rating column.
      timestamps: float64 timestamps (seconds), or ``None`` where it has no timestamp column.
      lines: the file line of each row (for messages).
      path, fmt: the file and its format (``csv``, ``tsv`` or ``jsonl``).
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None
    timestamps: np.ndarray | None
    lines: np.ndarray
    path: str
    fmt: str

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: np.ndarray) -> "RawLog":
        return dataclasses.replace(
            self, users=self.users[index], items=self.items[index], lines=self.lines[index],
            ratings=None if self.ratings is None else self.ratings[index],
            timestamps=None if self.timestamps is None else self.timestamps[index])


def detect_format(path: str) -> str:
    """``csv``, ``tsv`` or ``jsonl`` from the file name (a ``.gz`` suffix is looked through)."""
    name = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(name)[1].lower()
    if ext == ".csv":
        return "csv"
    if ext in (".tsv", ".tab", ".txt", ".inter"):
        return "tsv"
    if ext in (".json", ".jsonl", ".ndjson"):
        return "jsonl"
    raise DataError(f"{path}: cannot tell the format from the extension {ext!r}; give "
                    f"--raw_format=csv, tsv or jsonl")


def _open_lines(path: str, encoding: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line, decoded, with a one-line error on a bad byte."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        handle = opener(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    with handle:
        try:
            for lineno, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode(encoding)
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not {encoding} text (byte {e.start + 1} of "
                                    f"the line); give the file's encoding with --raw_encoding"
                                    ) from None
                if lineno == 1 and text.startswith("\ufeff"):
                    text = text[1:]
                yield lineno, text
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{path}: cannot read: {e}") from None


def _number(path: str, lineno: int, column: str, value, kind: str) -> float:
    if isinstance(value, bool):
        value = None
    if isinstance(value, (int, float)):
        result = float(value)
    else:
        text = "" if value is None else str(value).strip()
        try:
            result = float(text)
        except ValueError:
            result = None
            if kind == "timestamp" and text:
                try:  # an ISO date or date-time
                    stamp = datetime.datetime.fromisoformat(text)
                    if stamp.tzinfo is None:
                        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
                    result = stamp.timestamp()
                except ValueError:
                    pass
            if result is None:
                what = "a number or an ISO date" if kind == "timestamp" else "a number"
                raise DataError(f"{path}:{lineno}: {kind} {text!r} in column {column!r} is not "
                                f"{what}") from None
    if not np.isfinite(result):
        raise DataError(f"{path}:{lineno}: {kind} {value!r} in column {column!r} is not finite")
    return result


def _raw_id(path: str, lineno: int, column: str, value) -> str:
    if value is None or isinstance(value, (dict, list)):
        raise DataError(f"{path}:{lineno}: column {column!r} holds {value!r}, not an id")
    text = str(value).strip()
    if not text:
        raise DataError(f"{path}:{lineno}: empty id in column {column!r}")
    if "\t" in text or "\n" in text or "\r" in text:
        raise DataError(f"{path}:{lineno}: the id in column {column!r} holds a tab or a newline")
    return text


def read_raw_log(path: str, *, user_column: str = DEFAULT_COLUMNS["user"],
                 item_column: str = DEFAULT_COLUMNS["item"],
                 rating_column: str | None = DEFAULT_COLUMNS["rating"],
                 timestamp_column: str | None = DEFAULT_COLUMNS["timestamp"],
                 require_rating: bool = False, require_timestamp: bool = False,
                 fmt: str = "auto", encoding: str = "utf-8") -> RawLog:
    """Reads a raw log's rows.

    The user and item columns must exist. The rating and timestamp columns are read where the
    file has them and ignored where it does not, unless ``require_rating`` /
    ``require_timestamp`` (a rating threshold, a chronological split) make them necessary.
    CSV and TSV files need a header line naming the columns; in JSON lines every row is an
    object and a row lacking a required key is an error.

    Raises:
      DataError: one line naming the file, the row and what is wrong.
    """
    if fmt not in RAW_FORMATS:
        raise ValueError(f"fmt must be one of {RAW_FORMATS}, got {fmt!r}")
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    fmt = detect_format(path) if fmt == "auto" else fmt
    wanted = {"user": user_column, "item": item_column, "rating": rating_column,
              "timestamp": timestamp_column}
    required = {"user", "item"} | ({"rating"} if require_rating else set()) \
        | ({"timestamp"} if require_timestamp else set())
    for role in required:
        if not wanted[role]:
            raise ValueError(f"a {role} column name is required")
    users, items, ratings, stamps, lines = [], [], [], [], []
    lines_iter = _open_lines(path, encoding)
    if fmt == "jsonl":
        use = None
        for lineno, text in lines_iter:
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not a JSON object ({e.msg}, column {e.colno})"
                                ) from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object per line, found "
                                f"{type(row).__name__}")
            if use is None:  # the optional columns are those the first row has
                use = {role for role, name in wanted.items()
                       if name and (role in required or name in row)}
            for role in required:
                if wanted[role] not in row:
                    raise DataError(f"{path}:{lineno}: no key {wanted[role]!r} (the {role} "
                                    f"column; keys: {sorted(row)[:8]})")
            users.append(_raw_id(path, lineno, user_column, row[user_column]))
            items.append(_raw_id(path, lineno, item_column, row[item_column]))
            if "rating" in use:
                ratings.append(_number(path, lineno, rating_column, row.get(rating_column),
                                       "rating"))
            if "timestamp" in use:
                stamps.append(_number(path, lineno, timestamp_column,
                                      row.get(timestamp_column), "timestamp"))
            lines.append(lineno)
        use = use or set()
    else:
        delimiter = "," if fmt == "csv" else "\t"
        numbered = ((lineno, text) for lineno, text in lines_iter)
        first = next(numbered, None)
        while first is not None and not first[1].strip():
            first = next(numbered, None)
        if first is None:
            raise DataError(f"{path}: file is empty (expected a header line naming the "
                            f"columns)")
        header = next(csv.reader([first[1]], delimiter=delimiter))
        header = [h.strip() for h in header]
        index = {}
        for role, name in wanted.items():
            if name and name in header:
                index[role] = header.index(name)
            elif role in required:
                raise DataError(f"{path}:{first[0]}: no column {name!r} (the {role} column) in "
                                f"the header {header[:8]}; name it with --{role}_column")
        use = set(index)
        source_lines: list[int] = []

        def feed():
            for lineno, text in numbered:
                source_lines.append(lineno)
                yield text

        reader = csv.reader(feed(), delimiter=delimiter)
        width = len(header)
        for fields in reader:
            lineno = source_lines[-1] if source_lines else first[0]
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) < width:
                raise DataError(f"{path}:{lineno}: {len(fields)} fields, the header has {width}")
            users.append(_raw_id(path, lineno, user_column, fields[index["user"]]))
            items.append(_raw_id(path, lineno, item_column, fields[index["item"]]))
            if "rating" in use:
                ratings.append(_number(path, lineno, rating_column, fields[index["rating"]],
                                       "rating"))
            if "timestamp" in use:
                stamps.append(_number(path, lineno, timestamp_column, fields[index["timestamp"]],
                                      "timestamp"))
            lines.append(lineno)
    if not users:
        raise DataError(f"{path}: no interactions (the file has no data rows)")
    return RawLog(users=np.asarray(users, dtype=object), items=np.asarray(items, dtype=object),
                  ratings=np.asarray(ratings, np.float64) if "rating" in use else None,
                  timestamps=np.asarray(stamps, np.float64) if "timestamp" in use else None,
                  lines=np.asarray(lines, np.int64), path=path, fmt=fmt)


def drop_duplicates(log: RawLog) -> tuple[RawLog, int]:
    """Keeps one row per (user, item) pair: the earliest by timestamp, else the first in the file."""
    _, user_codes = np.unique(log.users, return_inverse=True)
    _, item_codes = np.unique(log.items, return_inverse=True)
    key = user_codes.astype(np.int64) * (int(item_codes.max()) + 1) + item_codes
    order = np.arange(len(log)) if log.timestamps is None else \
        np.lexsort((np.arange(len(log)), log.timestamps))
    _, first = np.unique(key[order], return_index=True)
    keep = np.sort(order[first])
    return log.take(keep), len(log) - len(keep)


def k_core(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, list[dict]]:
    """The iterated k-core: a mask of the rows kept and what each round removed.

    Each round drops every row whose user or item has fewer than ``k`` rows among those still
    kept, until a round drops nothing. ``users`` and ``items`` are integer codes.
    """
    keep = np.ones(len(users), bool)
    rounds = []
    if k <= 1:
        return keep, rounds
    while True:
        user_degree = np.bincount(users[keep], minlength=int(users.max()) + 1)
        item_degree = np.bincount(items[keep], minlength=int(items.max()) + 1)
        drop = keep & ((user_degree[users] < k) | (item_degree[items] < k))
        if not drop.any():
            return keep, rounds
        before_users = np.count_nonzero(user_degree)
        before_items = np.count_nonzero(item_degree)
        keep &= ~drop
        rounds.append({
            "round": len(rounds) + 1,
            "interactions_removed": int(drop.sum()),
            "users_removed": int(before_users - len(np.unique(users[keep]))),
            "items_removed": int(before_items - len(np.unique(items[keep]))),
        })
        if not keep.any():
            return keep, rounds


def split_labels(users: np.ndarray, *, method: str, ratios: Sequence[float] = (0.8, 0.1, 0.1),
                 timestamps: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Each row's split: 0 train, 1 valid, 2 test, decided per user.

    A user with ``n`` interactions gets ``round(n * ratios[1])`` valid and ``round(n * ratios[2])``
    test interactions, at least one of each when ``n >= 3`` (and one test when ``n == 2``); the
    rest, at least one, are training. ``random`` orders each user's rows by a seeded random key;
    ``chronological`` by timestamp, ties in file order, so that the latest go to test.
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"method must be one of {SPLIT_METHODS}, got {method!r}")
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
        raise ValueError(f"ratios must be three non-negative shares of train, valid, test summing "
                         f"to 1, got {tuple(ratios)}")
    n = len(users)
    if method == "random":
        within = np.random.default_rng(seed).permutation(n)
    else:
        if timestamps is None:
            raise ValueError("a chronological split needs timestamps")
        within = np.argsort(np.lexsort((np.arange(n), timestamps)), kind="stable")
    order = np.lexsort((within, users))
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    counts = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, counts)
    count = np.repeat(counts, counts)
    n_valid = np.floor(count * ratios[1] + 0.5).astype(np.int64)
    n_test = np.floor(count * ratios[2] + 0.5).astype(np.int64)
    if ratios[1] > 0:
        n_valid = np.where(count >= 3, np.maximum(n_valid, 1), 0)
    if ratios[2] > 0:
        n_test = np.where(count >= 2, np.maximum(n_test, 1), 0)
    overflow = np.maximum(n_valid + n_test - (count - 1), 0)  # keep one training row
    n_valid = n_valid - np.minimum(overflow, n_valid)
    n_test = np.minimum(n_test, count - 1 - n_valid)
    n_train = count - n_valid - n_test
    labels_sorted = np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2))
    labels = np.empty(n, np.int64)
    labels[order] = labels_sorted
    return labels


@dataclasses.dataclass
class PreparedDataset:
    """What :func:`prepare_raw` wrote: the folder and its card (``dataset.json``'s content)."""

    folder: str
    card: dict

    def summary(self) -> str:
        stats = self.card["statistics"]
        inter = stats["interactions"]
        return (f"{self.folder}: {stats['users']} users, {stats['items']} items, "
                f"train/valid/test {inter['train']}/{inter['valid']}/{inter['test']}, "
                f"density {stats['density']:.2e}")


def _quantiles(degree: np.ndarray) -> dict:
    if len(degree) == 0:
        return {}
    points = {"min": 0.0, "p25": 0.25, "median": 0.5, "p75": 0.75, "p90": 0.9, "p99": 0.99,
              "max": 1.0}
    return {name: float(np.quantile(degree, q)) for name, q in points.items()} | \
        {"mean": float(degree.mean())}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def prepare_raw(path: str, out_dir: str, name: str, *,
                user_column: str = DEFAULT_COLUMNS["user"],
                item_column: str = DEFAULT_COLUMNS["item"],
                rating_column: str | None = DEFAULT_COLUMNS["rating"],
                timestamp_column: str | None = DEFAULT_COLUMNS["timestamp"],
                fmt: str = "auto", encoding: str = "utf-8", min_rating: float | None = None,
                k: int = 5, split: str = "random",
                ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                overwrite: bool = False, command: str = "") -> PreparedDataset:
    """Turns the raw log ``path`` into the dataset folder ``<out_dir>/<name>/``.

    Args:
      path: the raw log (CSV, TSV, JSON lines; ``.gz`` read through).
      out_dir, name: where to write, and the dataset's name (``<name>.inter``).
      user_column, item_column, rating_column, timestamp_column: the columns (JSON keys).
      fmt, encoding: the log's format (``auto`` from the extension) and text encoding.
      min_rating: keep only rows rated at least this (``None``: keep all).
      k: the k-core threshold (``<= 1``: no filter).
      split: ``random`` (seeded, per user) or ``chronological`` (per user, by timestamp).
      ratios: train / valid / test shares per user.
      seed: the random split's seed.
      overwrite: replace an existing ``<out_dir>/<name>/``, which must be a folder this function
        wrote (it holds ``dataset.json``).
      command: the command line recorded in the card.

    Raises:
      DataError: bad input, or a filter that leaves nothing; nothing is written then.
      FileExistsError: the destination exists and may not be replaced.
    """
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"the dataset name must be a plain folder name, got {name!r}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    target = os.path.join(out_dir, name)
    _check_target(target, overwrite)
    started = time.time()
    log = read_raw_log(path, user_column=user_column, item_column=item_column,
                       rating_column=rating_column, timestamp_column=timestamp_column,
                       require_rating=min_rating is not None,
                       require_timestamp=split == "chronological", fmt=fmt, encoding=encoding)
    steps = {"rows_read": len(log), "users_read": int(len(np.unique(log.users))),
             "items_read": int(len(np.unique(log.items)))}
    log, duplicates = drop_duplicates(log)
    steps["duplicate_pairs_dropped"] = duplicates
    if min_rating is not None:
        kept = log.ratings >= min_rating
        steps["below_min_rating_dropped"] = int((~kept).sum())
        log = log.take(np.flatnonzero(kept))
        if not len(log):
            raise DataError(f"{path}: no interaction is rated >= {min_rating} (column "
                            f"{rating_column!r}); lower --min_rating")
    _, user_codes = np.unique(log.users, return_inverse=True)
    _, item_codes = np.unique(log.items, return_inverse=True)
    keep, rounds = k_core(user_codes, item_codes, k)
    steps["k_core"] = {"k": k, "rounds": rounds,
                       "interactions_removed": int(sum(r["interactions_removed"] for r in rounds))}
    if not keep.any():
        raise DataError(f"{path}: the {k}-core filter leaves no interaction ({len(log)} "
                        f"interactions of {len(np.unique(log.users))} users and "
                        f"{len(np.unique(log.items))} items before it); lower --k_core")
    log = log.take(np.flatnonzero(keep))
    user_raw, users = np.unique(log.users, return_inverse=True)
    item_raw, items = np.unique(log.items, return_inverse=True)
    labels = split_labels(users, method=split, ratios=ratios, timestamps=log.timestamps, seed=seed)

    num_users, num_items = len(user_raw), len(item_raw)
    per_split = {s: int((labels == i).sum()) for i, s in enumerate(SPLITS)}
    train_item_degree = np.bincount(items[labels == 0], minlength=num_items)
    card = {
        "name": name,
        "created_by": f"ibmrec_tf {_version()} (ibmrec_tf.data.raw.prepare_raw)",
        "command": command,
        "source": {"path": os.path.abspath(path), "format": log.fmt, "encoding": encoding,
                   "sha256": _sha256(path),
                   "columns": {"user": user_column, "item": item_column,
                               "rating": rating_column if log.ratings is not None else None,
                               "timestamp": timestamp_column if log.timestamps is not None
                               else None}},
        "steps": steps | ({"min_rating": min_rating} if min_rating is not None else {}),
        "split": {"method": split, "ratios": list(ratios),
                  "seed": seed if split == "random" else None,
                  "rule": "per user: round(n * valid share) valid and round(n * test share) "
                          "test, at least one each when n >= 3 (one test when n == 2), the rest "
                          "train"},
        "statistics": {
            "users": num_users, "items": num_items,
            "interactions": per_split | {"total": len(labels)},
            "density": len(labels) / (num_users * num_items),
            "user_degree": _quantiles(np.bincount(users, minlength=num_users)),
            "item_degree": _quantiles(np.bincount(items, minlength=num_items)),
            "items_without_training_interactions": int((train_item_degree == 0).sum()),
            "users_without_valid_or_test": int(num_users - len(np.unique(users[labels > 0]))),
        },
        "files": {"interactions": f"{name}.inter", "user_ids": "user_ids.tsv",
                  "item_ids": "item_ids.tsv"},
        "seconds": round(time.time() - started, 3),
    }
    os.makedirs(out_dir, exist_ok=True)
    partial = os.path.join(out_dir, f".{name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        _write_folder(partial, name, users, items, labels, log, user_raw, item_raw, card)
        _replace(partial, target, overwrite)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return PreparedDataset(folder=target, card=card)


def _version() -> str:
    from ibmrec_tf import __version__

    return __version__


def _check_target(target: str, overwrite: bool) -> None:
    if not os.path.lexists(target):
        return
    if not overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
    if not os.path.isfile(os.path.join(target, CARD)):
        raise FileExistsError(f"{target} exists and is not a folder written by prepare_data "
                              f"(no {CARD}); --overwrite replaces only such folders: remove it "
                              f"by hand or choose another --out_dir / --dataset")


def _replace(partial: str, target: str, overwrite: bool) -> None:
    _check_target(target, overwrite)
    if os.path.lexists(target):
        old = f"{target}.old-{os.getpid()}"
        os.rename(target, old)
        os.rename(partial, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(partial, target)


def _write_folder(folder, name, users, items, labels, log, user_raw, item_raw, card) -> None:
    order = np.lexsort((np.arange(len(users)), labels, users))
    columns = ["userID", "itemID"]
    extra = []
    if log.ratings is not None:
        columns.append("rating")
        extra.append(log.ratings)
    if log.timestamps is not None:
        columns.append("timestamp")
        extra.append(log.timestamps)
    columns.append("x_label")
    buffer = io.StringIO()
    buffer.write("\t".join(columns) + "\n")
    for row in order:
        values = [str(users[row]), str(items[row])]
        values += [_number_text(column[row]) for column in extra]
        values.append(str(labels[row]))
        buffer.write("\t".join(values) + "\n")
    with open(os.path.join(folder, f"{name}.inter"), "w", encoding="utf-8") as f:
        f.write(buffer.getvalue())
    for fname, raw in (("user_ids.tsv", user_raw), ("item_ids.tsv", item_raw)):
        with open(os.path.join(folder, fname), "w", encoding="utf-8") as f:
            f.write("raw_id\tid\n")
            f.writelines(f"{r}\t{i}\n" for i, r in enumerate(raw))
    with open(os.path.join(folder, CARD), "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(dataset_readme(card))


def dataset_readme(card: dict) -> str:
    """The human-readable dataset card written beside ``dataset.json``."""
    stats, steps, split = card["statistics"], card["steps"], card["split"]
    inter = stats["interactions"]
    core = steps["k_core"]
    lines = [
        f"# {card['name']}",
        "",
        f"Made by `{card['command'] or 'ibmrec_tf.data.raw.prepare_raw'}` from "
        f"`{card['source']['path']}` ({card['source']['format']}, sha256 "
        f"{card['source']['sha256'][:12]}...).",
        "",
        f"- Read: {steps['rows_read']} rows, {steps['users_read']} users, "
        f"{steps['items_read']} items.",
        f"- Duplicate (user, item) pairs dropped: {steps['duplicate_pairs_dropped']}.",
    ]
    if "min_rating" in steps:
        lines.append(f"- Rated below {steps['min_rating']}: {steps['below_min_rating_dropped']} "
                     f"dropped.")
    lines.append(f"- {core['k']}-core filter: {len(core['rounds'])} round(s), "
                 f"{core['interactions_removed']} interactions removed"
                 + "".join(f"; round {r['round']}: {r['users_removed']} users, "
                           f"{r['items_removed']} items, {r['interactions_removed']} interactions"
                           for r in core["rounds"]) + ".")
    lines += [
        f"- Split: {split['method']} per user, shares {split['ratios']}"
        + (f", seed {split['seed']}" if split["seed"] is not None else "") + ".",
        "",
        "| users | items | train | valid | test | density |",
        "|---|---|---|---|---|---|",
        f"| {stats['users']} | {stats['items']} | {inter['train']} | {inter['valid']} | "
        f"{inter['test']} | {stats['density']:.2e} |",
        "",
        f"Interactions per user: median {stats['user_degree']['median']:g}, "
        f"90th percentile {stats['user_degree']['p90']:g}, max {stats['user_degree']['max']:g}; "
        f"per item: median {stats['item_degree']['median']:g}, 90th percentile "
        f"{stats['item_degree']['p90']:g}, max {stats['item_degree']['max']:g}. "
        f"{stats['items_without_training_interactions']} items have no training interaction "
        f"(cold items, scored from their features).",
        "",
        "Files: `" + card["files"]["interactions"] + "` (userID, itemID, x_label: 0 train, "
        "1 valid, 2 test), `user_ids.tsv` and `item_ids.tsv` (raw id -> id), `dataset.json` "
        "(this card, machine-readable). Item features go beside them as `<modality>_feat.npy` "
        "(`python -m runners.extract_features`).",
        "",
    ]
    return "\n".join(lines)


def read_id_map(path: str) -> list[str]:
    """The raw ids of ``user_ids.tsv`` / ``item_ids.tsv``, indexed by id (checked contiguous)."""
    raw = []
    for lineno, text in _open_lines(path, "utf-8"):
        text = text.rstrip("\r\n")
        if lineno == 1:
            if text.split("\t")[:2] != ["raw_id", "id"]:
                raise DataError(f"{path}:1: expected the header 'raw_id\\tid'")
            continue
        if not text:
            continue
        fields = text.split("\t")
        if len(fields) != 2 or not fields[1].isdigit() or int(fields[1]) != len(raw):
            raise DataError(f"{path}:{lineno}: expected 'raw id<TAB>{len(raw)}'")
        raw.append(fields[0])
    return raw
