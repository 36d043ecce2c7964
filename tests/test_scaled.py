"""Synthetic data at large shapes (ibmrec_tf.data.scaled), and reading it back fast."""

import json

import numpy as np
import pytest

from ibmrec_tf.data import formats, load_dataset
from ibmrec_tf.data import scaled
from tests.conftest import run_runner, write_inter


def _small(**overrides):
    sizes = dict(num_users=3000, num_items=1200, num_interactions=30000,
                 modality_dims={"image": 24, "text": 12})
    sizes.update(overrides)
    return scaled.Shape(**sizes)


def test_sizes_tails_and_splits_follow_the_shape():
    shape = _small(num_users=20000, num_items=8000, num_interactions=170000)
    data = scaled.make_scaled(shape, seed=1)
    assert abs(len(data.users) - shape.num_interactions) < 0.01 * shape.num_interactions
    keys = data.users * shape.num_items + data.items
    assert len(np.unique(keys)) == len(keys)  # a user's items are distinct
    per_user = np.bincount(data.users, minlength=shape.num_users)
    assert per_user.min() >= scaled.USER_MIN
    for label in (1, 2):  # every user has a valid and a test interaction, about 10% of them
        assert (np.bincount(data.users[data.labels == label], minlength=shape.num_users) >= 1).all()
    stats = scaled.statistics(data.users, data.items, shape.num_users, shape.num_items)
    # The exponents the generator is built to give (the Amazon sets: users 3.0-3.6, items 1.9-2.4).
    assert abs(stats["user"]["tail_exponent_above_5"] - scaled.USER_TAIL) < 0.3
    assert 1.7 < stats["item"]["tail_exponent_above_5"] < 2.5
    assert stats["user"]["max_degree"] <= scaled.USER_CAP * per_user.mean() + 1


@pytest.mark.slow
def test_the_same_seed_draws_the_same_data_and_no_dense_matrix_is_needed():
    # 2e4 users x 2e6 items would be 4e10 dense entries; the draw is linear in interactions.
    shape = _small(num_users=20_000, num_items=2_000_000, num_interactions=120_000)
    a = scaled.make_scaled(shape, seed=3)
    b = scaled.make_scaled(shape, seed=3)
    assert np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.items, scaled.make_scaled(shape, seed=4).items)


def test_bad_shapes_name_the_size():
    with pytest.raises(ValueError, match="at least 5"):
        scaled.check_shape(_small(num_interactions=100))
    with pytest.raises(ValueError, match="dimension 0"):
        scaled.check_shape(_small(modality_dims={"image": 0}))


def test_written_folder_reads_back_with_memory_mapped_features(tmp_path):
    data = scaled.make_scaled(_small(), seed=0)
    folder = scaled.write_scaled(data, str(tmp_path), "big")
    loaded = load_dataset(str(tmp_path), "big")
    assert loaded.num_users == 3000 and loaded.num_items == 1200
    assert sum(len(loaded.split(s)) for s in ("train", "valid", "test")) == len(data.users)
    image = loaded.features["image"]
    assert isinstance(image, np.memmap) and image.dtype == np.float32 and image.shape == (1200, 24)
    # The signal lies in the features: a least-squares map from them recovers the latent factors.
    latent = data.item_latent
    fit = np.linalg.lstsq(np.asarray(image), latent, rcond=None)[0]
    explained = 1 - ((np.asarray(image) @ fit - latent) ** 2).sum() / ((latent - latent.mean(0)) ** 2).sum()
    assert explained > 0.99
    card = json.loads((tmp_path / "big" / "dataset.json").read_text())
    assert card["interactions"] == len(data.users) and card["kind"].startswith("synthetic")
    with pytest.raises(FileExistsError):
        scaled.write_scaled(data, str(tmp_path), "big")
    assert folder.endswith("big")


def test_vectorized_inter_parsing_equals_the_line_parser(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(int(u), int(i), int(x)) for u, i, x in zip(rng.integers(0, 10**9, 5000),
                                                        rng.integers(0, 7, 5000),
                                                        rng.integers(0, 3, 5000))]
    path = write_inter(tmp_path, "a", rows)
    fast = formats.read_inter(str(path))
    body = path.read_bytes().split(b"\n", 1)[1]
    assert formats._plain_table(body, 3, [0, 1, 2]) is not None  # the fast path was taken
    for split, label in (("train", 0), ("valid", 1), ("test", 2)):
        expect = np.array([(u, i) for u, i, x in rows if x == label], np.int64).reshape(-1, 2)
        np.testing.assert_array_equal(fast[split], expect)
    # Columns in another order, extra columns, a file without its last newline.
    other = tmp_path / "b.inter"
    other.write_text("x_label\titemID\tuserID\trating\n2\t5\t7\t3\n0\t1\t2\t4")
    got = formats.read_inter(str(other))
    assert got["test"].tolist() == [[7, 5]] and got["train"].tolist() == [[2, 1]]
    for bad in (b"1\t2\t0\n\n3\t4\t1\n", b"1\t2\t0\n3\t\t1\n", b"1\t2\n", b"1\t2\t0\r\n",
                b"1\t2\t-1\n", b"1234567890123456\t2\t0\n"):
        assert formats._plain_table(bad, 3, [0, 1, 2]) is None, bad


@pytest.mark.slow
def test_models_beat_popularity_and_the_runner_writes_the_folder(tmp_path):
    """`prepare_data --synthetic` writes a folder that `train` reads; LightGCN learns the
    planted preference beyond popularity."""
    run_runner("prepare_data", "--synthetic", "--num_users=3000", "--num_items=1200",
               "--num_interactions=30000", "--modality_dims=image:24,text:12",
               f"--out_dir={tmp_path}", "--dataset=big", "--seed=2")
    card = json.loads((tmp_path / "big" / "dataset.json").read_text())
    assert card["shape"]["num_users"] == 3000 and card["seed"] == 2
    again = run_runner("prepare_data", "--synthetic", "--num_users=3000", "--num_items=1200",
                       "--num_interactions=30000", f"--out_dir={tmp_path}", "--dataset=big",
                       check=False)
    assert again.returncode == 2 and "already exists" in again.stderr.strip().splitlines()[-1]
    model_dir = tmp_path / "run"
    run_runner("train", f"--data_dir={tmp_path}", "--dataset=big", "--model=lightgcn",
               "--n_layers=2", "--learning_rate=1e-2", "--epochs=20", "--patience=20",
               "--batch_size=512", f"--model_dir={model_dir}")
    trained = json.loads((model_dir / "metrics.json").read_text())["valid"]["recall@20"]
    from ibmrec_tf.evaluation import Evaluator

    data = load_dataset(str(tmp_path), "big", modalities=[])
    degree = np.bincount(data.train[:, 1], minlength=data.num_items).astype(np.float32)
    popularity = Evaluator(data, "valid", ks=(20,)).evaluate(
        np.ones((data.num_users, 1), np.float32), degree[:, None])["recall@20"]
    assert trained > 1.3 * popularity, (trained, popularity)
