"""The eval study: the full-ranking evaluator alone, against its score products."""

from __future__ import annotations

import statistics
import time

from absl import flags

from runners import common

FLAGS = flags.FLAGS


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


