r"""Runs a study (several models or settings, several seeds) and prints its table.

    python -m runners.benchmark --study=models --flagfile=flags/tiktok.cfg --data_dir=../shared/data --seeds=3
    python -m runners.benchmark --study=ablation --flagfile=flags/tiktok.cfg --data_dir=../shared/data

Each run is a real `python -m runners.train` process with the study's flags on top of the
common ones given here (so every run is what a user would get from that command), written to
<bench_dir>/<study>/<label>-s<seed>/. The runner then writes <bench_dir>/<study>.json (every
run's metrics.json) and <bench_dir>/<study>.md (mean and standard deviation over seeds of the
test metrics of the epoch selected on validation) and prints the table.

The noise, sensitivity and scaling studies also draw <study>.png when matplotlib is installed
(pip install -e ".[plots]").

Studies:
  models    BPR-MF, LightGCN, VBPR, VLightGCN, LATTICE, VLATTICE, IBMRec (paper Table 2)
  backbones each backbone with and without IBMRec's applicable terms (Table 3)
  ablation  IBMRec, w/o FIB, w/o GIB, w/o IB; w/o the second (InfoNCE) update and with it
            alone; and per modality (Table 4, Fig. 4)
  noise     VLATTICE and IBMRec with D extra seeded noise dimensions per modality
  sensitivity  IBMRec over --alphas, --betas and --sigma2s (one changed at a time; sigma^2 for
            FIB and GIB together), as in the paper's Fig. 5-6
  speed     LightGCN, VLightGCN, VLATTICE and IBMRec for --speed_epochs epochs, each in the fast
            and in the straightforward formulation (--straightforward), one seed: median seconds
            per epoch after the first, seconds per full-ranking evaluation, peak memory, speed-up
            ratio; and each run's floor (the products its step cannot avoid, timed alone in
            this process just before the run) with the ratio of s/epoch to it
  scaling   IBMRec on --fractions of the training interactions, one seed: seconds per epoch
            against the number of interactions
  distribution  LightGCN, VLATTICE and IBMRec on one replica and mirrored over every GPU (or
            --distribution_replicas logical CPU devices where there is none), one seed:
            seconds per epoch and per evaluation, and the speed-up
  precision LightGCN, VLATTICE and IBMRec under each --precision (float32, mixed_bfloat16,
            mixed_float16) for --speed_epochs epochs, one seed: seconds per epoch and per
            evaluation, on the device each run used (a GPU when TensorFlow sees one;
            benchmarks/gpu.sh runs it on TikTok and Sports)
  search    the flagfile's configuration and each --variant (a validation search): the table
            lists validation and test metrics, and marks the variant with the best mean
            validation Recall@20 (the test columns are reported, never used to choose)
  eval      the full-ranking evaluator alone (in this process, no training): seconds per
            evaluation of the test users with random embeddings of each of --eval_dims, for
            each of --eval_batch_sizes, next to the seconds its score products alone take
            (the part no ranking method avoids)

    python -m runners.benchmark --study=search --flagfile=flags/tiktok.cfg --data_dir=../shared/data \
        --variant="alpha=0.1" --variant="alpha=0.1 mask_temperature=0.2" --jobs=2
    python -m runners.benchmark --study=speed --flagfile=flags/sports.cfg --data_dir=data/standin
    python -m runners.benchmark --study=scaling --flagfile=flags/sports.cfg --data_dir=data/standin
    python -m runners.benchmark --study=eval --flagfile=flags/sports.cfg --data_dir=data/standin
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from absl import flags

from runners import common
from ibmrec_tf.config import PRECISIONS

flags.DEFINE_enum("study", "models",
                  ["models", "backbones", "ablation", "noise", "sensitivity", "search", "speed",
                   "scaling", "eval", "precision", "distribution"],
                  "Which study.")
flags.DEFINE_integer("seeds", 3, "Seeds per configuration (0 .. seeds-1).")
flags.DEFINE_string("bench_dir", "runs/bench", "Where the runs and the tables go.")
flags.DEFINE_list("noise_dims", ["0", "128", "512", "2048"], "noise study: extra dimensions D.")
flags.DEFINE_boolean("report_only", False, "Launch nothing: tabulate the study's finished runs "
                     "and list the missing ones.")
flags.DEFINE_integer("speed_epochs", 3, "speed and scaling studies: epochs per run (the "
                     "first, which includes tracing, is left out of the median).")
flags.DEFINE_list("fractions", ["0.25", "0.5", "1.0"], "scaling study: training fractions.")
flags.DEFINE_list("alphas", ["0.1", "0.3", "1.0", "3.0"], "sensitivity study: FIB coefficients.")
flags.DEFINE_list("betas", ["0.1", "0.5", "2.0", "5.0"], "sensitivity study: GIB coefficients.")
flags.DEFINE_list("sigma2s", ["0.1", "0.2", "0.5", "1.0"],
                  "sensitivity study: RBF widths sigma^2 (FIB and GIB together).")
flags.DEFINE_list("eval_dims", ["64", "192"], "eval study: embedding dimensions (64: LightGCN; "
                  "192: VLATTICE and IBMRec with two modalities).")
flags.DEFINE_list("eval_batch_sizes", ["512", "1024", "4096"],
                  "eval study: users per evaluation batch (--eval_batch_size of a run).")
flags.DEFINE_multi_string("variant", [], "search study: one configuration per use, given as "
                          "space-separated name=value training flags on top of the common "
                          "ones, e.g. --variant=\"alpha=0.1 tau=0.1\".")
flags.DEFINE_list("only", [], "Train (or report) only these configurations of the study, by their "
                  "labels as the table shows them, e.g. --only=\"w/o FIB,w/o GIB\"; empty: all.")
flags.DEFINE_integer("jobs", 1, "Runs trained at once (quality studies; the timing studies "
                     "always run one at a time). Each run uses --intra_op_threads threads.")
flags.DEFINE_integer("eval_repeats", 3, "eval study: timed repeats (after one untimed).")
flags.DEFINE_integer("distribution_replicas", 2, "distribution study: replicas on a machine "
                     "without GPUs (logical CPU devices); with GPUs, one per GPU.")
FLAGS = flags.FLAGS

TIMING_STUDIES = ("speed", "scaling", "precision", "distribution")

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
    if study == "noise":
        runs = []
        for d in FLAGS.noise_dims:
            for model in ("vlattice", "ibmrec"):
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
                    for m in ("lightgcn", "vlightgcn", "vlattice", "ibmrec") for plain in (False, True)]
        if study == "distribution":
            replicas = _gpu_count() or FLAGS.distribution_replicas
            device = ([] if _gpu_count() else [f"--cpu_replicas={replicas}"])
            return [(f"{m} replicas={r}", [f"--model={m}", *epochs] + (
                        ["--distribution_strategy=mirrored", *device] if r > 1 else []))
                    for m in ("lightgcn", "vlattice", "ibmrec") for r in (1, replicas)]
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


def run_one(label: str, extra: list[str], seed: int, common_flags: list[str]) -> dict:
    model_dir = os.path.join(FLAGS.bench_dir, FLAGS.study, f"{label.replace('/', '_').replace(' ', '_')}-s{seed}")
    metrics_path = os.path.join(model_dir, "metrics.json")
    if FLAGS.report_only and not os.path.exists(metrics_path):
        print(f"  {label} seed {seed}: not run yet", flush=True)
        return None
    differences = {}
    floor_path = os.path.join(model_dir, "floor.json")
    floor = None
    if FLAGS.study == "speed" and not FLAGS.report_only:
        # The floor is timed alone just before the run, on the same cores, with the same threads.
        data = _floor_data()
        model = next(a.split("=", 1)[1] for a in extra if a.startswith("--model="))
        floor = {"parts": step_floor(data, model, extra),
                 "steps_per_epoch": -(-len(data.train) // FLAGS.batch_size)}
    if not os.path.exists(metrics_path):
        cmd = [sys.executable, "-m", "runners.train", *common_flags, *extra, f"--seed={seed}",
               f"--model_dir={model_dir}", "--overwrite", "--verbose=0"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise common.UsageError(f"run {label} seed {seed} failed: {tail}")
        print(f"  {label} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    else:
        differences = flag_differences(os.path.join(model_dir, "flags.cfg"),
                                       [*common_flags, *extra, f"--seed={seed}"])
        if differences:
            print(f"  {label} seed {seed}: reusing the finished run in {model_dir}, whose flags "
                  "differ from this study's: " + ", ".join(
                      f"{name}={had} (study: {want})" for name, (had, want) in differences.items()),
                  flush=True)
    if floor is not None:
        with open(floor_path, "w") as f:
            json.dump(floor, f, indent=2)
    elif os.path.exists(floor_path):
        with open(floor_path) as f:
            floor = json.load(f)
    with open(metrics_path) as f:
        result = {"label": label, "seed": seed, "flags": extra, **json.load(f)}
    if floor is not None:
        result["floor"] = floor
    if differences:
        result["flag_differences"] = {name: list(pair) for name, pair in differences.items()}
    return result


_FLOOR_DATA = []


def _floor_data():
    """The dataset, loaded once in this process for the floor measurements."""
    if not _FLOOR_DATA:
        common.configure_tensorflow()
        _FLOOR_DATA.append(common.load_data())
    return _FLOOR_DATA[0]


def _same_value(name: str, a: str, b: str) -> bool:
    if a == b:
        return True
    if name.endswith("_dir"):  # the same folder spelled two ways
        return os.path.realpath(a) == os.path.realpath(b)
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def flag_differences(flags_cfg: str, requested: list[str]) -> dict[str, tuple[str, str]]:
    """The requested flags that a finished run's ``flags.cfg`` records with another value.

    A finished run is reused as it is (runs may be shared between studies by copying their
    folders); this says where such a run was trained with other flags, for instance an
    IB coefficient that its model does not read. ``{name: (the run's value, requested value)}``.
    """
    if not os.path.exists(flags_cfg):
        return {}
    with open(flags_cfg) as f:
        had = {name: value for _, name, value in common.parse_flag_lines(f)}
    asked = {name: value for _, name, value in common.parse_flag_lines(requested)}  # last wins
    ignored = {"model_dir", "overwrite", "verbose", "resume"}
    return {name: (had[name], want) for name, want in asked.items()
            if name in had and name not in ignored and not _same_value(name, had[name], want)}


def _mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of a list of floats."""
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _by_label(results: list[dict]) -> dict[str, list[dict]]:
    """The runs grouped by label, in the study's order."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["label"], []).append(r)
    return groups


def table(results: list[dict], keys=("recall@20", "precision@20", "ndcg@20")) -> str:
    head = "| run | seeds | " + " | ".join(f"test {k}" for k in keys) + " | s/epoch |"
    lines = [head, "|" + "---|" * (len(keys) + 3)]
    for label, rows in _by_label(results).items():
        cells = ["{:.4f} ± {:.4f}".format(*_mean_sd(r["test"][k] for r in rows)) for k in keys]
        secs = statistics.median(r["seconds_per_epoch"] for r in rows)
        lines.append(f"| {label} | {len(rows)} | " + " | ".join(cells) + f" | {secs:.2f} |")
    return "\n".join(lines)


def search_table(results: list[dict]) -> str:
    """Validation and test Recall/NDCG@20 per configuration; '*' marks the best mean valid Recall@20."""
    groups = _by_label(results)
    best = max(groups, key=lambda label: _mean_sd(r["valid"]["recall@20"] for r in groups[label])[0])
    cols = [("valid", "recall@20"), ("valid", "ndcg@20"), ("test", "recall@20"), ("test", "ndcg@20")]
    lines = ["| configuration | seeds | " + " | ".join(f"{s} {k}" for s, k in cols)
             + " | best epoch | s/epoch |", "|" + "---|" * (len(cols) + 4)]
    for label, rows in groups.items():
        cells = ["{:.4f} ± {:.4f}".format(*_mean_sd(r[s][k] for r in rows)) for s, k in cols]
        epochs = statistics.median(r["best_epoch"] for r in rows)
        secs = statistics.median(r["seconds_per_epoch"] for r in rows)
        lines.append(f"| {'*' if label == best else ''}{label} | {len(rows)} | " + " | ".join(cells)
                     + f" | {epochs:g} | {secs:.2f} |")
    return "\n".join(lines)


def speed_table(results: list[dict]) -> str:
    """Each model's fast and straightforward timings side by side, and their ratio."""
    by_label = {r["label"]: r for r in results}
    lines = ["| model | s/epoch | straightforward s/epoch | speed-up | s/evaluation | peak MB | "
             "straightforward peak MB | epochs |", "|" + "---|" * 8]
    for label, r in by_label.items():
        if label.endswith(" straightforward"):
            continue
        plain = by_label.get(f"{label} straightforward")
        ratio = plain["seconds_per_epoch"] / r["seconds_per_epoch"] if plain else float("nan")
        lines.append(
            f"| {label} | {r['seconds_per_epoch']:.2f} | "
            f"{plain['seconds_per_epoch'] if plain else float('nan'):.2f} | {ratio:.2f}x | "
            f"{r['eval_seconds']:.2f} | {r.get('peak_rss_mb', float('nan')):.0f} | "
            f"{plain.get('peak_rss_mb', float('nan')) if plain else float('nan'):.0f} | "
            f"{len(r.get('epoch_seconds', []))} |")
    return "\n".join(lines)


# -- the step's floor ---------------------------------------------------------------------------------
CONTENT_MODELS = ("vbpr", "vlightgcn", "vlattice")
GRAPH_MODELS = ("lightgcn", "vlightgcn", "lattice", "vlattice")


def floor_parts(model: str, backbone: str, straightforward: bool) -> tuple[bool, bool, bool]:
    """``(content, user-item graph, projects every item each step)`` of a model configuration."""
    name = backbone if model == "ibmrec" else model
    content = name in CONTENT_MODELS
    item_item = name in ("lattice", "vlattice")
    # Every item's Z each step: the LATTICE-based models with content, IBMRec with GIB (its
    # masker reads every item's Z), or any content model in the straightforward formulation.
    all_items = (item_item and (content or model == "ibmrec")) or (content and straightforward)
    return content, name in GRAPH_MODELS, all_items


def step_floor(data, model: str, extra: list[str], repeats: int = 5) -> dict[str, float]:
    """Seconds per training step of the products a step of ``model`` cannot avoid, each timed
    alone (median of ``repeats`` after one untimed) at the run's shapes in this process:

    * the user-item propagation: ``n_layers`` CSR products forward and as many backward, at the
      width the model propagates (``d`` for ID embeddings, ``d (1 + K)`` with K modalities);
    * for models that project every item each step: each modality's ``M W`` over all items and
      its kernel gradient ``(dZ^T M)^T``.

    Everything else a step does (gathers, the losses, HSIC, the edge masker, Adam) is above it.
    """
    import numpy as np
    import tensorflow as tf
    from ibmrec_tf import graph as graph_lib
    from ibmrec_tf.layers import CSRGraph

    config = common.model_config()
    straightforward = "--straightforward" in extra or config.straightforward
    backbone = next((a.split("=", 1)[1] for a in extra if a.startswith("--backbone=")),
                    config.backbone)
    content, ui_graph, all_items = floor_parts(model, backbone, straightforward)
    d = config.embedding_dim
    rng = np.random.default_rng(0)

    def timed(fn, *args) -> float:
        fn(*args).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*args).numpy()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    parts = {}
    if ui_graph and config.n_layers:
        graph = CSRGraph(graph_lib.normalized_adjacency(data.num_users, data.num_items, data.train),
                         symmetric=True)
        width = d * (1 + len(data.features)) if content else d
        x = tf.constant(rng.normal(size=(data.num_users + data.num_items, width)).astype(np.float32))
        product = tf.function(lambda e: graph.matmul(e)[:1])
        parts["sparse propagation"] = 2 * config.n_layers * timed(product, x)
    if all_items:
        forward = tf.function(lambda m, w: tf.matmul(m, w)[:1])
        kernel_gradient = tf.function(lambda m, dz: tf.transpose(tf.matmul(dz, m, transpose_a=True)))
        for name, features in data.features.items():
            m = tf.constant(features)
            w = tf.constant(rng.normal(size=(m.shape[1], d)).astype(np.float32))
            dz = tf.constant(rng.normal(size=(m.shape[0], d)).astype(np.float32))
            parts[f"{name} projection"] = timed(forward, m, w)
            parts[f"{name} kernel gradient"] = timed(kernel_gradient, m, dz)
    return parts


def floor_table(results: list[dict]) -> str:
    """Each run's seconds per epoch against its floor measured in the same benchmark run."""
    lines = ["| model | s/epoch | floor s/epoch | ratio | floor per step (ms) |",
             "|" + "---|" * 5]
    for r in results:
        floor = r.get("floor")
        if not floor:
            continue
        per_step = sum(floor["parts"].values())
        epoch_floor = per_step * floor["steps_per_epoch"]
        detail = ", ".join(f"{k} {v * 1000:.0f}" for k, v in floor["parts"].items()) or "none"
        lines.append(f"| {r['label']} | {r['seconds_per_epoch']:.2f} | {epoch_floor:.2f} | "
                     f"{r['seconds_per_epoch'] / epoch_floor if epoch_floor else float('nan'):.2f}x"
                     f" | {per_step * 1000:.0f} ({detail}) |")
    return "\n".join(lines)


def _gpu_count() -> int:
    return len(common.import_tensorflow_quietly().config.list_physical_devices("GPU"))


def distribution_table(results: list[dict]) -> str:
    """Seconds per epoch and per evaluation with 1 and R replicas, and the ratio."""
    lines = ["| model | replicas | device | s/epoch | speed-up over 1 replica | s/evaluation | "
             "peak MB |", "|" + "---|" * 7]
    single = {r["label"].split(" ")[0]: r["seconds_per_epoch"] for r in results
              if r["label"].endswith("replicas=1")}
    for r in results:
        model, replicas = r["label"].split(" replicas=")
        base = single.get(model)
        ratio = base / r["seconds_per_epoch"] if base else float("nan")
        lines.append(f"| {model} | {replicas} | {r.get('device', '?')} | "
                     f"{r['seconds_per_epoch']:.2f} | {ratio:.2f}x | {r['eval_seconds']:.2f} | "
                     f"{r.get('peak_rss_mb', float('nan')):.0f} |")
    return "\n".join(lines)


def precision_table(results: list[dict]) -> str:
    """Seconds per epoch and per evaluation of each model under each --precision, and the device."""
    lines = ["| model | precision | device | s/epoch | s/evaluation | valid recall@20 | peak MB |",
             "|" + "---|" * 7]
    for r in results:
        model, precision = r["label"].split(" ", 1)
        lines.append(f"| {model} | {precision} | {r.get('device', '?')} | "
                     f"{r['seconds_per_epoch']:.2f} | {r['eval_seconds']:.2f} | "
                     f"{r['valid']['recall@20']:.4f} | {r.get('peak_rss_mb', float('nan')):.0f} |")
    return "\n".join(lines)


def scaling_table(results: list[dict]) -> str:
    """Seconds per epoch against training interactions; linear growth keeps the last column flat."""
    lines = ["| run | train interactions | s/epoch | s per 100k interactions | s/evaluation | peak MB |",
             "|" + "---|" * 6]
    for r in results:
        count = r.get("train_interactions") or 0
        per = r["seconds_per_epoch"] / count * 1e5 if count else float("nan")
        lines.append(f"| {r['label']} | {count} | {r['seconds_per_epoch']:.2f} | {per:.2f} | "
                     f"{r['eval_seconds']:.2f} | {r.get('peak_rss_mb', float('nan')):.0f} |")
    return "\n".join(lines)


def plot(study: str, results: list[dict], path: str) -> str | None:
    """Draws the noise, sensitivity or scaling study as a PNG; returns its path (None if skipped)."""
    if study not in ("noise", "sensitivity", "scaling"):
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; pip install -e \".[plots]\")")
        return None

    def series(prefix_of, value_of, metric, runs=None):
        """``{series name: [(x, mean, std), ...]}`` over the runs' labels."""
        groups: dict[str, dict[float, list[float]]] = {}
        for r in results if runs is None else runs:
            name, x = prefix_of(r["label"]), value_of(r)
            groups.setdefault(name, {}).setdefault(x, []).append(metric(r))
        return {name: sorted((x, *_mean_sd(v)) for x, v in points.items())
                for name, points in groups.items()}

    if study == "noise":
        panels = [("test recall@20", "noise dimensions D per modality", series(
            lambda label: label.split(" ")[0], lambda r: float(r["label"].split("D=")[1]),
            lambda r: r["test"]["recall@20"]), False)]
    elif study == "sensitivity":
        panels = [("test recall@20", name, series(
            lambda label: "ibmrec", lambda r: float(r["label"].split("=")[1]),
            lambda r: r["test"]["recall@20"], [r for r in results
                                               if r["label"].startswith(name + "=")]), True)
            for name in ("alpha", "beta", "sigma2")]
    else:
        lines = series(lambda label: "ibmrec", lambda r: r["train_interactions"] / 1000.0,
                       lambda r: r["seconds_per_epoch"])
        # The linear reference through the origin and the largest run.
        x_max, y_max, _ = max(lines["ibmrec"])
        lines["linear"] = [(0.0, 0.0, 0.0), (x_max, y_max, 0.0)]
        panels = [("seconds per epoch", "training interactions (thousands)", lines, False)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (ylabel, xlabel, lines, log_x) in zip(axes[0], panels):
        for name, points in lines.items():
            xs, ys, sd = zip(*points)
            ax.errorbar(xs, ys, yerr=sd, marker="o", capsize=3, label=name)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _median_seconds(fn, repeats: int) -> float:
    fn()  # traces
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def eval_study() -> list[dict]:
    """Times :class:`Evaluator` on the dataset's test users for each dimension and batch size."""
    import numpy as np
    import tensorflow as tf
    from ibmrec_tf.evaluation import Evaluator

    common.configure_tensorflow()
    data = common.load_data()
    rng = np.random.default_rng(0)
    rows = []
    for dim in (int(d) for d in FLAGS.eval_dims):
        users = tf.constant(rng.normal(size=(data.num_users, dim)).astype(np.float32))
        items = tf.constant(rng.normal(size=(data.num_items, dim)).astype(np.float32))
        for batch_size in (int(b) for b in FLAGS.eval_batch_sizes):
            evaluator = Evaluator(data, "test", ks=common.parse_ks(), batch_size=batch_size)
            ids = [tf.constant(evaluator.users[s:s + batch_size].astype(np.int32))
                   for s in range(0, len(evaluator.users), batch_size)]

            @tf.function(reduce_retracing=True)
            def products(batch):
                scores = tf.matmul(tf.gather(users, batch), items, transpose_b=True)
                return scores[:, 0]  # the whole product is computed; a column comes back

            def all_products():
                for batch in ids:
                    products(batch).numpy()

            full = _median_seconds(lambda: evaluator.evaluate(users, items), FLAGS.eval_repeats)
            part = _median_seconds(all_products, FLAGS.eval_repeats)
            rows.append({"label": f"d={dim} batch={batch_size}", "dim": dim,
                         "batch_size": batch_size, "users": int(len(evaluator.users)),
                         "items": int(data.num_items), "eval_seconds": full,
                         "products_seconds": part})
            print(f"  d={dim} batch={batch_size}: {full:.2f} s", flush=True)
    return rows


def eval_table(results: list[dict]) -> str:
    lines = ["| d | users per batch | users | items | s/evaluation | score products alone s | "
             "rest (masking, top-K, metrics) s |", "|" + "---|" * 7]
    for r in results:
        lines.append(f"| {r['dim']} | {r['batch_size']} | {r['users']} | {r['items']} | "
                     f"{r['eval_seconds']:.2f} | {r['products_seconds']:.2f} | "
                     f"{r['eval_seconds'] - r['products_seconds']:.2f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    common.check_flags()
    if FLAGS.seeds < 1:
        raise common.UsageError(f"--seeds must be >= 1, got {FLAGS.seeds}")
    if FLAGS.jobs < 1:
        raise common.UsageError(f"--jobs must be >= 1, got {FLAGS.jobs}")
    if FLAGS.distribution_replicas < 2:
        raise common.UsageError(f"--distribution_replicas must be >= 2, got {FLAGS.distribution_replicas}")
    own = {"study", "seeds", "bench_dir", "noise_dims", "model", "model_dir", "seed", "overwrite",
           "resume", "verbose", "speed_epochs", "fractions", "alphas", "betas", "sigma2s",
           "report_only", "eval_dims", "eval_batch_sizes", "eval_repeats", "variant", "jobs",
           "only"}
    common_flags = [FLAGS[name].serialize() for name in common.recorded_flags()
                    if FLAGS[name].present and name not in own]
    results, failed = [], []
    seeds = 1 if FLAGS.study in TIMING_STUDIES else FLAGS.seeds
    if FLAGS.study == "eval":
        if FLAGS.report_only:
            raise common.UsageError("the eval study keeps no runs to report; run it")
        if FLAGS.only:
            raise common.UsageError("--only selects runs of a training study; eval has none")
        results = eval_study()
    else:
        configurations = study_runs(FLAGS.study)
        unknown = sorted(set(FLAGS.only) - {label for label, _ in configurations})
        if unknown:
            raise common.UsageError(
                f"--only names no configuration of study {FLAGS.study}: {', '.join(unknown)} "
                f"(it has: {', '.join(label for label, _ in configurations)})")
        todo = [(label, extra, seed) for label, extra in configurations
                if not FLAGS.only or label in FLAGS.only for seed in range(seeds)]
        jobs = 1 if FLAGS.study in TIMING_STUDIES else FLAGS.jobs

        def attempt(job):
            try:
                return run_one(*job, common_flags)
            except common.UsageError as e:  # a run that failed; the others go on
                print(f"  {e}", flush=True)
                failed.append(str(e))
                return None

        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            # Each run is its own process; map keeps the study's order in the table.
            results = [r for r in pool.map(attempt, todo) if r is not None]
    if not results:
        raise common.UsageError(f"no finished runs of study {FLAGS.study} in {FLAGS.bench_dir}")
    command = " ".join(a for a in sys.argv if a != "--report_only")
    os.makedirs(FLAGS.bench_dir, exist_ok=True)
    out = os.path.join(FLAGS.bench_dir, FLAGS.study)
    with open(out + ".json", "w") as f:
        json.dump({"command": command, "runs": results}, f, indent=2)
    if FLAGS.study == "models":  # the paper's Table 2 reports every metric at 10, 20 and 50
        keys = tuple(f"{m}@{k}" for m in ("recall", "precision", "ndcg") for k in (10, 20, 50))
        text = table(results, keys=keys)
    else:
        text = {"speed": lambda r: speed_table(r) + "\n\nThe floor: the products a step cannot "
                "avoid, timed alone in this run just before each training run (per step, then "
                "times the steps of an epoch).\n\n" + floor_table(r),
                "search": search_table, "scaling": scaling_table, "precision": precision_table,
                "distribution": distribution_table,
                "eval": eval_table}.get(FLAGS.study, table)(results)
    machine = f"{os.cpu_count()} cores, {platform.machine()}, {platform.platform(terse=True)}"
    with open(out + ".md", "w") as f:
        f.write(f"`{command}`\n\nmachine: {machine}\n\n{text}\n")
    print(text)
    picture = plot(FLAGS.study, results, out + ".png")
    if picture:
        print(f"plot: {picture}")
    if failed:  # tabulated without them; the exit status says the study is incomplete
        raise common.UsageError(f"{len(failed)} run(s) failed (left out of the table): "
                                + "; ".join(failed))


if __name__ == "__main__":
    common.run(main)
