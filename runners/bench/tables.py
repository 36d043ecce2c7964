"""The studies' tables (Markdown) and plots."""

from __future__ import annotations

import os
import statistics


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


def plugins_table(results: list[dict]) -> str:
    """Every backbone x denoiser: test R/P/N@10/20/50 (mean ± sd over seeds, at the epoch
    selected on validation), valid Recall@20, and seconds per epoch against the backbone's."""
    keys = tuple(f"{m}@{k}" for m in ("recall", "precision", "ndcg") for k in (10, 20, 50))
    groups = _by_label(results)
    lines = ["| run | seeds | valid recall@20 | " + " | ".join(f"test {k}" for k in keys)
             + " | s/epoch | vs backbone |", "|" + "---|" * (len(keys) + 5)]
    for label, rows in groups.items():
        backbone = label.rsplit("(", 1)[1].rstrip(")") if label.endswith(")") else label
        secs = statistics.median(r["seconds_per_epoch"] for r in rows)
        base = groups.get(backbone)
        ratio = (f"{secs / statistics.median(r['seconds_per_epoch'] for r in base):.2f}x"
                 if base else "-")
        cells = ["{:.4f} ± {:.4f}".format(*_mean_sd(r["test"][k] for r in rows)) for k in keys]
        valid = "{:.4f}".format(_mean_sd(r["valid"]["recall@20"] for r in rows)[0])
        lines.append(f"| {label} | {len(rows)} | {valid} | " + " | ".join(cells)
                     + f" | {secs:.2f} | {ratio} |")
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


def large_table(results: list[dict]) -> str:
    """Per model at a large shape: the build, the epochs, a full evaluation, the measured peak
    memory beside this version's estimate of it (``ibmrec_tf.memory``), quality."""
    from ibmrec_tf import memory
    from ibmrec_tf.config import read_configs

    lines = ["| model | build s (kNN included) | s/epoch | s/evaluation (users) | peak MB | "
             "estimated MB | valid recall@20 | epochs |", "|" + "---|" * 8]
    loaded = {}
    for r in results:
        estimate = float("nan")
        if os.path.exists(os.path.join(r.get("model_dir", ""), "config.json")):
            data_config = read_configs(r["model_dir"])[1]
            if data_config not in loaded:
                loaded[data_config] = data_config.load()
            estimate = memory.estimate_run(r["model_dir"], loaded[data_config]).peak / 2 ** 20
        lines.append(
            f"| {r['label']} | {r.get('build_seconds', float('nan')):.1f} | "
            f"{r['seconds_per_epoch']:.1f} | {r['eval_seconds']:.1f} "
            f"({r['valid'].get('users_evaluated', '?')}) | "
            f"{r.get('peak_rss_mb', float('nan')):.0f} | {estimate:.0f} | "
            f"{r['valid']['recall@20']:.4f} | {len(r.get('epoch_seconds', []))} |")
    for data in loaded.values():  # the baseline every model must beat
        lines.append(f"\nPopularity (items ranked by training degree) on {data.name}: valid "
                     f"recall@20 {_popularity_recall(data):.4f}")
    return "\n".join(lines)


def _popularity_recall(data) -> float:
    import numpy as np

    from ibmrec_tf.evaluation import Evaluator

    degree = np.bincount(data.train[:, 1], minlength=data.num_items).astype(np.float32)
    return Evaluator(data, "valid", ks=(20,)).evaluate(
        np.ones((data.num_users, 1), np.float32), degree[:, None])["recall@20"]


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
    """Draws the noise, sensitivity, scaling or plugins study as a PNG; returns its path (None
    if skipped)."""
    if study not in ("noise", "sensitivity", "scaling", "plugins", "growth"):
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

    if study == "plugins":
        return _plot_plugins(plt, results, path)
    if study == "growth":
        from absl import flags

        from runners.bench.growth import plot_growth

        return plot_growth(plt, results, path, flags.FLAGS.growth_scale)
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




def _plot_plugins(plt, results: list[dict], path: str) -> str:
    """Grouped bars: test Recall@20 (mean ± sd) of each backbone with each denoiser."""
    groups = _by_label(results)
    backbones = [label for label in groups if not label.endswith(")")]
    variants = ["none"] + sorted({label.split("(")[0] for label in groups if label.endswith(")")},
                                 key=lambda v: ("+" in v, v))
    fig, ax = plt.subplots(figsize=(1.6 * len(backbones) + 2, 3.8))
    width = 0.8 / len(variants)
    for v, variant in enumerate(variants):
        xs, ys, sds = [], [], []
        for b, backbone in enumerate(backbones):
            rows = groups.get(backbone if variant == "none" else f"{variant}({backbone})")
            if rows:
                mean, sd = _mean_sd(r["test"]["recall@20"] for r in rows)
                xs.append(b + (v - (len(variants) - 1) / 2) * width)
                ys.append(mean)
                sds.append(sd)
        ax.bar(xs, ys, width, yerr=sds, capsize=2, label=variant)
    ax.set_xticks(range(len(backbones)), backbones)
    ax.set_ylabel("test recall@20")
    low = min(_mean_sd(r["test"]["recall@20"] for r in rows)[0] for rows in groups.values())
    ax.set_ylim(max(0.0, low - 0.01), None)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(variants))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
