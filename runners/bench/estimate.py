"""The estimate study: the peak-memory estimate by part for the large study's models at a
shape that need not exist on disk (``--estimate_shape``), or at the data's."""

from __future__ import annotations

from absl import flags

from runners import common

FLAGS = flags.FLAGS


def estimate_shapes():
    from ibmrec_tf import memory

    if FLAGS.estimate_shape:
        try:
            users, items, interactions = (int(float(v)) for v in FLAGS.estimate_shape)
            dims = {name: int(dim) for name, dim in
                    (pair.split(":") for pair in FLAGS.estimate_dims)}
        except ValueError:
            raise common.UsageError(
                f"--estimate_shape must be USERS,ITEMS,INTERACTIONS and --estimate_dims "
                f"name:dim pairs, got {FLAGS.estimate_shape} and {FLAGS.estimate_dims}") from None
        return memory.Shapes(users, items, int(0.8 * interactions), interactions, dims)
    return memory.Shapes.of(common.load_data())


def estimate_study() -> list[dict]:
    from ibmrec_tf import memory
    from ibmrec_tf.models import without_unread
    from runners.bench.studies import LARGE_MODELS

    shapes = estimate_shapes()
    rows = []
    for label, extra in LARGE_MODELS:
        model = next(a.split("=", 1)[1] for a in extra if a.startswith("--model="))
        backbone = next((a.split("=", 1)[1] for a in extra if a.startswith("--backbone=")),
                        None)
        config = common.model_config()
        if backbone:
            import dataclasses

            config = dataclasses.replace(config, backbone=backbone)
        estimate = memory.estimate_peak_memory(model, shapes, without_unread(model, config),
                                               common.train_config())
        rows.append({"label": label, "shape": vars(shapes), "parts": estimate.parts,
                     "peak": estimate.peak})
    return rows


def estimate_table(results: list[dict]) -> str:
    parts = list(results[0]["parts"])
    shape = results[0]["shape"]
    lines = [f"{shape['num_users']:,} users, {shape['num_items']:,} items, "
             f"{shape['interactions']:,} interactions ({shape['train']:,} for training), "
             f"modalities {shape['modality_dims']}; GiB:", "",
             "| model | " + " | ".join(parts) + " | peak |", "|" + "---|" * (len(parts) + 2)]
    for r in results:
        lines.append(f"| {r['label']} | " + " | ".join(
            f"{r['parts'][p] / 2 ** 30:.2f}" for p in parts) + f" | {r['peak'] / 2 ** 30:.1f} |")
    return "\n".join(lines)
