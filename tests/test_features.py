"""Item features from images and texts: row order, missing and corrupt sources, the report, the
loaders' mask, resume after a kill, weights files, the text encoders, and a raw log to a
trained model end to end. No test downloads weights: they use random weights (``none``) or
weights files and presets they make."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ibmrec_tf import features as feats
from ibmrec_tf.data import load_dataset
from ibmrec_tf.data import raw
from tests.conftest import ROOT
from tests.test_runners import run


pytestmark = pytest.mark.slow  # subprocesses and trainings: CI runs them, -m "not slow" does not


def write_images(folder, raw_ids, *, skip=(), corrupt=(), size=(40, 48)):
    """One image per raw id, its colour set by the item's index (PNG for odd, JPEG for even)."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for j, rid in enumerate(raw_ids):
        if j in skip:
            continue
        if j in corrupt:
            (folder / f"{rid}.png").write_bytes(b"\x89PNG but not really an image")
            continue
        pixels = np.clip(rng.normal(20 + 9 * j, 30, size + (3,)), 0, 255).astype(np.uint8)
        data = tf.io.encode_png(pixels) if j % 2 else tf.io.encode_jpeg(pixels)
        tf.io.write_file(str(folder / (f"{rid}.png" if j % 2 else f"{rid}.jpg")), data)


def make_dataset(tmp_path, num_items=12, name="shop"):
    """A prepared folder whose items are it0..itN-1 (every item bought by several users)."""
    rows = [(f"u{u}", f"it{(u + j) % num_items:02d}", 5, u * 10 + j)
            for u in range(3 * num_items) for j in range(4)]
    log = tmp_path / "log.csv"
    log.write_text("user,item,rating,ts\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    raw.prepare_raw(str(log), str(tmp_path / "data"), name, user_column="user",
                    item_column="item", rating_column="rating", timestamp_column="ts", k=0)
    folder = tmp_path / "data" / name
    return folder, raw.read_id_map(str(folder / "item_ids.tsv"))


def test_image_rows_follow_item_ids_and_missing_and_corrupt_are_reported(tmp_path):
    folder, raw_ids = make_dataset(tmp_path)
    write_images(tmp_path / "images", raw_ids, skip={2}, corrupt={5})
    sources, reasons = feats.image_sources(str(tmp_path / "images"), raw_ids)
    encoder = feats.ImageEncoder(model="efficientnetv2b0", weights="none", image_size=32,
                                 batch_size=4)
    result = feats.extract(str(folder), "image", sources, encoder, reasons=reasons,
                           raw_ids=raw_ids, chunk_size=5, progress=False)
    values = np.load(folder / "image_feat.npy")
    assert values.dtype == np.float32 and values.shape == (12, 1280)
    present = [j for j in range(12) if j not in (2, 5)]
    direct, ok = encoder.encode([sources[j] for j in present])
    assert ok.all()
    np.testing.assert_allclose(values[present], direct, rtol=1e-4, atol=1e-5)
    assert len({tuple(np.round(v, 4)) for v in values[present]}) == len(present)
    assert not values[[2, 5]].any()
    mask = np.load(folder / "image_missing.npy")
    assert mask.dtype == bool and np.flatnonzero(mask).tolist() == [2, 5]
    report = json.loads((folder / "extract_report.json").read_text())["image"]
    assert report["missing"] == [
        {"item": 2, "raw_id": raw_ids[2], "reason": "no image file"},
        {"item": 5, "raw_id": raw_ids[5], "reason": "image could not be decoded"}]
    assert report["complete"] and report["encoder"]["model"] == "efficientnetv2b0"
    assert result.encoded == 11 and not os.path.exists(folder / ".extract-image")
    data = load_dataset(str(folder.parent), "shop")
    assert np.flatnonzero(data.feature_missing["image"]).tolist() == [2, 5]
    assert "image 1280-d (2 missing)" in data.summary()
    # a weights file gives the saved network, whatever the seed
    encoder._base.save_weights(str(tmp_path / "net.weights.h5"))
    loaded = feats.ImageEncoder(model="efficientnetv2b0", weights=str(tmp_path / "net.weights.h5"),
                                image_size=32, seed=7)
    np.testing.assert_allclose(loaded.encode([sources[j] for j in present])[0], direct,
                               rtol=1e-4, atol=1e-5)
    # a second run does not replace the finished features unasked
    with pytest.raises(feats.ExtractError, match="already exists; pass --overwrite"):
        feats.extract(str(folder), "image", sources, encoder, progress=False)


def test_missing_items_have_no_knn_edges():
    from ibmrec_tf.graph import knn_graph

    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 6)).astype(np.float32)
    missing = np.zeros(30, bool)
    missing[[3, 17]] = True
    features[missing] = 0.0
    neighbors, similarity = knn_graph(features, 4, chunk_size=7, missing=missing)
    present_rows = ~missing
    assert not np.isin(neighbors[present_rows], [3, 17]).any()
    assert not similarity[missing].any()
    plain_neighbors, _ = knn_graph(features[present_rows], 4)
    ids = np.flatnonzero(present_rows)
    np.testing.assert_array_equal(neighbors[present_rows], ids[plain_neighbors])


def test_too_many_missing_is_an_error_before_encoding(tmp_path):
    folder, raw_ids = make_dataset(tmp_path)
    write_images(tmp_path / "images", raw_ids, skip=set(range(4)))
    sources, reasons = feats.image_sources(str(tmp_path / "images"), raw_ids)

    class Refuses:
        spec, dim = {"kind": "image", "weights": "none"}, 3

        def fit(self, sources):
            raise AssertionError("encoding started")

    with pytest.raises(feats.ExtractError, match=r"4 of 12 items \(33.3%\) have no usable image "
                                                 r"source before encoding, more than "
                                                 r"--max_missing=0.2"):
        feats.extract(str(folder), "image", sources, Refuses(), reasons=reasons, progress=False)
    assert not [f for f in os.listdir(folder) if "image" in f]


def test_kill_then_resume_equals_an_uninterrupted_encoding(tmp_path):
    """VGG16's fc2 (random weights) through the runner: SIGKILL after the first saved chunk,
    a plain rerun refused, then ``--resume`` reuses the saved chunks and finishes."""
    folder, raw_ids = make_dataset(tmp_path, num_items=8)
    write_images(tmp_path / "images", raw_ids)
    args = [f"--dataset_dir={folder}", f"--images={tmp_path / 'images'}", "--image_weights=none",
            "--chunk_size=2", "--extract_batch_size=2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "runners.extract_features", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    work = folder / ".extract-image"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if work.is_dir() and any(f.endswith(".npz") for f in os.listdir(work)):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the extraction finished before it was killed"
    assert not (folder / "image_feat.npy").exists()
    sources, reasons = feats.image_sources(str(tmp_path / "images"), raw_ids)
    with pytest.raises(feats.ExtractError, match="pass --resume to continue it"):
        feats.extract(str(folder), "image", sources, feats.ImageEncoder(weights="none"),
                      progress=False)
    resumed = run("extract_features", *args, "--resume")
    assert "chunk(s) reused" in resumed.stdout
    report = json.loads((folder / "extract_report.json").read_text())["image"]
    assert report["chunks_resumed"] >= 1 and report["encoded_this_run"] < 8
    values = np.load(folder / "image_feat.npy")
    assert values.shape == (8, 4096)
    direct, _ = feats.ImageEncoder(weights="none", batch_size=4).encode(sources)
    np.testing.assert_allclose(values, direct, rtol=1e-3, atol=1e-4)


def test_tfidf_texts_missing_and_empty(tmp_path):
    pytest.importorskip("sklearn", reason="the [features] extra (scikit-learn) is not installed")
    folder, raw_ids = make_dataset(tmp_path)
    words = "red blue green shoe ball racket tent bag bottle light".split()
    rows = [f"{rid}\t{words[j % 10]} {words[(j * 3) % 10]}\t{'' if j == 4 else words[(j + 1) % 10]}"
            for j, rid in enumerate(raw_ids) if j != 7]
    rows[1] = f"{raw_ids[1]}\t \t"  # an empty text
    (tmp_path / "texts.tsv").write_text("item\ttitle\tdescription\n" + "\n".join(rows) + "\n")
    texts, reasons = feats.text_sources(str(tmp_path / "texts.tsv"), raw_ids)
    assert texts[7] is None and reasons[7] == "no row in the TSV"
    assert texts[1] is None and reasons[1] == "empty text"
    encoder = feats.TfidfTextEncoder(dim=6, seed=0)
    feats.extract(str(folder), "text", texts, encoder, reasons=reasons, raw_ids=raw_ids,
                  chunk_size=5, progress=False)
    values = np.load(folder / "text_feat.npy")
    assert values.shape == (12, 6) and not values[[1, 7]].any()
    same = [j for j in range(12) if texts[j] == texts[0]]
    np.testing.assert_allclose(values[same], values[[0] * len(same)], atol=1e-6)
    assert np.flatnonzero(np.load(folder / "text_missing.npy")).tolist() == [1, 7]


def test_kerashub_encoder_mean_pools_a_local_preset(tmp_path):
    keras_hub = pytest.importorskip("keras_hub",
                                    reason="the [features] extra (KerasHub) is not installed")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "blue", "shoe", "ball", "a"]
    preset = tmp_path / "tiny_bert"
    keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=1, num_heads=2,
                                  hidden_dim=8, intermediate_dim=16,
                                  max_sequence_length=16).save_to_preset(str(preset))
    keras_hub.models.BertTokenizer(vocabulary=vocab).save_to_preset(str(preset))
    encoder = feats.KerasHubTextEncoder(preset=str(preset), max_length=8, batch_size=2)
    texts = ["red shoe", "a blue ball ball ball", "shoe"]
    values, ok = encoder.encode(texts)
    assert values.shape == (3, 8) and ok.all() and encoder.dim == 8
    inputs = encoder._preprocessor(np.array(texts))
    sequence = np.asarray(encoder._backbone(inputs)["sequence_output"])
    mask = np.asarray(inputs["padding_mask"])
    expected = [sequence[r][mask[r]].mean(axis=0) for r in range(3)]
    np.testing.assert_allclose(values, np.stack(expected), rtol=1e-5, atol=1e-6)
    random_weights, _ = feats.KerasHubTextEncoder(preset=str(preset), weights="none",
                                                  max_length=8).encode(texts)
    assert not np.allclose(random_weights, values, atol=1e-3)


def test_a_missing_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.feature_extraction.text", None)
    with pytest.raises(feats.MissingExtra, match=r'scikit-learn is not installed; install the '
                                                 r'optional extra: pip install -e "\.\[features\]"'):
        feats.TfidfTextEncoder(dim=4).fit(["a b", "c d"])


def test_end_to_end_raw_log_images_texts_to_a_trained_model(tmp_path):
    """A CSV log, a folder of images and a TSV of texts, through prepare_data,
    extract_features (random VGG16 weights, TF-IDF) and train; the export scores the cold
    item (bought once, last, so it is in test only) from its features."""
    pytest.importorskip("sklearn", reason="the [features] extra (scikit-learn) is not installed")
    rng = np.random.default_rng(0)
    rows = []
    for u in range(40):
        for t, i in enumerate(rng.choice(24, 6, replace=False)):
            rows.append((f"user{u}", f"sku{i}", int(rng.integers(1, 6)), 1000 * u + t))
    rows.append(("user0", "sku_cold", 5, 999))  # user0's latest: the chronological test item
    (tmp_path / "log.csv").write_text("customer,product,stars,time\n" + "".join(
        ",".join(map(str, r)) + "\n" for r in rows))
    run("prepare_data", f"--raw_interactions={tmp_path / 'log.csv'}", "--user_column=customer",
        "--item_column=product", "--rating_column=stars", "--timestamp_column=time",
        "--split=chronological", "--k_core=0", f"--out_dir={tmp_path / 'data'}",
        "--dataset=mine")
    folder = tmp_path / "data" / "mine"
    card = json.loads((folder / "dataset.json").read_text())
    assert card["statistics"]["items_without_training_interactions"] == 1
    raw_ids = raw.read_id_map(str(folder / "item_ids.tsv"))
    write_images(tmp_path / "images", raw_ids, skip={0})
    (tmp_path / "texts.tsv").write_text("product\ttitle\n" + "".join(
        f"{rid}\t{'red' if j % 2 else 'blue'} {'shoe' if j % 3 else 'ball'} number{j}\n"
        for j, rid in enumerate(raw_ids)))
    extracted = run("extract_features", f"--dataset_dir={folder}",
                    f"--images={tmp_path / 'images'}", "--image_weights=none",
                    "--image_model=efficientnetv2b0", "--image_size=32",
                    f"--texts={tmp_path / 'texts.tsv'}", "--text_encoder=tfidf", "--text_dim=8")
    assert "1 missing" in extracted.stdout and "items/s" in extracted.stdout
    model_dir = tmp_path / "run"
    run("train", "--dataset=mine", f"--data_dir={tmp_path / 'data'}", "--model=ibmrec",
        "--backbone=vlattice", "--knn_k=3", "--epochs=2", "--batch_size=64", "--ks=10,20",
        f"--model_dir={model_dir}")
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert 0 <= metrics["test"]["recall@10"] <= 1 and metrics["epochs_run"] == 2
    import tensorflow as tf

    cold = raw_ids.index("sku_cold")
    scores = tf.saved_model.load(str(model_dir / "export" / "1")).signatures["score_all"](
        user_ids=tf.constant([0, 1, 2], tf.int64))["scores"].numpy()
    assert scores.shape == (3, len(raw_ids)) and np.isfinite(scores).all()
    assert np.abs(scores[:, cold]).max() > 0
