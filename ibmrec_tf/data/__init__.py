"""Datasets: the in-memory form, the on-disk formats, built-in data and the BPR input pipeline.

Each piece is in the module named for it:

* :mod:`~ibmrec_tf.data.dataset`: :class:`Dataset`, its validation, :class:`DataError`;
* :mod:`~ibmrec_tf.data.formats`: reading ``.inter`` / ``5-core`` JSON / ``*_feat.npy`` folders;
* :mod:`~ibmrec_tf.data.synthetic`: the built-in ``synthetic`` and ``planted`` datasets;
* :mod:`~ibmrec_tf.data.transforms`: seeded noise dimensions and training fractions;
* :mod:`~ibmrec_tf.data.sampler`: :class:`TripletSampler`, the BPR triplets per epoch;
* :mod:`~ibmrec_tf.data.raw`: a raw interaction log (CSV, TSV, JSON lines) to a dataset folder.

:func:`get_dataset` builds or loads a dataset by name.
"""

from __future__ import annotations

from typing import Sequence

from ibmrec_tf.data.dataset import (FEATURE_SUFFIX, MISSING_SUFFIX, SPLITS, STANDIN_MARKER,
                                    DataError, Dataset, assemble)
from ibmrec_tf.data.formats import (available_modalities, file_checksums, load_dataset,
                                    read_feature_file, read_features, read_inter,
                                    read_missing_masks, read_split_json)
from ibmrec_tf.data.sampler import TripletSampler
from ibmrec_tf.data.synthetic import GROUPS, PlantedData, make_planted, make_synthetic
from ibmrec_tf.data.transforms import with_noise_dims, with_train_fraction

#: names of the datasets built in memory instead of read from ``data_dir``
BUILT_IN = ("synthetic", "planted")


def get_dataset(name: str, data_dir: str, *, modalities: Sequence[str] | None = None,
                fmt: str = "auto", seed: int = 0) -> Dataset:
    """``'synthetic'`` and ``'planted'`` build the built-in datasets; any other name is loaded
    from ``data_dir``."""
    if name in BUILT_IN:
        data = make_synthetic(seed=seed) if name == "synthetic" else make_planted(seed=seed).dataset
        if modalities is not None:
            unknown = [m for m in modalities if m not in data.features]
            if unknown:
                raise DataError(f"{name}: no modality {unknown}; it has {list(data.features)}")
            data.features = {m: data.features[m] for m in modalities}
        return data
    return load_dataset(data_dir, name, modalities=modalities, fmt=fmt)


__all__ = ["BUILT_IN", "FEATURE_SUFFIX", "MISSING_SUFFIX", "GROUPS", "SPLITS", "STANDIN_MARKER", "DataError",
           "Dataset", "PlantedData", "TripletSampler", "assemble", "available_modalities",
           "file_checksums", "get_dataset", "load_dataset", "make_planted", "make_synthetic",
           "read_feature_file", "read_features", "read_inter", "read_missing_masks", "read_split_json",
           "with_noise_dims", "with_train_fraction"]
