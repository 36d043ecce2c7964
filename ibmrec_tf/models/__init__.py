"""Recommender models and the registry that builds them by name."""

from __future__ import annotations

import dataclasses

from ibmrec_tf.config import ConfigError
from ibmrec_tf.data import Dataset, DataError
from ibmrec_tf.models.base import ForwardResult, ModelConfig, Recommender, StepSeeds, Terms
from ibmrec_tf.models.cf import BPRMF, LightGCN
from ibmrec_tf.models.denoised import IBMRec, IBMRecMRdIB, MRdIB, DenoisedRecommender
from ibmrec_tf.models.freedom import FREEDOM
from ibmrec_tf.models.mgcn import MGCN
from ibmrec_tf.models.multimodal import (LATTICE, VBPR, VLATTICE, VLightGCN, BackboneOptions,
                                         ForwardInputs, MultimodalRecommender)
from ibmrec_tf.models.parts import Denoiser, OwnUpdate, StepContext

MODELS = {
    "bprmf": BPRMF,
    "lightgcn": LightGCN,
    "vbpr": VBPR,
    "vlightgcn": VLightGCN,
    "lattice": LATTICE,
    "vlattice": VLATTICE,
    "freedom": FREEDOM,
    "mgcn": MGCN,
    "ibmrec": IBMRec,
    "mrdib": MRdIB,
    "ibmrec_mrdib": IBMRecMRdIB,
}


def check_settings(name: str, config: ModelConfig) -> None:
    """Refuses a setting that model ``name`` does not read but that differs from its default.

    Each model declares the :class:`ModelConfig` fields it reads (``settings_read``: the
    backbone's, and each denoiser's as far as its terms apply on that backbone), so that a
    value that would change nothing (``alpha`` for VLATTICE, ``knn_k`` for VBPR, an MRdIB weight
    for IBMRec) is an error, not a run that silently ignores it.

    Raises:
      ConfigError: naming the first such field (the runners' flag), the model and its default.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    cls = MODELS[name]
    read = cls.settings_read(config)
    defaults = ModelConfig()
    for field in dataclasses.fields(ModelConfig):
        value, default = getattr(config, field.name), getattr(defaults, field.name)
        if field.name not in read and value != default:
            model = name + (f" on backbone {config.backbone}"
                            if issubclass(cls, DenoisedRecommender) else "")
            raise ConfigError(field.name, f"is not read by model {model} (leave it at its "
                              f"default, {default!r})", value)


def without_unread(name: str, config: ModelConfig) -> ModelConfig:
    """``config`` with every setting model ``name`` does not read reset to its default: one
    shared setting for several models (a study's flagfile, a test's), made acceptable to each."""
    read = settings_read(name, config)
    defaults = ModelConfig()
    return config.replace(**{f.name: getattr(defaults, f.name)
                             for f in dataclasses.fields(ModelConfig) if f.name not in read})


def settings_read(name: str, config: ModelConfig) -> frozenset[str]:
    """The :class:`ModelConfig` fields model ``name`` reads under ``config``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name].settings_read(config)


def build_model(name: str, dataset: Dataset, config: ModelConfig, *, seed: int = 0) -> Recommender:
    """Builds the model registered as ``name`` for ``dataset``; ``seed`` seeds its stateless
    samples (edge masks, projection noise, the HSIC sample), with the step counter.

    Raises:
      ConfigError: a setting the model does not read is not at its default
        (:func:`check_settings`).
    """
    check_settings(name, config)
    cls = MODELS[name]
    if cls.multimodal and not dataset.features:
        raise DataError(f"model {name!r} needs item features, but dataset {dataset.name!r} "
                        f"({dataset.source}) has no <modality>_feat.npy file")
    return cls(dataset, config, seed=seed, name=name)


__all__ = ["MODELS", "build_model", "check_settings", "settings_read",
           "without_unread", "ModelConfig", "Recommender", "BPRMF", "LightGCN", "VBPR",
           "VLightGCN", "LATTICE", "VLATTICE", "FREEDOM", "MGCN", "IBMRec", "MRdIB", "IBMRecMRdIB",
           "DenoisedRecommender", "MultimodalRecommender", "Denoiser", "OwnUpdate", "StepContext",
           "ForwardResult", "ForwardInputs", "BackboneOptions", "StepSeeds", "Terms"]
