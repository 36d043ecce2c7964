"""The xla study: the dense parts of a step, compiled by XLA (``jit_compile=True``) or not."""

from __future__ import annotations

from absl import flags

from runners import common
from runners.bench.evaluator_timing import _median_seconds  # the first call traces, compiles

FLAGS = flags.FLAGS


def xla_study() -> list[dict]:
    """Each dense part of a training step and of the evaluation at the data's shapes, timed as
    a ``tf.function`` and as an XLA-compiled one (median of ``--eval_repeats`` after one
    untimed call), with the largest difference of their outputs; then whether a whole
    training step of ``--model`` compiles."""
    import numpy as np
    import tensorflow as tf

    from ibmrec_tf import losses

    common.configure_tensorflow()
    data = common.load_data()
    config, train = common.model_config(), common.train_config()
    d, batch = config.embedding_dim, train.batch_size
    rng = np.random.default_rng(0)

    def const(*shape):
        return tf.constant(rng.normal(size=shape).astype(np.float32))

    users, items = const(data.num_users, d), const(data.num_items, d)
    triplets = tf.constant(rng.integers(0, min(data.num_users, data.num_items), (batch, 3)),
                           tf.int32)
    parts = {}
    for name, features in data.features.items():
        m, w = tf.constant(np.asarray(features, np.float32)), const(features.shape[1], d)
        probe = const(data.num_items, d)

        def projection(m=m, w=w, probe=probe):
            with tf.GradientTape() as tape:
                tape.watch(w)
                loss = tf.reduce_sum(tf.matmul(m, w) * probe)
            return tape.gradient(loss, w)

        parts[f"{name} projection of every item, with its gradient"] = projection
        sample_m = m[:config.hsic_items or 256]

        def hsic(sample_m=sample_m, w=w):
            z = tf.matmul(sample_m, w)
            with tf.GradientTape() as tape:
                tape.watch(z)
                value = losses.hsic_rbf(z, sample_m, config.sigma2_fib)
            return tape.gradient(value, z)

        parts[f"{name} HSIC of {int(sample_m.shape[0])} items, with its gradient"] = hsic

    def bpr():
        with tf.GradientTape() as tape:
            tape.watch([users, items])
            u = tf.gather(users, triplets[:, 0])
            pos, neg = tf.gather(items, triplets[:, 1]), tf.gather(items, triplets[:, 2])
            loss = (losses.bpr_loss(tf.reduce_sum(u * pos, 1), tf.reduce_sum(u * neg, 1))
                    + losses.l2_loss([u, pos, neg], batch))
        return tf.concat([tf.convert_to_tensor(g) for g in tape.gradient(loss, [users, items])],
                         axis=0)

    parts[f"BPR and L2 of {batch} triplets, with their gradients"] = bpr
    block = tf.range(min(train.eval_batch_size, data.num_users))
    k = max(train.ks)

    def ranking():
        scores = tf.matmul(tf.gather(users, block), items, transpose_b=True)
        return tf.math.top_k(scores, k=k).indices

    parts[f"ranking block: {int(block.shape[0])} users x {data.num_items} items, top {k}"] = \
        ranking
    rows = []
    for label, fn in parts.items():
        plain, compiled = tf.function(fn), tf.function(fn, jit_compile=True)
        difference = float(tf.reduce_max(tf.abs(tf.cast(plain(), tf.float32)
                                                - tf.cast(compiled(), tf.float32))))
        row = {"label": label, "seconds": _median_seconds(lambda: plain().numpy(),
                                                            FLAGS.eval_repeats),
               "xla_seconds": _median_seconds(lambda: compiled().numpy(), FLAGS.eval_repeats),
               "max_difference": difference}
        print(f"  {label}: {row['seconds'] * 1e3:.1f} ms, XLA {row['xla_seconds'] * 1e3:.1f} ms",
              flush=True)
        rows.append(row)
    rows.append(_whole_step(data, config, train))
    return rows


def _whole_step(data, config, train) -> dict:
    """Whether ``--model``'s whole training step compiles with XLA: the first error's line."""
    import tensorflow as tf

    from ibmrec_tf.data import TripletSampler
    from ibmrec_tf.models import build_model

    model = build_model(FLAGS.model, data, config, seed=0)
    model.create_optimizers(train.learning_rate)
    batch = next(iter(TripletSampler(data, 0).epoch_dataset(1, train.batch_size)))
    step = tf.function(model.train_step, jit_compile=True)
    try:
        step(batch)
        outcome = "compiles"
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
            tf.errors.NotFoundError) as e:
        import re

        ops = sorted(set(re.findall(r"(\w+) \(No registered", str(e))))
        outcome = ("does not compile; ops without an XLA kernel: " + ", ".join(ops) if ops else
                   "does not compile: " + str(e).strip().splitlines()[0][:300])
    print(f"  whole {FLAGS.model} step: {outcome}", flush=True)
    return {"label": f"whole {FLAGS.model} training step", "outcome": outcome}


def xla_table(results: list[dict]) -> str:
    lines = ["| part | tf.function ms | XLA ms | XLA speed-up | largest difference |",
             "|" + "---|" * 5]
    notes = []
    for r in results:
        if "outcome" in r:
            notes.append(f"{r['label']}: {r['outcome']}")
            continue
        lines.append(f"| {r['label']} | {r['seconds'] * 1e3:.1f} | {r['xla_seconds'] * 1e3:.1f} | "
                     f"{r['seconds'] / r['xla_seconds']:.2f}x | {r['max_difference']:.2g} |")
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "")
