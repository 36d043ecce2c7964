"""Which configurations each study trains: ``(label, extra training flags)`` per run."""

from __future__ import annotations

from absl import flags

from runners import common
from runners.bench.floor import gpu_count
from runners.bench.growth import growth_runs
from ibmrec_tf.config import PRECISIONS

FLAGS = flags.FLAGS

TIMING_STUDIES = ("speed", "scaling", "precision", "distribution", "plugin_speed", "large",
                  "growth")
#: the timing studies whose runs are timed against their floor
FLOOR_STUDIES = ("speed", "large")
#: the large study's models: ID-only, the LATTICE family and FREEDOM, alone and denoised
LARGE_MODELS = (("lightgcn", ["--model=lightgcn"]), ("vlattice", ["--model=vlattice"]),
                ("ibmrec(vlattice)", ["--model=ibmrec", "--backbone=vlattice"]),
                ("freedom", ["--model=freedom"]),
                ("ibmrec(freedom)", ["--model=ibmrec", "--backbone=freedom"]),
                ("mrdib(freedom)", ["--model=mrdib", "--backbone=freedom"]))
#: the backbones the denoisers plug into, and the denoiser combinations of the plugins study
PLUGIN_BACKBONES = ("vbpr", "vlightgcn", "lattice", "vlattice", "freedom", "mgcn")
PLUGINS = (("ibmrec", "ibmrec"), ("mrdib", "mrdib"), ("ibmrec+mrdib", "ibmrec_mrdib"))


def growth_data_dir() -> str:
    """Where the growth study's datasets are written once and reused."""
    import os

    return os.path.join(FLAGS.bench_dir, "growth_data")


def study_runs(study: str) -> list[tuple[str, list[str]]]:
    """``(label, extra flags)`` of every configuration of ``study``."""
    if study == "models":
        return [(m, [f"--model={m}"]) for m in
                ("bprmf", "lightgcn", "vbpr", "vlightgcn", "lattice", "vlattice", "ibmrec")]
    if study == "backbones":
        runs = []
        for backbone in ("vbpr", "vlightgcn", "lattice", "vlattice"):
            runs.append((backbone, [f"--model={backbone}"]))
            runs.append((f"ibmrec({backbone})", ["--model=ibmrec", f"--backbone={backbone}"]))
        return runs
    if study == "ablation":
        return [("ibmrec", ["--model=ibmrec"]),
                ("w/o FIB", ["--model=ibmrec", "--nofib"]),
                ("w/o GIB", ["--model=ibmrec", "--nogib"]),
                ("w/o IB", ["--model=ibmrec", "--nofib", "--nogib", "--nosecond_stage"]),
                ("w/o InfoNCE", ["--model=ibmrec", "--nosecond_stage"]),
                ("InfoNCE only", ["--model=ibmrec", "--nofib", "--nogib"]),
                ("ibmrec visual", ["--model=ibmrec", "--modalities=image"]),
                ("ibmrec acoustic", ["--model=ibmrec", "--modalities=audio"]),
                ("vlattice visual", ["--model=vlattice", "--modalities=image"]),
                ("vlattice acoustic", ["--model=vlattice", "--modalities=audio"])]
    if study == "plugins":
        runs = []
        for backbone in PLUGIN_BACKBONES:
            runs.append((backbone, [f"--model={backbone}"]))
            for label, model in PLUGINS:
                runs.append((f"{label}({backbone})", [f"--model={model}", f"--backbone={backbone}"]))
        return runs
    if study == "noise":
        runs = []
        for d in FLAGS.noise_dims:
            for model in FLAGS.noise_models:
                runs.append((f"{model} D={d}", [f"--model={model}", f"--feature_noise_dims={d}"]))
        return runs
    if study == "sensitivity":
        return ([(f"alpha={a}", ["--model=ibmrec", f"--alpha={a}"]) for a in FLAGS.alphas]
                + [(f"beta={b}", ["--model=ibmrec", f"--beta={b}"]) for b in FLAGS.betas]
                + [(f"sigma2={v}", ["--model=ibmrec", f"--sigma2_fib={v}", f"--sigma2_gib={v}"])
                   for v in FLAGS.sigma2s])
    if study == "search":
        # --model is the study's own flag elsewhere; here it is the base every variant starts
        # from (a variant may set model= itself: the later flag wins).
        base = [f"--model={FLAGS.model}"]
        return [("base", base)] + [(spec, base + parse_variant(spec)) for spec in FLAGS.variant]
    if study in TIMING_STUDIES:
        epochs = [f"--epochs={FLAGS.speed_epochs}", f"--patience={FLAGS.speed_epochs + 1}"]
        if study == "speed":
            return [(f"{m}{' straightforward' if plain else ''}",
                     [f"--model={m}", *epochs] + (["--straightforward"] if plain else []))
                    for m in ("lightgcn", "vlightgcn", "vlattice", "ibmrec", "mgcn")
                    for plain in (False, True)]
        if study == "growth":
            return growth_runs(growth_data_dir(), epochs, FLAGS.growth_scale)
        if study == "large":
            return [(label, [*flags, *epochs]) for label, flags in LARGE_MODELS]
        if study == "distribution":
            replicas = gpu_count() or FLAGS.distribution_replicas
            device = ([] if gpu_count() else [f"--cpu_replicas={replicas}"])
            return [(f"{m} replicas={r}", [f"--model={m}", *epochs] + (
                        ["--distribution_strategy=mirrored", *device] if r > 1 else []))
                    for m in ("lightgcn", "vlattice", "ibmrec") for r in (1, replicas)]
        if study == "plugin_speed":
            return [(label, [*flags, *epochs]) for label, flags in study_runs("plugins")]
        if study == "precision":
            return [(f"{m} {p}", [f"--model={m}", f"--precision={p}", *epochs])
                    for m in ("lightgcn", "vlattice", "ibmrec") for p in PRECISIONS]
        return [(f"ibmrec fraction={f}", ["--model=ibmrec", f"--train_fraction={f}", *epochs])
                for f in FLAGS.fractions]
    raise common.UsageError(f"unknown study {study!r}")


# Flags a variant may not set: they name the run or are the study's own.
_NOT_VARIANT = {"model_dir", "seed", "overwrite", "resume", "verbose", "dataset", "data_dir"}


def parse_variant(spec: str) -> list[str]:
    """``"alpha=0.1 tau=0.1"`` -> ``["--alpha=0.1", "--tau=0.1"]``, checking every name."""
    out = []
    for token in spec.split():
        name, sep, _ = token.lstrip("-").partition("=")
        if not sep or name not in common.recorded_flags() or name in _NOT_VARIANT:
            raise common.UsageError(
                f"--variant={spec!r}: {token!r} is not name=value of a training flag "
                f"(one of {', '.join(n for n in common.recorded_flags() if n not in _NOT_VARIANT)})")
        out.append("--" + token.lstrip("-"))
    if not out:
        raise common.UsageError("--variant must set at least one flag")
    return out


