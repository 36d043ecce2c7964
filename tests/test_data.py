import json
import logging

import numpy as np
import pytest

from ibmrec_tf import data as data_lib
from ibmrec_tf.data import DataError, load_dataset, make_synthetic, TripletSampler
from tests.conftest import TINY_ROWS, write_inter


def test_inter_loads_splits_counts_and_features(tiny_dir):
    ds = load_dataset(str(tiny_dir), "tiny")
    assert (ds.num_users, ds.num_items) == (4, 5)
    assert len(ds.train) == 7 and len(ds.valid) == 3 and len(ds.test) == 3
    assert ds.train.dtype == np.int64 and ds.train.shape[1] == 2
    assert ds.modalities == ("image", "text")
    assert ds.features["image"].dtype == np.float32 and ds.features["image"].shape == (5, 6)
    assert [0, 3] in ds.test.tolist() and [3, 4] in ds.test.tolist()


def test_modalities_flag_selects_and_empty_means_none(tiny_dir):
    assert load_dataset(str(tiny_dir), "tiny", modalities=["text"]).modalities == ("text",)
    assert load_dataset(str(tiny_dir), "tiny", modalities=[]).features == {}


def test_extra_columns_are_ignored_and_column_order_is_free(tmp_path):
    rows = [(r[2], 5.0, r[1], r[0], 123) for r in TINY_ROWS]
    write_inter(tmp_path / "x", "x", rows, header="x_label\trating\titemID\tuserID\ttimestamp")
    ds = load_dataset(str(tmp_path), "x")
    assert (ds.num_users, ds.num_items, len(ds.train)) == (4, 5, 7)


def test_json_format_matches_inter(tmp_path):
    folder = tmp_path / "j"
    (folder / "5-core").mkdir(parents=True)
    for label, fname in enumerate(["train.json", "val.json", "test.json"]):
        payload = {}
        for u, i, x in TINY_ROWS:
            if x == label:
                payload.setdefault(str(u), []).append(i)
        (folder / "5-core" / fname).write_text(json.dumps(payload))
    write_inter(tmp_path / "k", "k", TINY_ROWS)
    a, b = load_dataset(str(tmp_path), "j"), load_dataset(str(tmp_path), "k")
    for split in data_lib.SPLITS:
        assert sorted(map(tuple, a.split(split))) == sorted(map(tuple, b.split(split)))


def test_duplicates_dropped_with_warning(tmp_path, caplog):
    write_inter(tmp_path / "d", "d", TINY_ROWS + [(0, 0, 0), (0, 0, 0)])
    with caplog.at_level(logging.WARNING, logger="ibmrec_tf"):
        ds = load_dataset(str(tmp_path), "d")
    assert len(ds.train) == 7
    assert "dropped 2 duplicate train" in caplog.text


@pytest.mark.parametrize("rows, header, message", [
    ([(0, 1, 0), (1, -2, 0)], None, "d.inter:3: negative id -2"),
    ([(0, 1, 0), (1, "x", 0)], None, "d.inter:3: 'x' is not a non-negative integer"),
    ([(0, 1, 0), (1, 2.5, 0)], None, "d.inter:3: '2.5' is not"),
    ([(0, 1, 0), (1, 2, 7)], None, "d.inter:3: unknown x_label 7"),
    ([(0, 1, 0), (1, 2)], None, "d.inter:3: expected 3 tab-separated fields, found 2"),
    ([(0, 1, 0), (0, 1, 2)], None, "pair (user 0, item 1) is in both train and test"),
    ([(0, 3, 0), (1, 2, 1), (1, 2, 2), (0, 3, 2), (0, 1, 0), (0, 1, 2)], None,
     "pair (user 0, item 1) is in both train and test (2 such pairs)"),  # the smallest pair first
    ([(2, 4, 0), (2, 4, 1), (2, 4, 2)], None,
     "pair (user 2, item 4) is in both train and valid (1 such pairs)"),  # in all three
    ([(0, 1, 1), (0, 2, 2)], None, "the training split is empty"),
    ([(0, 1, 0)], "user\titem\tlabel", "d.inter:1: header"),
])
def test_bad_inter_rejected_with_location(tmp_path, rows, header, message):
    kwargs = {"header": header} if header else {}
    write_inter(tmp_path / "d", "d", rows, **kwargs)
    with pytest.raises(DataError) as err:
        load_dataset(str(tmp_path), "d")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_folder_file_and_modality(tmp_path, tiny_dir):
    with pytest.raises(DataError, match="dataset folder not found"):
        load_dataset(str(tmp_path), "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no interactions found"):
        load_dataset(str(tmp_path), "empty")
    with pytest.raises(DataError, match="audio_feat.npy: modality 'audio' was requested"):
        load_dataset(str(tiny_dir), "tiny", modalities=["audio"])


def test_bad_features_rejected(tiny_dir):
    folder = tiny_dir / "tiny"
    np.save(folder / "image_feat.npy", np.zeros((4, 6), np.float32))
    with pytest.raises(DataError, match="disagree on the number of items"):
        load_dataset(str(tiny_dir), "tiny")
    with pytest.raises(DataError, match="item id 4 is out of range: image_feat.npy has 4 rows"):
        load_dataset(str(tiny_dir), "tiny", modalities=["image"])
    bad = np.zeros((5, 6), np.float32)
    bad[3, 2] = np.nan
    np.save(folder / "image_feat.npy", bad)
    with pytest.raises(DataError, match="row 3, column 2 is nan"):
        load_dataset(str(tiny_dir), "tiny")
    np.save(folder / "image_feat.npy", np.zeros((5,), np.float32))
    with pytest.raises(DataError, match="expected a 2-D"):
        load_dataset(str(tiny_dir), "tiny")
    (folder / "image_feat.npy").write_bytes(b"not an npy file")
    with pytest.raises(DataError, match="not a .npy file"):
        load_dataset(str(tiny_dir), "tiny")


def test_json_not_a_mapping(tmp_path):
    folder = tmp_path / "j" / "5-core"
    folder.mkdir(parents=True)
    (folder / "train.json").write_text("[1, 2]")
    (folder / "val.json").write_text("{}")
    (folder / "test.json").write_text("{}")
    with pytest.raises(DataError, match="train.json: expected a JSON object"):
        load_dataset(str(tmp_path), "j")


def test_synthetic_is_seeded_and_well_formed():
    a, b, c = make_synthetic(seed=3), make_synthetic(seed=3), make_synthetic(seed=4)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.features["image"], b.features["image"])
    assert not np.array_equal(a.train, c.train)
    counts = np.bincount(a.train[:, 0], minlength=a.num_users)
    assert counts.min() >= 1 and len(a.valid) == len(a.test) == 2 * a.num_users
    assert a.features["image"].shape == (a.num_items, 64)


def test_synthetic_features_carry_signal_in_a_subspace():
    """Items' features: only `signal_dims` directions depend on the latent preference vector."""
    clean = make_synthetic(seed=0, modality_dims={"image": 40}, signal_dims=4, noise_scale=0.0)
    noisy = make_synthetic(seed=0, modality_dims={"image": 40}, signal_dims=4)
    assert np.linalg.matrix_rank(clean.features["image"], tol=1e-3) == 4
    assert np.linalg.matrix_rank(noisy.features["image"], tol=1e-3) == 40
    # Same interactions, same signal: only the irrelevant part differs.
    assert np.array_equal(clean.train, noisy.train)


def test_sampler_negatives_never_train_items_and_are_reproducible():
    ds = make_synthetic(seed=0)
    sampler = TripletSampler(ds, seed=5)
    users, pos, neg = sampler.epoch_arrays(1)
    train = {(int(u), int(i)) for u, i in ds.train}
    assert all((int(u), int(j)) not in train for u, j in zip(users, neg))
    assert sorted(zip(users.tolist(), pos.tolist())) == sorted(map(tuple, ds.train.tolist()))
    again = TripletSampler(ds, seed=5).epoch_arrays(1)
    assert all(np.array_equal(x, y) for x, y in zip((users, pos, neg), again))
    assert not np.array_equal(neg, sampler.epoch_arrays(2)[2])
    batches = list(sampler.epoch_dataset(1, 1000))
    assert len(batches) == sampler.steps_per_epoch(1000)
    for name, values in (("user", users), ("pos", pos), ("neg", neg)):
        assert np.array_equal(np.concatenate([b[name].numpy() for b in batches]), values)


def test_real_tiktok_loads(shared_data):
    ds = load_dataset(str(shared_data), "tiktok")
    assert (ds.num_users, ds.num_items) == (9308, 6710)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (59541, 3051, 6130)
    assert ds.modalities == ("audio", "image")
    assert all(f.shape == (6710, 128) and f.dtype == np.float32 for f in ds.features.values())


def test_real_amazon_inter_and_json_agree(shared_data):
    a = load_dataset(str(shared_data), "baby", fmt="inter")
    b = load_dataset(str(shared_data), "baby", fmt="json")
    assert (a.num_users, a.num_items) == (19445, 7050) and a.features == {}
    for split in data_lib.SPLITS:
        assert np.array_equal(np.unique(a.split(split), axis=0), np.unique(b.split(split), axis=0))


def test_train_fraction_keeps_a_seeded_subset_of_train_only():
    from ibmrec_tf.data import with_train_fraction

    data = make_synthetic(seed=0, num_users=50, num_items=40, interactions_per_user=8)
    half = with_train_fraction(data, 0.5, seed=3)
    assert len(half.train) == round(0.5 * len(data.train))
    kept = {tuple(p) for p in half.train}
    assert kept <= {tuple(p) for p in data.train}
    np.testing.assert_array_equal(half.valid, data.valid)
    np.testing.assert_array_equal(half.test, data.test)
    np.testing.assert_array_equal(with_train_fraction(data, 0.5, seed=3).train, half.train)
    assert {tuple(p) for p in with_train_fraction(data, 0.5, seed=4).train} != kept
    assert any("subsampled to 0.5" in n for n in half.notes)
    assert with_train_fraction(data, 1.0) is data
    with pytest.raises(ValueError, match="fraction"):
        with_train_fraction(data, 0.0)
