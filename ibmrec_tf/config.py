"""Typed configuration: each setting is declared once, as a dataclass field with its help and bounds.

The configs of a run are :class:`DataConfig` (which data), :class:`ModelConfig` (the model's
hyper-parameters) and :class:`TrainConfig` (the loop); ``ibmrec_tf.models`` and
``ibmrec_tf.training`` re-export the last two. Each declares its fields with :func:`option`, which records the help text, the allowed values and a check, and
validates itself on construction: a library caller who builds ``TrainConfig(learning_rate=-1)``
gets the same one-line :class:`ConfigError` a runner turns into ``error: --learning_rate must be
> 0, got -1.0`` and exit status 2. The runners derive their command-line flags from these
fields (``runners/common.py``), so the default, the help and the bounds live here and only here.

Example::

    @dataclasses.dataclass(frozen=True)
    class Example(Config):
        rate: float = option(0.1, "A rate.", check=positive)

    Example(rate=0)  # ConfigError: rate must be > 0, got 0

This module imports no TensorFlow, so the runners check their flags before loading it.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, Sequence


class ConfigError(ValueError):
    """A configuration value that cannot work; names the field (the runners' flag) and the bound."""

    def __init__(self, field: str, requirement: str, value: Any = dataclasses.MISSING):
        self.field = field
        self.requirement = requirement
        self.value = value
        got = "" if value is dataclasses.MISSING else f", got {value!r}"
        self.detail = f"{requirement}{got}"
        super().__init__(f"{field} {self.detail}")

    def as_flag(self) -> str:
        """The message with the field spelled as its command-line flag (``--name ...``)."""
        return f"--{self.field} {self.detail}"


# -- checks: each returns None when the value is fine, else the requirement it breaks ---------------
Check = Callable[[Any], "str | None"]


def at_least(bound) -> Check:
    return lambda v: None if v >= bound else f"must be >= {bound}"


def positive(v) -> str | None:
    return None if v > 0 else "must be > 0"


def non_negative(v) -> str | None:
    return None if v >= 0 else "must be >= 0"


def in_range(low, high, *, low_open: bool = False) -> Check:
    def check(v):
        ok = (low < v if low_open else low <= v) and v <= high
        return None if ok else f"must be in {'(' if low_open else '['}{low}, {high}]"
    return check


def option(default, help: str, *, check: Check | None = None, choices: Sequence[str] | None = None,
           flag: bool = True):
    """A config field with its help text, allowed ``choices`` and a ``check``.

    ``flag=False`` keeps the field off the command line (a value only a library caller sets).
    A mutable default (a list) must be given as a tuple.
    """
    metadata = {"help": help, "check": check, "choices": tuple(choices) if choices else None,
                "flag": flag}
    return dataclasses.field(default=default, metadata=metadata)


METRIC_NAMES = ("recall", "precision", "ndcg")


class Config:
    """Mixin of the config dataclasses: validation on construction, field introspection."""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises :class:`ConfigError` for the first field outside its bounds or choices."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f.name, f"must be one of {', '.join(choices)}", value)
            check = f.metadata.get("check")
            if check is not None and value is not None:
                problem = check(value)
                if problem:
                    raise ConfigError(f.name, problem, value)
        self.check_fields()

    def check_fields(self) -> None:
        """Checks between fields; subclasses override (raise :class:`ConfigError`)."""

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return typing.get_type_hints(cls)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}


def flag_fields(cls) -> list[dataclasses.Field]:
    """The fields of config class ``cls`` that are command-line flags."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag", True)]


# -- the configs ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DataConfig(Config):
    """Which data a run reads, and how it is altered (noise dimensions, a training fraction)."""

    dataset: str = option("synthetic", "Dataset folder name under --data_dir, or 'synthetic' for "
                          "the built-in data.")
    data_dir: str = option("data", "Folder holding one sub-folder per dataset.")
    data_format: str = option("auto", "Interactions file: <dataset>.inter, 5-core/*.json, or auto "
                              "(.inter if present).", choices=("auto", "inter", "json"))
    modalities: tuple[str, ...] | None = option(
        None, "Item feature modalities to read (<modality>_feat.npy); default: all present.")
    feature_noise_dims: int = option(0, "Append this many seeded noise dimensions to every "
                                     "modality (the irrelevant-feature experiment).",
                                     check=non_negative)
    train_fraction: float = option(1.0, "Keep this seeded fraction of the training interactions "
                                   "(the scaling benchmark); valid and test stay whole.",
                                   check=in_range(0.0, 1.0, low_open=True))

    def load(self, seed: int = 0):
        """Reads (or generates) the dataset and applies the noise dimensions and the fraction."""
        from ibmrec_tf.data import get_dataset, with_noise_dims, with_train_fraction

        data = get_dataset(self.dataset, self.data_dir, modalities=self.modalities,
                           fmt=self.data_format, seed=seed)
        data = with_noise_dims(data, self.feature_noise_dims, seed=seed)
        return with_train_fraction(data, self.train_fraction, seed=seed)


#: ``precision`` -> the compute dtype of the dense products (Keras's policy of that name)
COMPUTE_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}
PRECISIONS = tuple(COMPUTE_DTYPES)


@dataclasses.dataclass(frozen=True)
class ModelConfig(Config):
    """Hyper-parameters of every model; each model reads the fields it uses.

    Every field is also a command-line flag of the runners, with the help text given here.
    Backbone fields come first, then the information-bottleneck fields (IBMRec). ``None`` for
    ``fib``, ``gib`` and ``second_stage`` means "wherever the backbone supports it"; ``True``
    asks for the term (an error where unsupported), ``False`` turns it off.
    """

    embedding_dim: int = option(64, "ID embedding size (and projected size per modality).",
                                check=at_least(1))
    n_layers: int = option(2, "User-item graph propagation layers.", check=in_range(0, 16))
    reg_weight: float = option(1e-4, "L2 regularization weight lambda on the batch's ego "
                               "embeddings (Eq. 29).", check=non_negative)
    init_stddev: float = option(0.01, "Std of the N(0, s^2) initializer of the ID embeddings.",
                                check=positive)
    knn_k: int = option(10, "Neighbours per item in each modality's kNN item-item graph.",
                        check=at_least(1))
    knn_method: str = option("exact", "How the kNN item-item graphs are found: exact (chunked "
                             "products, items^2 x dim) or ivf (approximate: faiss's inverted-file "
                             "index, the [knn] extra; see BENCHMARKS.md for its recall and the "
                             "catalog size where it pays).", choices=("exact", "ivf"))
    knn_nprobe: int = option(32, "--knn_method=ivf: inverted lists searched per item (of about "
                             "4 sqrt(items)); more is slower and nearer exact.", check=at_least(1))
    item_layers: int = option(1, "Item-item graph propagation layers (LATTICE models).",
                              check=in_range(0, 16))
    projection_layers: int = option(0, "Hidden layers of each modality's projection MLP; 0 = one "
                                    "affine map.", check=non_negative)
    projection_activation: str = option("leaky_relu", "Activation of the projection's hidden "
                                        "layers (any Keras activation name).")
    projection_stddev: float = option(0.0, "Std of the normal initializer of the projection's "
                                      "output kernel: the scale of each Z^k at the start (the "
                                      "features have unit mean norm); 0 = --init_stddev, the "
                                      "scale of the ID embeddings.", check=non_negative)
    straightforward: bool = option(
        False, "Train with the straightforward formulation: every item projected each step even "
        "where only the batch's items are used (VBPR, IBMRec without GIB) or where the raw "
        "features can be propagated first (VLightGCN with an affine projection), and "
        "TensorFlow's own matmul gradient for the projection. Same results, slower; the "
        "reference of the tests and the speed benchmark.")
    precision: str = option(
        "float32", "Compute dtype of the dense projection and scoring products: float32, or a "
        "Keras mixed policy (variables stay float32; the sparse products, HSIC and the losses "
        "stay float32). mixed_float16 trains with dynamic loss scaling.", choices=PRECISIONS)
    freedom_dropout: float = option(0.8, "FREEDOM: share of the user-item edges pruned before "
                                    "every epoch (degree-sensitive; 0 = none).",
                                    check=in_range(0.0, 1.0))
    freedom_image_weight: float = option(0.1, "FREEDOM: weight of the image modality's kNN graph "
                                         "in the frozen item-item graph; the other modalities "
                                         "share the rest.", check=in_range(0.0, 1.0))
    freedom_modality_bpr: float = option(1e-4, "FREEDOM: weight of each modality's own BPR term, "
                                         "which trains its projection (the paper's lambda; grid "
                                         "0, 1e-5, 1e-4, 1e-3).", check=non_negative)
    mgcn_cl_weight: float = option(1e-2, "MGCN: weight of its two InfoNCE terms between the "
                                   "side and the user-item view (the public grid: 1e-3, 1e-2, "
                                   "1e-1).", check=non_negative)
    mgcn_temperature: float = option(0.2, "MGCN: temperature of its InfoNCE terms.",
                                     check=positive)
    backbone: str = option("vlattice", "The backbone of --model=ibmrec, mrdib and ibmrec_mrdib.",
                           choices=("vbpr", "vlightgcn", "lattice", "vlattice", "freedom", "mgcn"))
    fib: bool | None = option(None, "IBMRec: feature-level information bottleneck "
                              "(alpha * HSIC(Z, M)); default: wherever the backbone supports it "
                              "(vbpr, vlightgcn, vlattice, freedom, mgcn).")
    gib: bool | None = option(None, "IBMRec: graph-level information bottleneck "
                              "(beta * HSIC(Y', Y)); default: wherever the backbone supports it "
                              "(lattice, vlattice, freedom, mgcn).")
    second_stage: bool | None = option(None, "IBMRec: the second update, InfoNCE(c_a, z_i) on C "
                                       "and Z; default: wherever the backbone has C (vbpr, "
                                       "vlightgcn, vlattice).")
    hsic_items: int = option(256, "IBMRec and MRdIB: how many of the batch's distinct items, "
                             "drawn uniformly (seeded by the step), the HSIC and DV terms use "
                             "(0 = all).",
                             check=non_negative)
    alpha: float = option(1.0, "IBMRec: FIB coefficient (Eq. 30).", check=non_negative)
    sigma2_fib: float = option(0.2, "IBMRec: RBF kernel width sigma^2 of the FIB HSIC.",
                               check=positive)
    beta: float = option(0.5, "IBMRec: GIB coefficient (Eq. 30).", check=non_negative)
    sigma2_gib: float = option(0.25, "IBMRec: RBF kernel width sigma^2 of the GIB HSIC.",
                               check=positive)
    tau: float = option(0.2, "IBMRec: InfoNCE temperature (Eq. 31).", check=positive)
    mask_temperature: float = option(0.5, "IBMRec: RelaxedBernoulli temperature of the edge "
                                     "masks.", check=positive)
    hard_mask: bool = option(False, "IBMRec: straight-through hard 0/1 edge masks.")
    masker_hidden: int = option(8, "IBMRec: hidden units of the edge-masking MLP.",
                                check=at_least(1))
    mrdib_kl_weight: float = option(5e-3, "MRdIB: weight of the KL term of each modality's "
                                    "stochastic projection to N(0, I) (compression).",
                                    check=non_negative)
    mrdib_unique_weight: float = option(5e-3, "MRdIB: weight of the per-modality BPR terms "
                                        "(unique information).", check=non_negative)
    mrdib_redundancy_weight: float = option(5e-2, "MRdIB: weight of the dependence between the "
                                            "modalities' representations, minimized "
                                            "(redundancy).", check=non_negative)
    mrdib_redundancy_estimator: str = option(
        "dv", "MRdIB: the dependence estimator: dv (a Donsker-Varadhan bound with a critic "
        "trained by its own optimizer) or hsic (the RBF HSIC, width --sigma2_fib).",
        choices=("dv", "hsic"))
    mrdib_fusion_mlp: bool = option(False, "MRdIB: a small residual MLP fuses the modalities "
                                    "before the backbone reads them (synergy).")
    mrdib_synergy_weight: float = option(5e-3, "MRdIB: weight of the BPR term of the fused "
                                         "modalities on backbones whose scores do not read them "
                                         "(lattice, freedom).", check=non_negative)
    mrdib_critic_hidden: int = option(64, "MRdIB: hidden units of the Donsker-Varadhan critic.",
                                      check=at_least(1))

    @property
    def compute_dtype(self) -> str:
        """The dtype of the dense projection and scoring products under ``precision``."""
        return COMPUTE_DTYPES[self.precision]


def _ks_check(ks) -> str | None:
    if not ks:
        return "must list at least one cut-off"
    return None if all(int(k) >= 1 for k in ks) else "values must be >= 1"


def _profile_check(steps) -> str | None:
    if not steps:
        return None
    if len(steps) != 2 or not 1 <= int(steps[0]) <= int(steps[1]):
        return "must be START,END with 1 <= START <= END (training steps, counted from 1)"
    return None


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """How to train (every field is also a runner flag)."""

    epochs: int = option(1000, "Maximum number of epochs.", check=at_least(1))
    batch_size: int = option(1024, "BPR triplets per step.", check=at_least(1))
    learning_rate: float = option(5e-4, "Adam learning rate (every optimizer of the model).",
                                  check=positive)
    optimizer: str = option("adam", "Every update's optimizer: adam (Keras's Adam, with the fused "
                            "update kernel) or sgd (plain gradient descent, for checks).",
                            choices=("adam", "sgd"))
    patience: int = option(10, "Epochs without a better validation --select_metric before "
                           "stopping.", check=at_least(1))
    seed: int = option(0, "Seed of the initialization, the sampler and the synthetic data.")
    ks: tuple[int, ...] = option((10, 20, 50), "Cut-offs K of Recall/Precision/NDCG@K.",
                                 check=_ks_check)
    select_metric: str = option("recall@20", "The validation metric that selects the epoch "
                                "(recall, precision or ndcg @ a K of --ks).")
    log_every: int = option(10, "Steps between TensorBoard loss summaries (and the host's "
                            "reads of the loss terms).", check=at_least(1))
    eval_batch_size: int = option(512, "Users per full-ranking evaluation batch (512: the "
                                  "fastest measured on 2 cores; see --study=eval of "
                                  "runners.benchmark).", check=at_least(1))
    verbose: int = option(1, "0: quiet; 1: progress bar and one line per epoch.",
                          check=lambda v: None if v in (0, 1) else "must be 0 or 1")
    profile_steps: tuple[int, ...] = option((), "START,END: write a TensorBoard profile of "
                                            "training steps START to END (counted from 1 over "
                                            "the run) into <model_dir>/logs/profile; empty: "
                                            "none.", check=_profile_check)

    memory_limit_gb: float = option(
        0.0, "Refuse to start (exit 2, one line with the settings that lower it) when the run's "
        "estimated peak memory exceeds this many GiB; 0: the memory available when the run "
        "starts; negative: no check (ibmrec_tf.memory).")

    def __post_init__(self):
        object.__setattr__(self, "ks", tuple(sorted({int(k) for k in self.ks})))
        super().__post_init__()

    def check_fields(self) -> None:
        name, _, k = self.select_metric.partition("@")
        if name not in METRIC_NAMES or not k.isdigit():
            raise ConfigError("select_metric", "must be recall@K, precision@K or ndcg@K",
                              self.select_metric)
        if int(k) not in self.ks:
            raise ConfigError("ks", f"must include {k} (epochs are selected on valid "
                              f"{self.select_metric})", self.ks)


#: The resolved configuration a run writes into its model directory (beside ``flags.cfg``).
CONFIG_FILE = "config.json"


def write_configs(model_dir: str, model: str, data: DataConfig, model_config: ModelConfig,
                  train: TrainConfig) -> str:
    """Writes ``<model_dir>/config.json``: the model's name and the three resolved configs,
    readable without absl by :func:`read_configs`. Returns the path."""
    import json
    import os

    path = os.path.join(model_dir, CONFIG_FILE)
    payload = {"model": model, "data": data.to_dict(), "model_config": model_config.to_dict(),
               "train": train.to_dict()}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    return path


def read_configs(model_dir: str) -> tuple[str, DataConfig, ModelConfig, TrainConfig]:
    """``(model name, DataConfig, ModelConfig, TrainConfig)`` of a run, from its
    ``config.json`` (checked as on construction)."""
    import json
    import os

    with open(os.path.join(model_dir, CONFIG_FILE), encoding="utf-8") as f:
        payload = json.load(f)

    def build(cls, values):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    return (payload["model"], build(DataConfig, payload["data"]),
            build(ModelConfig, payload["model_config"]), build(TrainConfig, payload["train"]))
