"""Item features for a dataset folder, in resumable chunks, with a report of what is missing.

:func:`extract` encodes one modality's sources (image paths or texts, one per item row, in the
dataset's item-id order) and writes ``<modality>_feat.npy`` (float32 ``[num_items, dim]``),
``<modality>_missing.npy`` (bool ``[num_items]``, where some item has no usable source) and the
modality's entry of ``extract_report.json``.

* Chunks: rows are encoded ``chunk_size`` at a time, each chunk saved (written under a
  temporary name, then renamed) in ``<dataset_dir>/.extract-<modality>/`` beside a
  ``meta.json`` of the encoder and the sources. An interrupted run (a kill, a crash, Ctrl-C)
  continues with ``resume=True`` from the chunks already saved, provided the encoder and the
  sources are the same; the finished files appear only when every chunk is done.
* Missing sources: an item without an image file or a text row, with an empty text, or whose
  image does not decode, gets a zero row and is marked in ``<modality>_missing.npy``, which the
  loaders read: such an item is nobody's neighbour in that modality's kNN graph and has no
  neighbours of its own (a cold feature), and the report lists each one with its reason. More
  than ``max_missing`` of the items missing is an error (:class:`ExtractError`); it is checked
  before encoding for the sources known to be absent and after encoding for the rest.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Callable, Sequence

import numpy as np

from ibmrec_tf.data.dataset import FEATURE_SUFFIX, MISSING_SUFFIX, DataError
from ibmrec_tf.features.encoders import IMAGE_EXTENSIONS

REPORT = "extract_report.json"


class ExtractError(DataError):
    """A feature extraction that cannot go on; one line naming what to do."""


def item_raw_ids(dataset_dir: str) -> list[str]:
    """The raw id of each item row: ``item_ids.tsv`` where present (written by
    ``prepare_data``), else the item ids themselves (``'0'``, ``'1'``, ...) of the folder's
    interactions."""
    from ibmrec_tf.data.formats import load_dataset
    from ibmrec_tf.data.raw import read_id_map

    mapping = os.path.join(dataset_dir, "item_ids.tsv")
    if os.path.isfile(mapping):
        return read_id_map(mapping)
    folder = os.path.abspath(dataset_dir)
    data = load_dataset(os.path.dirname(folder), os.path.basename(folder), modalities=[])
    return [str(i) for i in range(data.num_items)]


def image_sources(spec: str, raw_ids: Sequence[str]) -> tuple[list[str | None], list[str | None]]:
    """Each item's image path (``None`` where it has none) from a folder or a CSV, and why
    each ``None`` is one.

    A folder holds files named ``<raw item id><extension>`` (one of ``IMAGE_EXTENSIONS``,
    any case); a CSV has a header line, then ``raw item id, path`` rows (a relative path is
    taken from the CSV's folder). Files and rows of ids that are not items are ignored.
    """
    by_id: dict[str, str] = {}
    if os.path.isdir(spec):
        for name in sorted(os.listdir(spec)):
            stem, ext = os.path.splitext(name)
            if ext.lower() in IMAGE_EXTENSIONS and os.path.isfile(os.path.join(spec, name)):
                by_id.setdefault(stem, os.path.join(spec, name))
    elif os.path.isfile(spec):
        base = os.path.dirname(os.path.abspath(spec))
        for lineno, fields in _rows(spec, ","):
            if len(fields) < 2:
                raise ExtractError(f"{spec}:{lineno}: expected 'item id,path'")
            path = fields[1].strip()
            by_id.setdefault(fields[0].strip(), path if os.path.isabs(path)
                             else os.path.join(base, path))
    else:
        raise ExtractError(f"{spec}: no such folder or CSV file of images (--images)")
    sources, reasons = [], []
    for r in raw_ids:
        path = by_id.get(r)
        if path is None:
            sources.append(None)
            reasons.append("no image file" if os.path.isdir(spec) else "no row in the CSV")
        elif not os.path.isfile(path):
            sources.append(None)
            reasons.append(f"image file not found: {path}")
        else:
            sources.append(path)
            reasons.append(None)
    return sources, reasons


def text_sources(path: str, raw_ids: Sequence[str]) -> tuple[list[str | None], list[str | None]]:
    """Each item's text from a TSV with a header line: raw item id, then the text (the
    remaining columns are joined with spaces: title, description, ...), and why each ``None``
    is one."""
    if not os.path.isfile(path):
        raise ExtractError(f"{path}: no such file of texts (--texts)")
    by_id: dict[str, str] = {}
    for lineno, fields in _rows(path, "\t"):
        if len(fields) < 2:
            raise ExtractError(f"{path}:{lineno}: expected 'item id<TAB>text'")
        text = " ".join(f.strip() for f in fields[1:] if f.strip())
        by_id.setdefault(fields[0].strip(), text)
    sources = [by_id.get(r) or None for r in raw_ids]
    reasons = [None if s is not None else ("empty text" if r in by_id else "no row in the TSV")
               for r, s in zip(raw_ids, sources)]
    return sources, reasons


def _rows(path: str, delimiter: str):
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            if next(reader, None) is None:
                raise ExtractError(f"{path}: file is empty (expected a header line)")
            for fields in reader:
                if fields and any(x.strip() for x in fields):
                    yield reader.line_num, fields
    except UnicodeDecodeError as e:
        raise ExtractError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise ExtractError(f"{path}: cannot parse ({e})") from None


@dataclasses.dataclass
class ExtractResult:
    """One modality's extraction: what was written and what is missing."""

    modality: str
    feature_file: str
    dim: int
    num_items: int
    missing: list[dict]
    seconds: float
    encoded: int
    resumed_chunks: int

    @property
    def items_per_second(self) -> float:
        return self.encoded / self.seconds if self.encoded and self.seconds > 0 else float("nan")


def _fingerprint(sources: Sequence[str | None]) -> str:
    digest = hashlib.sha256()
    for source in sources:
        digest.update((source or "").encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def _save_atomic(path: str, write: Callable[[str], None]) -> None:
    partial = path + ".partial"
    write(partial)
    os.replace(partial, path)


class Progress:
    """A progress line on stderr: items done, share, items per second, time left.

    Written here rather than with ``keras.utils.Progbar``, whose output in a log file (no
    terminal) runs its updates together on one line with colour codes: on a terminal this line
    is redrawn in place, in a log a new line is written every ``log_every`` seconds and at the
    end.
    """

    def __init__(self, label: str, total: int, enabled: bool, log_every: float = 30.0):
        self.enabled = enabled and total > 0
        self.total, self.done, self.label = total, 0, label
        self.tty = enabled and sys.stderr.isatty()
        self.log_every = log_every
        self.last = 0.0

    def add(self, count: int, encoded: int, encode_seconds: float) -> None:
        self.done += count
        if not self.enabled:
            return
        now = time.time()
        finished = self.done >= self.total
        if not (self.tty or finished or now - self.last >= self.log_every):
            return
        self.last = now
        line = f"{self.label}: {self.done}/{self.total} items ({self.done / self.total:.0%})"
        if encoded and encode_seconds > 0:
            rate = encoded / encode_seconds
            line += f", {rate:.1f} items/s"
            if not finished:
                line += f", about {(self.total - self.done) / rate:.0f} s left"
        if self.tty:
            sys.stderr.write("\r" + line + ("\n" if finished else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def extract(dataset_dir: str, modality: str, sources: Sequence[str | None], encoder, *,
            reasons: Sequence[str | None] | None = None,
            raw_ids: Sequence[str] | None = None, chunk_size: int = 1024,
            resume: bool = False, overwrite: bool = False, max_missing: float = 0.2,
            progress: bool = True) -> ExtractResult:
    """Encodes ``sources`` (one per item row; ``None`` = missing) into the dataset folder.

    Args:
      dataset_dir: the dataset folder; the outputs are written into it.
      modality: the feature's name (``image``, ``text``): ``<modality>_feat.npy``.
      sources: one image path or text per item, in item-id order; ``None`` where there is none.
      encoder: an object of the surface in :mod:`ibmrec_tf.features.encoders`.
      reasons: why each ``None`` source is missing (for the report).
      raw_ids: each item's raw id (for the report).
      chunk_size: items per saved chunk.
      resume: continue from the chunks of an interrupted run.
      overwrite: replace existing output and discard an interrupted run's chunks.
      max_missing: the largest share of items allowed to have no usable source.
      progress: print a progress line to stderr (with items per second).

    Raises:
      ExtractError: existing output without ``overwrite``, an interrupted run without
        ``resume`` or ``overwrite``, a resume with another encoder or other sources, or more
        than ``max_missing`` of the items missing.
    """
    num_items = len(sources)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if not 0.0 <= max_missing <= 1.0:
        raise ValueError(f"max_missing must be in [0, 1], got {max_missing}")
    feature_file = os.path.join(dataset_dir, modality + FEATURE_SUFFIX)
    missing_file = os.path.join(dataset_dir, modality + MISSING_SUFFIX)
    work = os.path.join(dataset_dir, f".extract-{modality}")
    meta = {"modality": modality, "encoder": encoder.spec, "num_items": num_items,
            "chunk_size": chunk_size, "sources_sha256": _fingerprint(sources)}
    if os.path.isdir(work):
        if overwrite and not resume:
            shutil.rmtree(work)
        elif not resume:
            raise ExtractError(f"{work}: an interrupted {modality} extraction is here; pass "
                               f"--resume to continue it or --overwrite to start afresh")
        else:
            _check_meta(work, meta)
    elif resume and os.path.isfile(feature_file) and not overwrite:
        raise ExtractError(f"{feature_file} is complete: there is nothing to resume (pass "
                           f"--overwrite to extract it afresh)")
    if os.path.isfile(feature_file) and not overwrite and not os.path.isdir(work):
        raise ExtractError(f"{feature_file} already exists; pass --overwrite to replace it")

    absent = np.array([s is None for s in sources], bool)
    reasons = list(reasons) if reasons is not None else [None] * num_items
    _check_share(absent.sum(), num_items, max_missing, modality, "before encoding")
    started = time.time()
    encoder.fit(sources)
    os.makedirs(work, exist_ok=True)
    meta_path = os.path.join(work, "meta.json")
    if not os.path.isfile(meta_path):
        _save_atomic(meta_path, lambda p: _write_json(p, meta))

    failed = np.zeros(num_items, bool)
    bar = Progress(f"{modality} ({_describe(encoder)})", num_items, progress)
    encoded = resumed = 0
    encode_seconds = 0.0
    for start in range(0, num_items, chunk_size):
        stop = min(start + chunk_size, num_items)
        chunk_path = os.path.join(work, f"chunk_{start:010d}.npz")
        if os.path.isfile(chunk_path):
            with np.load(chunk_path) as chunk:
                failed[start:stop] = chunk["failed"]
            resumed += 1
            bar.add(stop - start, encoded, encode_seconds)
            continue
        rows = np.flatnonzero(~absent[start:stop])
        features = np.zeros((stop - start, encoder.dim), np.float32)
        chunk_failed = np.zeros(stop - start, bool)
        if len(rows):
            t0 = time.time()
            values, ok = encoder.encode([sources[start + r] for r in rows])
            encode_seconds += time.time() - t0
            encoded += len(rows)
            features[rows] = values
            chunk_failed[rows[~ok]] = True
        failed[start:stop] = chunk_failed

        def write_chunk(path, features=features, chunk_failed=chunk_failed):
            with open(path, "wb") as f:
                np.savez(f, features=features, failed=chunk_failed)

        _save_atomic(chunk_path, write_chunk)
        bar.add(stop - start, encoded, encode_seconds)

    missing_mask = absent | failed
    for row in np.flatnonzero(failed):
        reasons[row] = "image could not be decoded" if encoder.spec["kind"] == "image" \
            else "text could not be encoded"
    missing = [{"item": int(i)} | ({"raw_id": raw_ids[i]} if raw_ids is not None else {})
               | {"reason": reasons[i] or "no source"} for i in np.flatnonzero(missing_mask)]
    seconds = time.time() - started
    result = ExtractResult(modality=modality, feature_file=feature_file, dim=encoder.dim,
                           num_items=num_items, missing=missing, seconds=seconds,
                           encoded=encoded, resumed_chunks=resumed)
    share_ok = bool(missing_mask.sum() <= max_missing * num_items)
    _write_report(dataset_dir, result, encoder, complete=share_ok, max_missing=max_missing)
    _check_share(missing_mask.sum(), num_items, max_missing, modality, "after encoding",
                 report=os.path.join(dataset_dir, REPORT))

    def write_features(path):
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                        shape=(num_items, encoder.dim))
        for start in range(0, num_items, chunk_size):
            with np.load(os.path.join(work, f"chunk_{start:010d}.npz")) as chunk:
                out[start:start + chunk_size] = chunk["features"]
        out.flush()
        del out

    _save_atomic(feature_file, write_features)
    if missing_mask.any():
        _save_atomic(missing_file, lambda p: _save_npy(p, missing_mask))
    elif os.path.isfile(missing_file):
        os.remove(missing_file)
    shutil.rmtree(work, ignore_errors=True)
    return result


def _describe(encoder) -> str:
    spec = encoder.spec
    name = spec.get("model") or spec.get("preset") or spec.get("encoder")
    return f"{name}, weights {spec['weights']}" if "weights" in spec else str(name)


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def _write_json(path: str, payload) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")


def _check_meta(work: str, meta: dict) -> None:
    path = os.path.join(work, "meta.json")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        raise ExtractError(f"{path}: unreadable; pass --overwrite to start afresh") from None
    for key in ("encoder", "num_items", "chunk_size", "sources_sha256"):
        if saved.get(key) != meta[key]:
            what = {"sources_sha256": "the item sources (image files or texts)"}.get(key, key)
            raise ExtractError(f"{work}: cannot resume: {what} differ from the interrupted run's "
                               f"({saved.get(key)!r} there, {meta[key]!r} now); pass "
                               f"--overwrite to start afresh")


def _check_share(count: int, total: int, limit: float, modality: str, when: str,
                 report: str | None = None) -> None:
    if total and count > limit * total:
        where = f"; each is listed in {report}" if report else ""
        raise ExtractError(f"{int(count)} of {total} items ({count / total:.1%}) have no usable "
                           f"{modality} source {when}, more than --max_missing={limit:g}{where}")


def _write_report(dataset_dir: str, result: ExtractResult, encoder, *, complete: bool,
                  max_missing: float) -> None:
    path = os.path.join(dataset_dir, REPORT)
    report = {}
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
        except (OSError, ValueError):
            report = {}
    report[result.modality] = {
        "complete": complete,
        "feature_file": os.path.basename(result.feature_file) if complete else None,
        "missing_file": (result.modality + MISSING_SUFFIX) if complete and result.missing
        else None,
        "encoder": encoder.spec | {"dim": result.dim},
        "items": result.num_items,
        "missing_count": len(result.missing),
        "max_missing": max_missing,
        "fill": "a zero row, marked True in the missing mask",
        "missing": result.missing,
        "encoded_this_run": result.encoded,
        "chunks_resumed": result.resumed_chunks,
        "seconds": round(result.seconds, 3),
        "items_per_second": round(result.items_per_second, 2)
        if np.isfinite(result.items_per_second) else None,
    }
    _save_atomic(path, lambda p: _write_json(p, report))
