"""WikiText rows as the Hugging Face loader gives them, the paper's filter, sampling, errors."""

from __future__ import annotations

import pytest

from transformer_dynamics import data


def test_rows_match_the_dataset_card(wikitext_dir):
    # The dataset card's num_bytes = UTF-8 text bytes + 4 bytes of Arrow offsets per row.
    for split, n_rows, num_bytes, n_filtered in [("test", 4358, 1305088, 661), ("validation", 3760, 1159288, 585)]:
        rows, source = data.load_rows([split], wikitext_dir)
        assert source.kind == "local"
        assert len(rows) == n_rows
        assert sum(len(r.encode("utf-8")) for r in rows) + 4 * len(rows) == num_bytes
        assert len(data.filter_rows(rows)) == n_filtered
        assert all(r == "" or r.endswith("\n") for r in rows)
        assert "" in rows and " \n" not in rows


def test_default_splits_hold_enough_for_the_paper(wikitext_dir):
    rows, _ = data.load_rows(data.DEFAULT_SPLITS, wikitext_dir)
    assert len(data.filter_rows(rows)) == 1246


def test_filter_is_strict_on_both_ends():
    rows = ["x" * 100, "x" * 101, "x" * 499, "x" * 500]
    assert data.filter_rows(rows) == ["x" * 101, "x" * 499]


def test_sampling_is_seeded_and_distinct(wikitext_dir):
    a, _ = data.load_texts(50, seed=1, data_dir=wikitext_dir)
    b, _ = data.load_texts(50, seed=1, data_dir=wikitext_dir)
    c, _ = data.load_texts(50, seed=2, data_dir=wikitext_dir)
    assert a == b and a != c and len(set(a)) == 50
    assert data.rows_hash(a) == data.rows_hash(b) != data.rows_hash(c)


def test_too_many_texts_names_the_count(wikitext_dir):
    with pytest.raises(ValueError, match="only 661 rows"):
        data.load_texts(1000, splits=["test"], data_dir=wikitext_dir)


def test_data_dir_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_rows(["test"], tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="wiki.test.raw"):
        data.load_rows(["test"], tmp_path)
    with pytest.raises(ValueError, match="unknown WikiText split"):
        data.load_rows(["dev"], tmp_path)
    (tmp_path / "wiki.test.raw").write_text(" \n = Title = \n" + " ".join(["word"] * 30) + " \n")
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    # read as the loader does, but not the published file: a clear error, never other texts
    assert data.read_raw_rows(tmp_path / "wiki.test.raw") == ["", " = Title = \n", " ".join(["word"] * 30) + " \n"]
    with pytest.raises(ValueError, match="wiki.test.raw is not the published"):
        data.load_rows(["test"])


def test_data_env_points_at_a_folder(tmp_path, monkeypatch, wikitext_dir):
    (tmp_path / "wiki.test.raw").write_bytes((wikitext_dir / "wiki.test.raw").read_bytes())
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    rows, source = data.load_rows(["test"])
    assert source.location == str(tmp_path) and len(rows) == 4358


def test_shuffle_token_ids_keeps_first():
    ids = [[1, 5, 6, 7, 8, 9], [1, 2]]
    out = data.shuffle_token_ids(ids, seed=0)
    assert [s[0] for s in out] == [1, 1] and sorted(out[0]) == sorted(ids[0])
    free = data.shuffle_token_ids(ids, seed=0, keep_first=False)
    assert sorted(free[0]) == sorted(ids[0])
