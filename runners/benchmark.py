r"""Runs a study (several models or settings, several seeds) and prints its table.

    python -m runners.benchmark --study=models --flagfile=flags/tiktok.cfg --data_dir=../shared/data --seeds=3
    python -m runners.benchmark --study=ablation --flagfile=flags/tiktok.cfg --data_dir=../shared/data

Each run is a real `python -m runners.train` process with the study's flags on top of the
common ones given here (so every run is what a user would get from that command), written to
<bench_dir>/<study>/<label>-s<seed>/. The runner then writes <bench_dir>/<study>.json (every
run's metrics.json) and <bench_dir>/<study>.md (mean and standard deviation over seeds of the
test metrics of the epoch selected on validation) and prints the table.

The noise, sensitivity, scaling, plugins and growth studies also draw <study>.png when matplotlib is installed
(pip install -e ".[plots]").

Studies:
  models    BPR-MF, LightGCN, VBPR, VLightGCN, LATTICE, VLATTICE, IBMRec (paper Table 2)
  backbones each backbone with and without IBMRec's applicable terms (Table 3)
  ablation  IBMRec, w/o FIB, w/o GIB, w/o IB; w/o the second (InfoNCE) update and with it
            alone; and per modality (Table 4, Fig. 4)
  plugins   every multimodal backbone (VBPR, VLightGCN, LATTICE, VLATTICE, FREEDOM) alone and
            with IBMRec, MRdIB and both: R/P/N at 10/20/50, and seconds per epoch against the
            backbone's (a bar plot of test Recall@20)
  plugin_speed  the plugins study's runs for --speed_epochs epochs, one at a time, one seed:
            seconds per epoch against the backbone's
  noise     VLATTICE, IBMRec, FREEDOM and MRdIB with D extra seeded noise dimensions per
            modality
  sensitivity  IBMRec over --alphas, --betas and --sigma2s (one changed at a time; sigma^2 for
            FIB and GIB together), as in the paper's Fig. 5-6
  speed     LightGCN, VLightGCN, VLATTICE and IBMRec for --speed_epochs epochs, each in the fast
            and in the straightforward formulation (--straightforward), one seed: median seconds
            per epoch after the first, seconds per full-ranking evaluation, peak memory, speed-up
            ratio; and each run's floor (the products its step cannot avoid, timed alone in
            this process just before the run) with the ratio of s/epoch to it
  large     LightGCN, VLATTICE, IBMRec(VLATTICE), FREEDOM, IBMRec(FREEDOM) and MRdIB(FREEDOM)
            for --speed_epochs epochs, one seed, on the data given (meant for the synthetic
            Elec and MicroLens-1M shapes of runners.prepare_data --synthetic): seconds per
            epoch against the floor, the model's build (kNN graphs included), a full-ranking
            evaluation of every user, peak memory, validation Recall@20
  growth    LightGCN, VLATTICE, IBMRec(VLATTICE) and FREEDOM with the users, the items and
            the interactions each varied alone over an eighth to all of the Elec shape's
            (times --growth_scale), on synthetic data written once under
            <bench_dir>/growth_data: the log-log slope of seconds per epoch, per evaluation,
            peak memory and build seconds against each size (growth.png: s/epoch)
  knn       the kNN builders alone (in this process, no training): the exact builder's
            seconds and memory and the approximate one's (--knn_method=ivf, faiss) for each of
            --knn_nprobes, with its recall@k against exact, per modality, on the first N items
            for each of --knn_sizes
  xla       the dense parts of a step (every item's projection, HSIC, BPR, a ranking block)
            as tf.functions and XLA-compiled (jit_compile=True), timed in this process at the
            data's shapes, and whether --model's whole step compiles
  estimate  the peak-memory estimate (ibmrec_tf.memory) by part for the large study's models,
            at --estimate_shape (a shape that need not exist, e.g. the full MicroLens set) or at
            the data's; nothing is trained
  tune      a seeded search (Optuna TPE, median pruning on the validation curve, stored in
            <bench_dir>/tune.sqlite3 so that it resumes) over --model's search space for
            --trials trials, maximizing validation --select_metric; then the --tune_top best
            points on --seeds new seeds, with validation and test means (pip install -e
            ".[tune]")
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
import sys

from absl import flags

from runners import common
from runners.bench import tables
from runners.bench.evaluator_timing import eval_study, eval_table
from runners.bench.estimate import estimate_study, estimate_table
from runners.bench.floor import floor_table
from runners.bench.knn_timing import knn_study, knn_table
from runners.bench.xla_timing import xla_study, xla_table
from runners.bench.tune import tune_study, tune_table
from runners.bench.runs import run_one
from runners.bench.growth import check_scale, ensure_growth_data, growth_table
from runners.bench.studies import TIMING_STUDIES, growth_data_dir, study_runs

flags.DEFINE_enum("study", "models",
                  ["models", "backbones", "ablation", "noise", "sensitivity", "search", "speed",
                   "scaling", "eval", "precision", "distribution", "plugins", "plugin_speed",
                   "large", "growth", "knn", "xla", "estimate", "tune"],
                  "Which study.")
flags.DEFINE_integer("seeds", 3, "Seeds per configuration (0 .. seeds-1).")
flags.DEFINE_string("bench_dir", "runs/bench", "Where the runs and the tables go.")
flags.DEFINE_list("noise_dims", ["0", "128", "512", "2048"], "noise study: extra dimensions D.")
flags.DEFINE_list("noise_models", ["vlattice", "ibmrec", "freedom", "mrdib"],
                  "noise study: the models (mrdib on --backbone).")
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
flags.DEFINE_list("knn_sizes", ["0"], "knn study: catalog sizes (the first N items; 0: all).")
flags.DEFINE_list("knn_nprobes", ["8", "32", "128"], "knn study: inverted lists searched.")
flags.DEFINE_list("estimate_shape", [], "estimate study: USERS,ITEMS,INTERACTIONS of a shape to "
                  "estimate (80% taken as training); empty: the data's.")
flags.DEFINE_list("estimate_dims", ["image:4096", "text:384"], "estimate study with "
                  "--estimate_shape: the modalities' dimensions.")
flags.DEFINE_float("growth_scale", 1.0, "growth study: the largest sizes as this fraction of the "
                   "Elec shape's (1: Elec's users, items and interactions).", lower_bound=1e-4)
flags.DEFINE_integer("distribution_replicas", 2, "distribution study: replicas on a machine "
                     "without GPUs (logical CPU devices); with GPUs, one per GPU.")
FLAGS = flags.FLAGS

def main(argv):
    del argv
    common.check_flags(model_settings=False)  # each run's train process checks its model
    if FLAGS.seeds < 1:
        raise common.UsageError(f"--seeds must be >= 1, got {FLAGS.seeds}")
    if FLAGS.jobs < 1:
        raise common.UsageError(f"--jobs must be >= 1, got {FLAGS.jobs}")
    if FLAGS.distribution_replicas < 2:
        raise common.UsageError(f"--distribution_replicas must be >= 2, got {FLAGS.distribution_replicas}")
    own = {"study", "seeds", "bench_dir", "noise_dims", "noise_models", "model", "model_dir", "seed", "overwrite",
           "resume", "verbose", "speed_epochs", "fractions", "alphas", "betas", "sigma2s",
           "report_only", "eval_dims", "eval_batch_sizes", "eval_repeats", "variant", "jobs",
           "only", "growth_scale", "knn_sizes", "knn_nprobes", "estimate_shape",
           "estimate_dims", "trials", "tune_params", "tune_top", "tune_warmup_epochs"}
    common_flags = [FLAGS[name].serialize() for name in common.recorded_flags()
                    if FLAGS[name].present and name not in own]
    results, failed = [], []
    seeds = 1 if FLAGS.study in TIMING_STUDIES else FLAGS.seeds
    if FLAGS.study == "tune":
        if FLAGS.only:
            raise common.UsageError("--only selects runs of a fixed study; the tune study's "
                                    "runs are its trials")
        results = tune_study(common_flags)
    elif FLAGS.study in ("eval", "knn", "xla", "estimate"):
        if FLAGS.report_only:
            raise common.UsageError(f"the {FLAGS.study} study keeps no runs to report; run it")
        if FLAGS.only:
            raise common.UsageError(f"--only selects runs of a training study; {FLAGS.study} "
                                    f"has none")
        results = {"eval": eval_study, "knn": knn_study, "xla": xla_study,
                   "estimate": estimate_study}[FLAGS.study]()
    else:
        if FLAGS.study == "growth":
            try:
                check_scale(FLAGS.growth_scale)
            except ValueError as e:
                raise common.UsageError(str(e)) from None
        configurations = study_runs(FLAGS.study)
        unknown = sorted(set(FLAGS.only) - {label for label, _ in configurations})
        if unknown:
            raise common.UsageError(
                f"--only names no configuration of study {FLAGS.study}: {', '.join(unknown)} "
                f"(it has: {', '.join(label for label, _ in configurations)})")
        todo = [(label, extra, seed) for label, extra in configurations
                if not FLAGS.only or label in FLAGS.only for seed in range(seeds)]
        jobs = 1 if FLAGS.study in TIMING_STUDIES else FLAGS.jobs
        if FLAGS.study == "growth" and not FLAGS.report_only:
            ensure_growth_data(growth_data_dir(), FLAGS.growth_scale,
                               names={label.rsplit(" ", 1)[1] for label, _, _ in todo},
                               echo=lambda line: print(line, flush=True))

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
    # The repository-relative command, not the absolute path of this file on one machine.
    command = " ".join(["python -m runners.benchmark"]
                       + [a for a in sys.argv[1:] if a != "--report_only"])
    os.makedirs(FLAGS.bench_dir, exist_ok=True)
    out = os.path.join(FLAGS.bench_dir, FLAGS.study)
    with open(out + ".json", "w") as f:
        json.dump({"command": command, "runs": results}, f, indent=2)
    if FLAGS.study == "models":  # the paper's Table 2 reports every metric at 10, 20 and 50
        keys = tuple(f"{m}@{k}" for m in ("recall", "precision", "ndcg") for k in (10, 20, 50))
        text = tables.table(results, keys=keys)
    else:
        text = {"speed": lambda r: tables.speed_table(r) + "\n\nThe floor: the products a step cannot "
                "avoid, timed alone in this run just before each training run (per step, then "
                "times the steps of an epoch).\n\n" + floor_table(r),
                "search": tables.search_table, "scaling": tables.scaling_table, "precision": tables.precision_table,
                "distribution": tables.distribution_table,
                "eval": eval_table, "knn": knn_table, "xla": xla_table,
                "estimate": estimate_table, "tune": tune_table,
                "growth": lambda r: growth_table(r, FLAGS.growth_scale),
                "large": lambda r: tables.large_table(r) + "\n\nThe floor, as in the speed study: "
                "the products a step cannot avoid, timed alone just before each run.\n\n"
                + floor_table(r),
                "plugins": tables.plugins_table, "plugin_speed": tables.plugins_table}.get(FLAGS.study, tables.table)(results)
    machine = f"{os.cpu_count()} cores, {platform.machine()}, {platform.platform(terse=True)}"
    with open(out + ".md", "w") as f:
        f.write(f"`{command}`\n\nmachine: {machine}\n\n{text}\n")
    print(text)
    picture = tables.plot(FLAGS.study, results, out + ".png")
    if picture:
        print(f"plot: {picture}")
    if failed:  # tabulated without them; the exit status says the study is incomplete
        raise common.UsageError(f"{len(failed)} run(s) failed (left out of the table): "
                                + "; ".join(failed))


def console_main():
    """The ``ibmrec-benchmark`` console script (the same as ``python -m runners.benchmark``)."""
    common.run(main)


if __name__ == "__main__":
    console_main()
