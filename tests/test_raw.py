"""Raw interaction logs to dataset folders: reading, cleaning, the k-core, the splits, the card,
and one-line errors for bad input (the library and ``runners.prepare_data``)."""

import gzip
import json
import os

import numpy as np
import pytest

from ibmrec_tf.data import DataError, load_dataset
from ibmrec_tf.data import raw
from tests.test_runners import run


def write_csv(path, rows, header="user,item,rating,ts"):
    path.write_text(header + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows))
    return path


def random_log(seed=0, users=60, items=40):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for i in rng.choice(items, rng.integers(1, 12), replace=False):
            rows.append((f"u{u}", f"i{i}", int(rng.integers(1, 6)), int(rng.integers(0, 10**6))))
    return rows


def brute_k_core(pairs, k):
    pairs = set(pairs)
    while True:
        users, items = {}, {}
        for u, i in pairs:
            users[u] = users.get(u, 0) + 1
            items[i] = items.get(i, 0) + 1
        keep = {(u, i) for u, i in pairs if users[u] >= k and items[i] >= k}
        if keep == pairs:
            return pairs
        pairs = keep


def test_k_core_matches_a_brute_force_fixed_point_and_reports_rounds():
    rows = random_log()
    pairs = [(r[0], r[1]) for r in rows]
    _, users = np.unique([p[0] for p in pairs], return_inverse=True)
    _, items = np.unique([p[1] for p in pairs], return_inverse=True)
    keep, rounds = raw.k_core(users, items, 5)
    kept = {pairs[j] for j in np.flatnonzero(keep)}
    assert kept == brute_k_core(pairs, 5)
    assert len(rounds) >= 2  # this log needs more than one pass
    assert sum(r["interactions_removed"] for r in rounds) == len(pairs) - len(kept)
    kept_users = {u for u, _ in kept}
    assert sum(r["users_removed"] for r in rounds) == len({u for u, _ in pairs}) - len(kept_users)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 9, 10, 23])
def test_split_counts_per_user(n):
    users = np.zeros(n, np.int64)
    labels = raw.split_labels(users, method="random", seed=3)
    n_valid, n_test = int((labels == 1).sum()), int((labels == 2).sum())
    expect = int(np.floor(0.1 * n + 0.5))
    assert n_valid == (max(expect, 1) if n >= 3 else 0)
    assert n_test == (max(expect, 1) if n >= 2 else 0)
    assert (labels == 0).sum() == n - n_valid - n_test >= 1


def test_random_split_is_seeded_and_chronological_puts_the_latest_last():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 10)
    rng.shuffle(users)
    stamps = rng.permutation(len(users)).astype(float)
    a = raw.split_labels(users, method="random", seed=1)
    assert (a == raw.split_labels(users, method="random", seed=1)).all()
    assert (a != raw.split_labels(users, method="random", seed=2)).any()
    chrono = raw.split_labels(users, method="chronological", timestamps=stamps)
    for u in range(50):
        mine = users == u
        train, valid, test = (stamps[mine & (chrono == s)] for s in range(3))
        assert train.max() < valid.min() and valid.max() < test.min()
    # the random split is not the chronological one
    assert (a != chrono).any()


def test_prepare_writes_a_folder_the_loader_reads(tmp_path):
    rows = random_log()
    rows.append(rows[0][:2] + (5, 1))  # a repeated pair, earlier: the one kept
    log = write_csv(tmp_path / "log.csv", rows)
    out = raw.prepare_raw(str(log), str(tmp_path / "out"), "shop", user_column="user",
                          item_column="item", rating_column="rating", timestamp_column="ts",
                          k=3, seed=0)
    card = json.loads((tmp_path / "out" / "shop" / "dataset.json").read_text())
    assert card == json.loads(json.dumps(out.card))
    assert card["steps"]["duplicate_pairs_dropped"] == 1
    data = load_dataset(str(tmp_path / "out"), "shop", modalities=[])
    stats = card["statistics"]
    assert (data.num_users, data.num_items) == (stats["users"], stats["items"])
    assert [len(data.train), len(data.valid), len(data.test)] == \
        [stats["interactions"][s] for s in ("train", "valid", "test")]
    # the ids map back to the raw pairs, and the kept pairs are the 3-core of the log
    user_raw = raw.read_id_map(str(tmp_path / "out" / "shop" / "user_ids.tsv"))
    item_raw = raw.read_id_map(str(tmp_path / "out" / "shop" / "item_ids.tsv"))
    assert user_raw == sorted(user_raw) and item_raw == sorted(item_raw)
    written = {(user_raw[u], item_raw[i]) for u, i in
               np.concatenate([data.train, data.valid, data.test])}
    assert written == brute_k_core([(r[0], r[1]) for r in rows], 3)
    inter = (tmp_path / "out" / "shop" / "shop.inter").read_text().splitlines()
    assert inter[0] == "userID\titemID\trating\ttimestamp\tx_label"
    first = [line for line in inter[1:] if line.split("\t")[:2] ==
             [str(user_raw.index(rows[0][0])), str(item_raw.index(rows[0][1]))]]
    if first:  # the repeated pair kept its earliest row (rating 5, time 1)
        assert first[0].split("\t")[2:4] == ["5", "1"]
    assert "3-core filter" in (tmp_path / "out" / "shop" / "README.md").read_text()
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith(".")]


def test_json_lines_gzip_with_amazon_defaults_and_min_rating(tmp_path):
    path = tmp_path / "reviews.json.gz"
    rows = random_log(seed=1)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for u, i, rating, ts in rows:
            f.write(json.dumps({"reviewerID": u, "asin": i, "overall": float(rating),
                                "unixReviewTime": ts, "reviewText": "fine"}) + "\n")
    out = raw.prepare_raw(str(path), str(tmp_path), "amz", min_rating=3, k=2)
    assert out.card["source"]["format"] == "jsonl"
    assert out.card["steps"]["below_min_rating_dropped"] == sum(r[2] < 3 for r in rows)
    data = load_dataset(str(tmp_path), "amz", modalities=[])
    assert len(data.train) + len(data.valid) + len(data.test) == \
        out.card["statistics"]["interactions"]["total"]


def test_overwrite_replaces_only_prepared_folders(tmp_path):
    log = write_csv(tmp_path / "log.csv", random_log())
    kwargs = dict(user_column="user", item_column="item", k=0)
    raw.prepare_raw(str(log), str(tmp_path / "out"), "shop", **kwargs)
    with pytest.raises(FileExistsError, match="already exists"):
        raw.prepare_raw(str(log), str(tmp_path / "out"), "shop", **kwargs)
    raw.prepare_raw(str(log), str(tmp_path / "out"), "shop", overwrite=True, seed=5, **kwargs)
    (tmp_path / "out" / "mine").mkdir()
    (tmp_path / "out" / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a folder written by prepare_data"):
        raw.prepare_raw(str(log), str(tmp_path / "out"), "mine", overwrite=True, **kwargs)
    assert (tmp_path / "out" / "mine" / "notes.txt").read_text() == "keep me"


BAD_INPUTS = [
    ("missing column", "who,item\nu1,i1\n", [], "log.csv:1: no column 'user' (the user column)"),
    ("empty file", "", [], "log.csv: file is empty"),
    ("only a header", "user,item\n", [], "log.csv: no interactions"),
    ("bad rating", "user,item,rating\nu1,i1,5\nu1,i2,five\n", ["--min_rating=3"],
     "log.csv:3: rating 'five' in column 'rating' is not a number"),
    ("empty id", "user,item\nu1,i1\n,i2\n", [], "log.csv:3: empty id in column 'user'"),
    ("short row", "user,item,rating\nu1\n", [], "log.csv:2: 1 fields, the header has 3"),
    ("k-core leaves nothing", "user,item\nu1,i1\nu2,i1\n", ["--k_core=5"],
     "the 5-core filter leaves no interaction"),
    ("no timestamp column", "user,item\nu1,i1\n", ["--split=chronological"],
     "no column 'unixReviewTime' (the timestamp column)"),
]


@pytest.mark.parametrize("label,text,extra,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, label, text, extra, message):
    log = tmp_path / "log.csv"
    log.write_text(text)
    with pytest.raises(DataError, match=None) as info:
        raw.prepare_raw(str(log), str(tmp_path / "out"), "x", user_column="user",
                        item_column="item", rating_column="rating",
                        min_rating=3.0 if "--min_rating=3" in extra else None,
                        split="chronological" if "--split=chronological" in extra else "random",
                        k=5 if "--k_core=5" in extra else 0)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_runner_bad_inputs_exit_2_with_one_line(tmp_path):
    """Through ``runners.prepare_data``: an encoding error, a bad JSON row, and a flag."""
    (tmp_path / "latin.csv").write_bytes("user,item\nu1,caf\xe9\n".encode("latin-1"))
    (tmp_path / "bad.jsonl").write_text('{"reviewerID": "u", "asin": "i"}\n{oops\n')
    cases = [
        (["--raw_interactions=" + str(tmp_path / "latin.csv"), "--user_column=user",
          "--item_column=item"], "latin.csv:2: not utf-8 text"),
        (["--raw_interactions=" + str(tmp_path / "bad.jsonl")], "bad.jsonl:2: not a JSON object"),
        (["--raw_interactions=" + str(tmp_path / "bad.jsonl"), "--split_ratios=0.5,0.1"],
         "--split_ratios must be three non-negative shares"),
    ]
    for args, message in cases:
        proc = run("prepare_data", *args, f"--out_dir={tmp_path / 'out'}", "--dataset=x",
                   check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and message in lines[-1], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    # the right encoding reads it
    proc = run("prepare_data", "--raw_interactions=" + str(tmp_path / "latin.csv"),
               "--user_column=user", "--item_column=item", "--raw_encoding=latin-1",
               "--k_core=0", f"--out_dir={tmp_path / 'out'}", "--dataset=x")
    assert "0-core filter" in proc.stdout or "round(s)" in proc.stdout
    assert "caf\u00e9" in (tmp_path / "out" / "x" / "item_ids.tsv").read_text(encoding="utf-8")
