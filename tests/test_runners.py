"""End-to-end: the runners as a user calls them (in this process, through\n``runners.cli.invoke``; prepare_data in its own), on the built-in data."""

import json
import os
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, TINY_ROWS, run_runner, write_inter


pytestmark = pytest.mark.slow  # subprocesses and trainings: CI runs them, -m "not slow" does not


def run(module, *args, check=True):
    return run_runner(module, *args, check=check)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("runs") / "demo"
    proc = run("train", "--flagfile=flags/demo.cfg", f"--model_dir={model_dir}", "--epochs=2",
               "--verbose=1")
    return model_dir, proc


def test_train_writes_every_artefact(trained):
    model_dir, proc = trained
    for rel in ("flags.cfg", "run_info.json", "metrics.json", "checkpoints/best/checkpoint",
                "checkpoints/latest/checkpoint", "export/1/saved_model.pb"):
        assert (model_dir / rel).exists(), rel
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(model_dir / "logs" / "train"))
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] in (1, 2)
    assert 0 < metrics["test"]["recall@20"] <= 1 and "ndcg@50" in metrics["valid"]
    assert f"tensorboard --logdir {model_dir / 'logs'}" in proc.stdout
    assert "epoch    2" in proc.stdout and "recall@20" in proc.stdout
    assert "--model=ibmrec" in (model_dir / "flags.cfg").read_text()
    from ibmrec_tf.config import read_configs
    model, data_config, model_config, train_config = read_configs(str(model_dir))
    assert (model, data_config.dataset, model_config.backbone, train_config.epochs) == \
        ("ibmrec", "synthetic", "vlattice", 2)
    assert model_config.embedding_dim == 64 and train_config.learning_rate == 5e-3
    # TensorBoard's HParams tab: the trial's settings and its final metrics, read back
    import tensorflow as tf
    events = [e for f in (model_dir / "logs" / "hparams").iterdir()
              for e in tf.compat.v1.train.summary_iterator(str(f))]
    values = [v for e in events for v in e.summary.value]
    assert any(v.metadata.plugin_data.plugin_name == "hparams" for v in values)
    recorded = {v.tag: float(tf.make_ndarray(v.tensor)) for v in values
                if v.tag.startswith("hparams/")}
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert recorded["hparams/test_recall@20"] == pytest.approx(metrics["test"]["recall@20"])
    assert recorded["hparams/best_epoch"] == metrics["best_epoch"]
    # The loss terms and the validation metrics, under the tags the README names
    def tags(split):
        return {v.tag for f in (model_dir / "logs" / split).iterdir()
                for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value}
    train_tags = tags("train")
    assert {"train/loss", "train/bpr", "train/hsic_fib", "train/hsic_gib", "train/infonce",
            "train/edge_keep_prob", "train/modality_weight/image", "hist/edge_keep_prob"} <= train_tags
    assert {"metrics/recall@20", "metrics/ndcg@20", "time/train_seconds_per_epoch"} <= tags("valid")
    from runners.common import STARTUP_NOISE, has_nvidia_device
    if not has_nvidia_device():  # a quiet start: no CUDA probing errors on a CPU-only machine
        assert not [line for line in proc.stderr.splitlines()
                    if any(noise in line for noise in STARTUP_NOISE)], proc.stderr


def test_old_format_model_dir_is_one_line(trained, tmp_path):
    model_dir, _ = trained
    import shutil
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    shutil.rmtree(old / "checkpoints")
    (old / "checkpoints").mkdir()
    (old / "checkpoints" / "latest.npz").write_bytes(b"")
    for module, args in (("train", [f"--flagfile={old}/flags.cfg", "--resume"]),
                         ("export", [f"--model_dir={old}"])):
        proc = run(module, *args, f"--model_dir={old}", check=False)
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {old}/checkpoints/latest.npz: a checkpoint of the old "
                               f".npz format"), last


def test_existing_model_dir_refused_then_resumed(trained, tmp_path):
    model_dir, _ = trained
    proc = run("train", "--flagfile=flags/demo.cfg", f"--model_dir={model_dir}", "--epochs=2",
               "--nooverwrite", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --model_dir")
    assert "Traceback" not in proc.stderr
    proc = run("train", f"--flagfile={model_dir}/flags.cfg", "--resume", "--epochs=3", check=False)
    assert proc.returncode == 2 and "flags differ" in proc.stderr
    resumed = tmp_path / "resumed"
    import shutil
    shutil.copytree(model_dir, resumed)
    text = (resumed / "flags.cfg").read_text().replace("--epochs=2", "--epochs=3")
    (resumed / "flags.cfg").write_text(text)
    proc = run("train", f"--flagfile={resumed}/flags.cfg", f"--model_dir={resumed}", "--resume")
    assert "resumed from" in proc.stdout and "after epoch 2" in proc.stdout
    assert json.loads((resumed / "metrics.json").read_text())["epochs_run"] == 3


def test_evaluate_and_export_runners(trained, tmp_path):
    model_dir, _ = trained
    metrics = json.loads((model_dir / "metrics.json").read_text())
    for weights in ("export", "best"):  # the SavedModel, and the best checkpoint rebuilt
        proc = run("evaluate", f"--model_dir={model_dir}", "--split=test", f"--weights={weights}")
        result = json.loads(proc.stdout[proc.stdout.index("{"):])
        assert result["recall@20"] == pytest.approx(metrics["test"]["recall@20"], abs=1e-6)
    out = tmp_path / "k7"
    run("export", f"--model_dir={model_dir}", f"--export_dir={out}", "--export_top_k=7")
    import tensorflow as tf
    rec = tf.saved_model.load(str(out / "1")).signatures["serving_default"](
        user_ids=tf.constant([0, 1], tf.int64))
    assert rec["item_ids"].shape == (2, 7)
    original = tf.saved_model.load(str(model_dir / "export" / "1")).signatures["score_all"]
    again = tf.saved_model.load(str(out / "1")).signatures["score_all"]
    ids = tf.constant([0, 3], tf.int64)
    np.testing.assert_allclose(original(user_ids=ids)["scores"].numpy(),
                               again(user_ids=ids)["scores"].numpy(), rtol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--learning_rate=-1"], "--learning_rate must be > 0"),
    (["--batch_size=0"], "--batch_size must be >= 1"),
    (["--ks=10,50"], "--ks must include 20"),
    (["--dataset=nope", "--data_dir=/nonexistent"], "dataset folder not found"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, args, message):
    proc = run("train", "--flagfile=flags/demo.cfg", f"--model_dir={tmp_path / 'm'}", *args,
               check=False)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m").exists()


def test_bad_data_file_exit_2(tmp_path):
    write_inter(tmp_path / "bad", "bad", TINY_ROWS + [(1, "oops", 0)])
    proc = run("train", f"--data_dir={tmp_path}", "--dataset=bad", f"--model_dir={tmp_path / 'm'}",
               check=False)
    assert proc.returncode == 2
    assert "bad.inter:15: 'oops' is not a non-negative integer" in proc.stderr


def test_prepare_data_writes_labelled_standins(tmp_path):
    rows = [(u, 6 * u + j, [0, 0, 0, 0, 1, 2][j]) for u in range(10) for j in range(6)]
    write_inter(tmp_path / "src" / "d", "d", rows)
    out = tmp_path / "out"
    run("prepare_data", f"--data_dir={tmp_path / 'src'}", "--dataset=d", f"--out_dir={out}",
        "--standin_dims=image:7,text:3")
    feats = np.load(out / "d" / "image_feat.npy")
    assert feats.shape == (60, 7) and feats.dtype == np.float32
    assert (out / "d" / "STAND_IN_FEATURES").exists() and (out / "d" / "d.inter").is_symlink()
    proc = run("train", f"--data_dir={out}", "--dataset=d", "--model=vbpr", "--epochs=1",
               f"--model_dir={tmp_path / 'm'}")
    assert "STAND-IN item features" in proc.stderr and "STAND-IN item features" in proc.stdout
    notes = json.loads((tmp_path / "m" / "metrics.json").read_text())["notes"]
    assert notes and "STAND-IN" in notes[0]


def test_benchmark_noise_study_writes_json_and_table(tmp_path):
    proc = run("benchmark", "--study=noise", "--noise_dims=16", "--seeds=1", "--epochs=1",
               "--dataset=synthetic", "--n_layers=1", f"--bench_dir={tmp_path}",
               "--noise_models=vlattice,ibmrec")
    payload = json.loads((tmp_path / "noise.json").read_text())
    labels = [r["label"] for r in payload["runs"]]
    assert labels == ["vlattice D=16", "ibmrec D=16"]
    noisy = [r for r in payload["runs"] if r["label"] == "ibmrec D=16"][0]
    assert any("16 appended dimensions" in n for n in noisy["notes"])
    assert "| ibmrec D=16 | 1 |" in proc.stdout and (tmp_path / "noise.md").exists()
    assert "--feature_noise_dims=16" in (tmp_path / "noise" / "vlattice_D=16-s0" / "flags.cfg").read_text()
    # --report_only tabulates the finished runs and launches nothing.
    report = run("benchmark", "--study=noise", "--noise_dims=16,32", "--seeds=1", "--epochs=1",
                 "--dataset=synthetic", "--n_layers=1", f"--bench_dir={tmp_path}", "--report_only",
                 "--noise_models=vlattice,ibmrec")
    assert "vlattice D=32 seed 0: not run yet" in report.stdout
    assert "| ibmrec D=16 | 1 |" in report.stdout and "| ibmrec D=32" not in report.stdout
    assert not (tmp_path / "noise" / "vlattice_D=32-s0").exists()
    # A finished run asked for with other flags is reused, and the difference is said.
    other = run("benchmark", "--study=noise", "--noise_dims=16", "--seeds=1", "--epochs=1",
                "--dataset=synthetic", "--n_layers=1", "--alpha=0.25", f"--bench_dir={tmp_path}",
                "--report_only", "--noise_models=vlattice,ibmrec")
    assert "flags differ from this study's: alpha=1.0 (study: 0.25)" in other.stdout
    reused = json.loads((tmp_path / "noise.json").read_text())["runs"]
    # only the model that reads alpha differs: VLATTICE's runs are given no alpha at all
    assert [r.get("flag_differences") for r in reused] == [None, {"alpha": ["1.0", "0.25"]}]
    # --only restricts a study to some of its configurations; an unknown label is an error.
    one = run("benchmark", "--study=noise", "--noise_dims=16", "--seeds=1", "--dataset=synthetic",
              "--n_layers=1", f"--bench_dir={tmp_path}", "--report_only", "--only=ibmrec D=16",
              "--noise_models=vlattice,ibmrec")
    assert "| ibmrec D=16 | 1 |" in one.stdout and "vlattice D=16" not in one.stdout
    bad = run("benchmark", "--study=noise", "--noise_dims=16", "--dataset=synthetic",
              f"--bench_dir={tmp_path}", "--only=ibmrec D=99", "--noise_models=vlattice,ibmrec",
              check=False)
    assert bad.returncode == 2 and "--only names no configuration of study noise: ibmrec D=99" in bad.stderr


def test_benchmark_plugins_study_and_the_new_models_exports(tmp_path):
    """MRdIB and FREEDOM through the runners: the study's table and plot, and each run's
    SavedModel scoring every item (cold ones too) as the model's final embeddings do."""
    only = "vbpr,mrdib(vbpr),ibmrec+mrdib(freedom)"
    proc = run("benchmark", "--study=plugins", "--seeds=1", "--epochs=1", "--dataset=synthetic",
               "--n_layers=1", "--knn_k=5", f"--bench_dir={tmp_path}", f"--only={only}")
    runs = json.loads((tmp_path / "plugins.json").read_text())["runs"]
    assert [r["label"] for r in runs] == only.split(",")
    assert "| mrdib(vbpr) | 1 |" in proc.stdout and "vs backbone" in proc.stdout
    ratio = [line for line in proc.stdout.splitlines() if line.startswith("| mrdib(vbpr) |")]
    assert ratio[0].rstrip(" |").endswith("x")
    import importlib.util
    if importlib.util.find_spec("matplotlib"):  # the plot needs the [plots] extra
        assert (tmp_path / "plugins.png").exists()
    import tensorflow as tf
    from ibmrec_tf.data import make_synthetic
    data = make_synthetic(seed=0)
    cold = sorted(set(range(data.num_items)) - set(data.train[:, 1].tolist()))
    for label in ("mrdib(vbpr)", "ibmrec+mrdib(freedom)"):
        export = tmp_path / "plugins" / f"{label}-s0" / "export" / "1"
        scores = tf.saved_model.load(str(export)).signatures["score_all"](
            user_ids=tf.constant([0, 1], tf.int64))["scores"].numpy()
        assert scores.shape == (2, data.num_items) and np.isfinite(scores).all()
        if cold:  # items never trained on are scored from their features
            assert np.abs(scores[:, cold]).max() > 0


def test_benchmark_search_study_marks_the_best_validation_run(tmp_path):
    proc = run("benchmark", "--study=search", "--seeds=1", "--epochs=1", "--dataset=synthetic",
               "--model=bprmf", "--n_layers=1", "--variant=reg_weight=1e-2 model=lightgcn",
               "--variant=embedding_dim=16 learning_rate=1e-2", "--jobs=2", f"--bench_dir={tmp_path}")
    runs = json.loads((tmp_path / "search.json").read_text())["runs"]
    assert [r["label"] for r in runs] == ["base", "reg_weight=1e-2 model=lightgcn",
                                          "embedding_dim=16 learning_rate=1e-2"]
    assert [r["model"] for r in runs] == ["bprmf", "lightgcn", "bprmf"]
    flagfile = (tmp_path / "search" / "embedding_dim=16_learning_rate=1e-2-s0" / "flags.cfg").read_text()
    assert "--embedding_dim=16" in flagfile.splitlines() and "--learning_rate=0.01" in flagfile.splitlines()
    assert "--model=bprmf" in flagfile.splitlines()  # the base model, not the flag's default
    best = max(runs, key=lambda r: r["valid"]["recall@20"])["label"]
    marked = [line for line in proc.stdout.splitlines() if line.startswith("| *")]
    assert len(marked) == 1 and marked[0].startswith(f"| *{best} |")
    # A run killed after its last checkpoint (no metrics.json yet) continues, not restarts.
    (tmp_path / "search" / "base-s0" / "metrics.json").unlink()
    again = run("benchmark", "--study=search", "--seeds=1", "--epochs=1", "--dataset=synthetic",
                "--model=bprmf", "--n_layers=1", "--variant=reg_weight=1e-2 model=lightgcn",
                "--variant=embedding_dim=16 learning_rate=1e-2", "--jobs=2",
                f"--bench_dir={tmp_path}")
    assert "base seed 0: resuming the unfinished run" in again.stdout
    resumed = json.loads((tmp_path / "search" / "base-s0" / "metrics.json").read_text())
    assert resumed["epochs_run"] == 1 and resumed["test"] == runs[0]["test"]
    bad = run("benchmark", "--study=search", "--dataset=synthetic", "--variant=seed=3",
              f"--bench_dir={tmp_path}", check=False)
    assert bad.returncode == 2 and "not name=value of a training flag" in bad.stderr


def test_benchmark_speed_study_pairs_fast_and_straightforward(tmp_path):
    only = "vlightgcn,vlightgcn straightforward,ibmrec,mgcn"
    proc = run("benchmark", "--study=speed", "--speed_epochs=2", "--dataset=synthetic",
               "--n_layers=1", f"--bench_dir={tmp_path}", f"--only={only}")
    payload = json.loads((tmp_path / "speed.json").read_text())
    labels = [r["label"] for r in payload["runs"]]
    assert labels == only.split(",")
    for r in payload["runs"]:
        assert len(r["epoch_seconds"]) == 2 and r["peak_rss_mb"] > 0
    plain = (tmp_path / "speed" / "vlightgcn_straightforward-s0" / "flags.cfg").read_text()
    assert "--straightforward" in plain.splitlines()
    seconds = {r["label"]: r["seconds_per_epoch"] for r in payload["runs"]}
    row = [line for line in proc.stdout.splitlines() if line.startswith("| vlightgcn |")][0]
    assert f"| {seconds['vlightgcn straightforward'] / seconds['vlightgcn']:.2f}x |" in row
    # Each run's floor, timed alone just before it: which products, and the ratio to it.
    floors = {r["label"]: r["floor"] for r in payload["runs"]}
    assert set(floors["ibmrec"]["parts"]) == {"sparse propagation", "image projection",
                                              "image kernel gradient", "text projection",
                                              "text kernel gradient"}
    assert set(floors["vlightgcn"]["parts"]) == {"sparse propagation"}  # batch rows only
    assert set(floors["mgcn"]["parts"]) == set(floors["ibmrec"]["parts"]) | {"user-item block"}
    assert "image projection" in floors["vlightgcn straightforward"]["parts"]
    floor = floors["ibmrec"]
    epoch_floor = sum(floor["parts"].values()) * floor["steps_per_epoch"]
    row = [line for line in proc.stdout.splitlines()
           if line.startswith("| ibmrec |") and "floor" not in line][-1]
    assert f"| {epoch_floor:.2f} | {seconds['ibmrec'] / epoch_floor:.2f}x |" in row


def test_benchmark_precision_study_names_the_device(tmp_path):
    proc = run("benchmark", "--study=precision", "--speed_epochs=1", "--dataset=synthetic",
               "--n_layers=1", "--only=lightgcn float32,lightgcn mixed_bfloat16",
               f"--bench_dir={tmp_path}")
    runs = json.loads((tmp_path / "precision.json").read_text())["runs"]
    assert [r["label"] for r in runs] == ["lightgcn float32", "lightgcn mixed_bfloat16"]
    assert "--precision=mixed_bfloat16" in (
        tmp_path / "precision" / "lightgcn_mixed_bfloat16-s0" / "flags.cfg").read_text()
    assert all(r["device"] for r in runs)
    assert f"| lightgcn | mixed_bfloat16 | {runs[1]['device']} |" in proc.stdout


def test_benchmark_plots_noise_and_scaling(tmp_path):
    pytest.importorskip("matplotlib")
    from runners.bench import tables as benchmark

    runs = [{"label": f"{m} D={d}", "seed": s, "test": {"recall@20": 0.1 - d / 1e4 + s / 100}}
            for m in ("vlattice", "ibmrec") for d in (0, 128) for s in (0, 1)]
    path = benchmark.plot("noise", runs, str(tmp_path / "noise.png"))
    assert path and (tmp_path / "noise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    scaling = [{"label": f"ibmrec fraction={f}", "train_interactions": int(1000 * f),
                "seconds_per_epoch": 2.0 * f, "eval_seconds": 0.1, "peak_rss_mb": 1.0}
               for f in (0.25, 0.5, 1.0)]
    assert benchmark.plot("scaling", scaling, str(tmp_path / "scaling.png"))
    table = benchmark.scaling_table(scaling)
    assert table.count("| 200.00 |") == 3  # 2 s per 1000 interactions at every size
    assert benchmark.plot("models", runs, str(tmp_path / "models.png")) is None
    plugins = [{"label": label, "seed": 0, "test": {"recall@20": 0.05 + i / 100}}
               for i, label in enumerate(["vbpr", "ibmrec(vbpr)", "mrdib(vbpr)", "lattice",
                                          "mrdib(lattice)"])]
    assert benchmark.plot("plugins", plugins, str(tmp_path / "plugins.png"))


def test_benchmark_eval_study_times_the_evaluator(tmp_path):
    proc = run("benchmark", "--study=eval", "--eval_dims=8,32", "--eval_batch_sizes=100,5000",
               "--eval_repeats=1", "--dataset=synthetic", f"--bench_dir={tmp_path}")
    payload = json.loads((tmp_path / "eval.json").read_text())
    rows = payload["runs"]
    assert [(r["dim"], r["batch_size"]) for r in rows] == [(8, 100), (8, 5000), (32, 100), (32, 5000)]
    for r in rows:
        assert r["users"] > 0 and r["items"] > 0
        assert 0 < r["products_seconds"] and 0 < r["eval_seconds"]
    line = [x for x in proc.stdout.splitlines() if x.startswith("| 32 | 100 |")][0]
    r = rows[2]
    assert f"| {r['eval_seconds']:.2f} | {r['products_seconds']:.2f} |" in line
    # Nothing is kept to report.
    refused = run("benchmark", "--study=eval", "--report_only", f"--bench_dir={tmp_path}",
                  check=False)
    assert refused.returncode == 2 and "keeps no runs" in refused.stderr


def test_bad_enum_values_exit_2_with_one_line():
    for flag, message in (("--precision=float8", "--precision"), ("--model=foo", "--model")):
        proc = run("train", "--dataset=synthetic", flag, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, proc.stderr
        assert lines[-1].startswith("error: ") and message in lines[-1], proc.stderr
        assert "Traceback" not in proc.stderr


def test_overwrite_spares_folders_that_are_not_model_dirs_and_resume_needs_a_run(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    proc = run("train", "--flagfile=flags/demo.cfg", f"--model_dir={mine}", "--epochs=1",
               check=False)
    assert proc.returncode == 2, proc.stderr
    assert "is not a model directory of runners.train" in proc.stderr.strip().splitlines()[-1]
    assert (mine / "thesis.tex").read_text() == "keep me"
    proc = run("train", "--dataset=synthetic", f"--model_dir={tmp_path / 'fresh'}", "--resume",
               "--epochs=1", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "there is no run to continue" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "fresh" / "flags.cfg").exists()


def _readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_from_python_block_runs(tmp_path, monkeypatch, capsys):
    """The README's "From Python" block, run as it stands (in a temporary folder), writes a
    whole run; the same call again is refused, and resumed it trains nothing more."""
    import ibmrec_tf
    from ibmrec_tf.config import read_configs

    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(_readme_block("From Python"), "README.md", "exec"), namespace)
    result = namespace["result"]
    model_dir = tmp_path / "runs" / "from-python"
    for name in ("config.json", "run_info.json", "metrics.json", "export/1/saved_model.pb"):
        assert (model_dir / name).exists(), name
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics == result.metrics and 0 < metrics["test"]["recall@20"] <= 1
    model, data, model_config, train = read_configs(str(model_dir))
    assert (model, data.dataset, model_config.knn_k, train.epochs) == ("ibmrec", "synthetic", 5, 2)
    assert f"{metrics['test']['recall@20']}" in capsys.readouterr().out
    kwargs = dict(model="ibmrec", data=data, model_config=model_config, train_config=train,
                  model_dir=str(model_dir), echo=lambda _: None)
    with pytest.raises(FileExistsError, match="holds checkpoints of another run"):
        ibmrec_tf.run(**kwargs)
    with pytest.raises(ValueError, match="model_config differs"):
        ibmrec_tf.run(**{**kwargs, "model_config": model_config.replace(knn_k=4)}, resume=True)
    again = ibmrec_tf.run(**kwargs, resume=True)
    assert again.train.epochs_run == 2 and again.metrics["test"] == metrics["test"]


def test_benchmark_growth_study_writes_its_data_once_and_gives_slopes(tmp_path):
    from runners.bench.growth import growth_points

    points = [p for p in growth_points(0.03) if p[0] == "items"]
    only = ",".join(f"lightgcn {name}" for _, _, name, _ in points[::3])  # the two ends
    args = ["benchmark", "--study=growth", "--growth_scale=0.03", "--speed_epochs=2",
            "--embedding_dim=8", f"--bench_dir={tmp_path}", f"--only={only}"]
    proc = run(*args)
    assert sorted(os.listdir(tmp_path / "growth_data")) == sorted(
        name for _, _, name, _ in points[::3])
    runs = json.loads((tmp_path / "growth.json").read_text())["runs"]
    assert [r["label"] for r in runs] == only.split(",")
    assert all(r["build_seconds"] > 0 and r["estimated_peak_mb"] > 0 for r in runs)
    sizes = [r["train_interactions"] for r in runs]
    assert sizes[0] == sizes[1]  # the items axis holds the interactions
    row = [line for line in proc.stdout.splitlines() if line.startswith("| lightgcn | items | ")][0]
    assert f"{points[0][1]:,}, {points[3][1]:,}" in row
    # Rerun: the data and the runs are reused.
    again = run(*args)
    assert "writing" not in again.stdout and " s\n" not in again.stdout
    bad = run("benchmark", "--study=growth", "--growth_scale=0.01", f"--bench_dir={tmp_path}",
              check=False)
    assert bad.returncode == 2 and "--growth_scale=0.01" in bad.stderr


def test_benchmark_knn_study_measures_recall_against_exact(tmp_path):
    pytest.importorskip("faiss")
    proc = run("benchmark", "--study=knn", "--dataset=synthetic", "--knn_sizes=400",
               "--knn_nprobes=1,64", "--knn_k=5", f"--bench_dir={tmp_path}")
    rows = json.loads((tmp_path / "knn.json").read_text())["runs"]
    assert {r["modality"] for r in rows} == {"image", "text"}
    for r in rows:
        assert r["items"] == 400 and r["lists"] == 10 and r["k"] == 5
        one, every = r["approximate"]
        assert every["recall"] == 1.0  # every list searched: exact
        assert one["recall"] < every["recall"]
    assert "| image | 400 |" in proc.stdout


def test_benchmark_xla_study_times_each_dense_part_both_ways(tmp_path):
    proc = run("benchmark", "--study=xla", "--dataset=synthetic", "--model=lightgcn",
               "--eval_repeats=1", f"--bench_dir={tmp_path}")
    rows = json.loads((tmp_path / "xla.json").read_text())["runs"]
    timed = [r for r in rows if "seconds" in r]
    assert len(timed) == 6 and all(r["seconds"] > 0 and r["xla_seconds"] > 0 for r in timed)
    assert all(r["max_difference"] < 1e-3 for r in timed)  # the same values, compiled
    # The user-item propagation is a CSR product, which XLA has no kernel for.
    assert "SparseMatrixMatMul" in rows[-1]["outcome"] and "SparseMatrixMatMul" in proc.stdout


def test_benchmark_estimate_study_gives_the_parts_at_a_shape_not_on_disk(tmp_path):
    from ibmrec_tf.memory import Shapes, estimate_peak_memory
    from ibmrec_tf.models import ModelConfig
    from ibmrec_tf.training import TrainConfig

    proc = run("benchmark", "--study=estimate", "--estimate_shape=34500000,1140000,1e9",
               "--estimate_dims=image:4096", f"--bench_dir={tmp_path}")
    rows = {r["label"]: r for r in json.loads((tmp_path / "estimate.json").read_text())["runs"]}
    shapes = Shapes(34_500_000, 1_140_000, 800_000_000, 1_000_000_000, {"image": 4096})
    assert rows["vlattice"]["peak"] == estimate_peak_memory("vlattice", shapes, ModelConfig(),
                                                            TrainConfig()).peak
    assert rows["lightgcn"]["parts"]["build"] == 0 < rows["freedom"]["parts"]["build"]
    assert "| lightgcn |" in proc.stdout and "34,500,000 users" in proc.stdout
    bad = run("benchmark", "--study=estimate", "--estimate_shape=1,2", f"--bench_dir={tmp_path}",
              check=False)
    assert bad.returncode == 2 and "--estimate_shape must be" in bad.stderr


def test_benchmark_large_study_sets_the_estimate_beside_the_measured_peak(tmp_path):
    from ibmrec_tf.memory import estimate_run

    proc = run("benchmark", "--study=large", "--speed_epochs=1", "--dataset=synthetic",
               "--embedding_dim=8", "--knn_k=5", "--only=lightgcn,ibmrec(freedom)",
               f"--bench_dir={tmp_path}")
    runs = {r["label"]: r for r in json.loads((tmp_path / "large.json").read_text())["runs"]}
    assert set(runs) == {"lightgcn", "ibmrec(freedom)"}
    for label, r in runs.items():
        assert r["valid"]["users_evaluated"] == 1200 and r["build_seconds"] > 0
        estimate = estimate_run(r["model_dir"]).peak / 2 ** 20
        row = [line for line in proc.stdout.splitlines() if line.startswith(f"| {label} |")][0]
        assert f"| {r['peak_rss_mb']:.0f} | {estimate:.0f} |" in row
        assert os.path.isdir(os.path.join(r["model_dir"], "export", "1"))
        assert r["floor"]["steps_per_epoch"] > 0
    assert "Popularity (items ranked by training degree) on synthetic: valid recall@20" in proc.stdout
