"""Training one run of a study as its own ``runners.train`` process, or reusing a finished one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import flags

from runners import common
from runners.bench.floor import floor_data, step_floor

FLAGS = flags.FLAGS


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
        data = floor_data()
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


