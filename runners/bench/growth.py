"""The growth study: how each cost grows with the users, the items and the interactions.

Each axis is varied alone over four sizes, an eighth, a quarter, a half and all of the Elec
shape's value, the other two held at an eighth of theirs (the users axis holds Elec's
interactions instead: every user of a 5-core set has at least five). Every point is a synthetic dataset of
``ibmrec_tf.data.scaled`` (image 4096-d, text 384-d, as Elec), written once under
``<bench_dir>/growth_data/`` and reused. Every run trains for ``--speed_epochs`` epochs. The
table gives the log-log slope of seconds per epoch, seconds per evaluation, peak memory and
build seconds (the kNN graphs included) against the varied size.
"""

from __future__ import annotations

import math
import os

from ibmrec_tf.data import scaled

#: the models whose costs are measured
GROWTH_MODELS = (("lightgcn", ["--model=lightgcn"]), ("vlattice", ["--model=vlattice"]),
                 ("ibmrec(vlattice)", ["--model=ibmrec", "--backbone=vlattice"]),
                 ("freedom", ["--model=freedom"]))
#: the varied sizes, as fractions of the Elec shape
FRACTIONS = (0.125, 0.25, 0.5, 1.0)
AXES = ("users", "items", "interactions")
#: the quantities whose slopes are reported: (metrics key, column title)
QUANTITIES = (("seconds_per_epoch", "s/epoch"), ("eval_seconds", "s/evaluation"),
              ("peak_rss_mb", "peak MB"), ("build_seconds", "build s"))


def growth_points(scale: float = 1.0) -> list[tuple[str, int, str, scaled.Shape]]:
    """``(axis, varied size, dataset name, shape)`` of every point, up to ``scale`` times the
    Elec shape's sizes; points that are the same dataset are one dataset."""
    elec = scaled.SHAPES["elec"]
    top = {"users": int(elec.num_users * scale), "items": int(elec.num_items * scale),
           "interactions": int(elec.num_interactions * scale)}
    base = {axis: int(top[axis] * FRACTIONS[0]) for axis in AXES}
    out = []
    for axis in AXES:
        # Every user has at least 5 interactions (5-core): the users axis holds the
        # interactions at Elec's, not an eighth, so that 192k users can have them.
        held = {**base, "interactions": top["interactions"]} if axis == "users" else base
        for fraction in FRACTIONS:
            size = {**held, axis: int(top[axis] * fraction)}
            name = f"growth_u{size['users']}_i{size['items']}_n{size['interactions']}"
            shape = scaled.Shape(size["users"], size["items"], size["interactions"],
                                 dict(elec.modality_dims), "the growth study")
            out.append((axis, size[axis], name, shape))
    return out


def _datasets(scale: float) -> dict[str, scaled.Shape]:
    return {name: shape for _, _, name, shape in growth_points(scale)}


def check_scale(scale: float) -> None:
    """Raises ``ValueError`` when a point of ``scale`` is not a valid shape (too dense)."""
    for _, _, name, shape in growth_points(scale):
        try:
            scaled.check_shape(shape)
        except ValueError as e:
            raise ValueError(f"--growth_scale={scale}: {name}: {e}") from None


def ensure_growth_data(data_dir: str, scale: float = 1.0, names=None, echo=print) -> None:
    """Writes the growth datasets ``names`` (default: every one) not yet under ``data_dir`` (a
    study resumes with them)."""
    for name, shape in _datasets(scale).items():
        if names is not None and name not in names:
            continue
        if not os.path.isdir(os.path.join(data_dir, name)):
            echo(f"  writing {data_dir}/{name} (the growth study's data, once)")
            scaled.write_scaled(scaled.make_scaled(shape, seed=0), data_dir, name,
                                command="python -m runners.benchmark --study=growth")


def growth_runs(data_dir: str, epochs: list[str], scale: float = 1.0) -> list[tuple[str, list[str]]]:
    """One run per model and dataset, labelled ``<model> <dataset>``."""
    return [(f"{label} {name}", [*flags, *epochs, f"--dataset={name}", f"--data_dir={data_dir}"])
            for label, flags in GROWTH_MODELS for name in _datasets(scale)]


def _slope(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of log y against log x."""
    points = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(points) < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else float("nan")


def _series(results: list[dict], scale: float) -> dict[tuple[str, str], list[tuple[int, dict]]]:
    """``{(model, axis): [(size, run), ...]}`` sorted by size."""
    groups: dict[tuple[str, str], list[tuple[int, dict]]] = {}
    points = growth_points(scale)
    for r in results:
        model, dataset = r["label"].rsplit(" ", 1)
        for axis, size, name, _ in points:
            if name == dataset:
                groups.setdefault((model, axis), []).append((size, r))
    return {key: sorted(rows, key=lambda row: row[0]) for key, rows in groups.items()}


def growth_table(results: list[dict], scale: float = 1.0) -> str:
    lines = ["| model | varied | sizes | " + " | ".join(title for _, title in QUANTITIES)
             + " |", "|" + "---|" * (3 + len(QUANTITIES))]
    raw = ["| model | varied | size | " + " | ".join(title for _, title in QUANTITIES) + " |",
           "|" + "---|" * (3 + len(QUANTITIES))]
    for (model, axis), rows in _series(results, scale).items():
        slopes = [_slope([(size, r.get(key, float("nan"))) for size, r in rows])
                  for key, _ in QUANTITIES]
        sizes = ", ".join(f"{size:,}" for size, _ in rows)
        lines.append(f"| {model} | {axis} | {sizes} | "
                     + " | ".join(f"{s:.2f}" for s in slopes) + " |")
        for size, r in rows:
            raw.append(f"| {model} | {axis} | {size:,} | " + " | ".join(
                f"{r.get(key, float('nan')):.1f}" for key, _ in QUANTITIES) + " |")
    return ("Log-log slope of each cost against the varied size (1: linear):\n\n"
            + "\n".join(lines) + "\n\nEvery run:\n\n" + "\n".join(raw))


def plot_growth(plt, results: list[dict], path: str, scale: float = 1.0) -> str:
    """Seconds per epoch against each axis's size, log-log, one line per model."""
    series = _series(results, scale)
    fig, axes = plt.subplots(1, len(AXES), figsize=(4.5 * len(AXES), 3.6), squeeze=False)
    for ax, axis in zip(axes[0], AXES):
        for (model, varied), rows in series.items():
            if varied == axis:
                ax.plot([s for s, _ in rows], [r["seconds_per_epoch"] for _, r in rows],
                        marker="o", label=model)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("seconds per epoch")
        ax.grid(alpha=0.3, which="both")
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
