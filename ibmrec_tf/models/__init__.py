"""Recommender models and the registry that builds them by name."""

from __future__ import annotations

from ibmrec_tf.data import Dataset, DataError
from ibmrec_tf.models.base import ModelConfig, Recommender
from ibmrec_tf.models.cf import BPRMF, LightGCN
from ibmrec_tf.models.denoised import IBMRec, IBMRecMRdIB, MRdIB, DenoisedRecommender
from ibmrec_tf.models.freedom import FREEDOM
from ibmrec_tf.models.multimodal import LATTICE, VBPR, VLATTICE, VLightGCN, MultimodalRecommender

MODELS = {
    "bprmf": BPRMF,
    "lightgcn": LightGCN,
    "vbpr": VBPR,
    "vlightgcn": VLightGCN,
    "lattice": LATTICE,
    "vlattice": VLATTICE,
    "freedom": FREEDOM,
    "ibmrec": IBMRec,
    "mrdib": MRdIB,
    "ibmrec_mrdib": IBMRecMRdIB,
}


def build_model(name: str, dataset: Dataset, config: ModelConfig) -> Recommender:
    """Builds the model registered as ``name`` for ``dataset``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    cls = MODELS[name]
    if cls.multimodal and not dataset.features:
        raise DataError(f"model {name!r} needs item features, but dataset {dataset.name!r} "
                        f"({dataset.source}) has no <modality>_feat.npy file")
    return cls(dataset, config, name=name)


__all__ = ["MODELS", "build_model", "ModelConfig", "Recommender", "BPRMF", "LightGCN", "VBPR",
           "VLightGCN", "LATTICE", "VLATTICE", "FREEDOM", "IBMRec", "MRdIB", "IBMRecMRdIB",
           "DenoisedRecommender", "MultimodalRecommender"]
