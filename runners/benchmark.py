r"""Runs a study (several models or settings, several seeds) and prints its table.

    python -m runners.benchmark --study=models --flagfile=flags/tiktok.cfg --data_dir=../shared/data --seeds=3
    python -m runners.benchmark --study=ablation --flagfile=flags/tiktok.cfg --data_dir=../shared/data

Each run is a real `python -m runners.train` process with the study's flags on top of the
common ones given here (so every run is what a user would get from that command), written to
<bench_dir>/<study>/<label>-s<seed>/. The runner then writes <bench_dir>/<study>.json (every
run's metrics.json) and <bench_dir>/<study>.md (mean and standard deviation over seeds of the
test metrics of the epoch selected on validation) and prints the table.

Studies:
  models    BPR-MF, LightGCN, VBPR, VLightGCN, LATTICE, VLATTICE, IBMRec (paper Table 2)
  backbones each backbone with and without IBMRec's applicable terms (Table 3)
  ablation  IBMRec, w/o FIB, w/o GIB, w/o IB; and per modality (Table 4, Fig. 4)
  noise     VLATTICE and IBMRec with D extra seeded noise dimensions per modality
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags

from runners import common

flags.DEFINE_enum("study", "models", ["models", "backbones", "ablation", "noise"], "Which study.")
flags.DEFINE_integer("seeds", 3, "Seeds per configuration (0 .. seeds-1).")
flags.DEFINE_string("bench_dir", "runs/bench", "Where the runs and the tables go.")
flags.DEFINE_list("noise_dims", ["0", "128", "512", "2048"], "noise study: extra dimensions D.")
FLAGS = flags.FLAGS

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
    raise common.UsageError(f"unknown study {study!r}")


def run_one(label: str, extra: list[str], seed: int, common_flags: list[str]) -> dict:
    model_dir = os.path.join(FLAGS.bench_dir, FLAGS.study, f"{label.replace('/', '_').replace(' ', '_')}-s{seed}")
    metrics_path = os.path.join(model_dir, "metrics.json")
    if not os.path.exists(metrics_path):
        cmd = [sys.executable, "-m", "runners.train", *common_flags, *extra, f"--seed={seed}",
               f"--model_dir={model_dir}", "--overwrite", "--verbose=0"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise common.UsageError(f"run {label} seed {seed} failed: {tail}")
        print(f"  {label} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    with open(metrics_path) as f:
        return {"label": label, "seed": seed, "flags": extra, **json.load(f)}


def table(results: list[dict], keys=("recall@20", "precision@20", "ndcg@20")) -> str:
    labels = list(dict.fromkeys(r["label"] for r in results))
    head = "| run | seeds | " + " | ".join(f"test {k}" for k in keys) + " | s/epoch |"
    lines = [head, "|" + "---|" * (len(keys) + 3)]
    for label in labels:
        rows = [r for r in results if r["label"] == label]
        cells = []
        for k in keys:
            values = [r["test"][k] for r in rows]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {sd:.4f}")
        secs = statistics.median(r["seconds_per_epoch"] for r in rows)
        lines.append(f"| {label} | {len(rows)} | " + " | ".join(cells) + f" | {secs:.2f} |")
    return "\n".join(lines)


def main(argv):
    del argv
    common.check_flags()
    if FLAGS.seeds < 1:
        raise common.UsageError(f"--seeds must be >= 1, got {FLAGS.seeds}")
    own = {"study", "seeds", "bench_dir", "noise_dims", "model", "model_dir", "seed", "overwrite",
           "resume", "verbose"}
    common_flags = [FLAGS[name].serialize() for name in common.OWN_FLAGS
                    if FLAGS[name].present and name not in own]
    results = []
    for label, extra in study_runs(FLAGS.study):
        for seed in range(FLAGS.seeds):
            results.append(run_one(label, extra, seed, common_flags))
    os.makedirs(FLAGS.bench_dir, exist_ok=True)
    out = os.path.join(FLAGS.bench_dir, FLAGS.study)
    with open(out + ".json", "w") as f:
        json.dump({"command": " ".join(sys.argv), "runs": results}, f, indent=2)
    text = table(results)
    with open(out + ".md", "w") as f:
        f.write(f"`{' '.join(sys.argv)}`\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    common.run(main)
