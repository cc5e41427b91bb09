"""Tests for transformer_dynamics.chapter: a chapter's setup (labels, per-row plot arguments, ledger)."""

import numpy as np
import pytest

from transformer_dynamics import chapter


def test_model_list_accepts_one_name_or_several():
    assert chapter.model_list("smollm2-135m") == ["smollm2-135m"]
    assert chapter.model_list(["smollm2-135m", "gemma-3-270m", "smollm2-135m"]) == ["smollm2-135m", "gemma-3-270m"]
    with pytest.raises(ValueError, match="MODELS is empty"):
        chapter.model_list([])


def test_setup_without_capture_makes_the_ledger(tmp_path):
    ch = chapter.setup("99_test", models="a", n=10, seed=3, ledger_dir=tmp_path, capture=False, extra_param=7)
    assert ch.models == ["a"] and ch.conditions == ("original", "shuffled") and ch.rs == {}
    assert ch.runs == [("a", "original"), ("a", "shuffled")]
    assert ch.ledger.context["n"] == 10 and ch.ledger.context["extra_param"] == 7
    with pytest.raises(ValueError, match="MODELS is empty"):
        chapter.setup("99_test", models=[], n=10, ledger_dir=tmp_path, capture=False)
    with pytest.raises(ValueError, match="conditions is empty"):
        chapter.setup("99_test", models="a", n=10, conditions=(), ledger_dir=tmp_path, capture=False)


def test_labels_rows_summary_and_control_keys(tmp_path):
    ch = chapter.setup("99_test", models=["a", "b"], n=4, ledger_dir=tmp_path, capture=False)
    ch.rs = {("a", "original"): np.zeros((4, 4, 3), np.float32), ("b", "original"): np.zeros((4, 6, 5), np.float32)}
    ch.n_sublayers, ch.d_model = {"a": 4, "b": 6}, {"a": 3, "b": 5}
    assert ch.labels["a"] == ["L0.attn", "L0.mlp", "L1.attn", "L1.mlp"] and len(ch.labels["b"]) == 6
    assert ch.row_labels["b"] == {"labels": ch.labels["b"]}
    assert "**b**: residual stream (4, 6, 5)" in ch.summary() and "3 layers, 5 units" in ch.summary()
    ch.record("a", "r_first", 0.5, claim="r is high")
    ch.record("a", "r_first", 0.1, condition="shuffled", claim="r is high")
    entries = {(e["model"], e["key"]): e for e in ch.ledger.to_dict()["entries"]}
    assert entries["a", "r_first"]["value"] == 0.5
    assert entries["a", "r_first@shuffled"]["claim"] == "r is high [shuffled-token control]"


def test_quantization_enters_the_context_on_request(tmp_path):
    ch = chapter.setup("99_test", models="a", n=4, ledger_dir=tmp_path, capture=False)
    assert "quantization" not in ch.ledger.context
    ch = chapter.setup("99_test", models="a", n=4, ledger_dir=tmp_path, capture=False, quantization="4bit",
                       context_quantization=True, n_boot=5)
    assert list(ch.ledger.context) == ["models", "n", "seed", "quantization", "n_boot"]
    assert ch.ledger.context["quantization"] == "4bit"
    with pytest.raises(ValueError, match="random-init kind"):
        chapter.setup("99_test", models="a", n=4, ledger_dir=tmp_path, capture=False, reference_inits=("nope",))


def test_table_splits_rows_with_and_without_a_paper_value(tmp_path):
    ch = chapter.setup("99_test", models=["a", "b"], n=4, ledger_dir=tmp_path, capture=False)
    ch.ledger.record("plain", 1.0, model="a", claim="a plain value")
    ch.ledger.record("stated", 2.0, model="a", paper="about 2", claim="the paper says so")
    ch.ledger.record("plain", 3.0, model="b", claim="a plain value")
    from transformer_dynamics.ledger import show_table

    both, paper, other = (show_table(ch.ledger, paper=p) for p in (None, True, False))
    claims_of = lambda t: [row[t.header.index("Claim")] for row in t.rows]  # noqa: E731
    assert claims_of(paper) == ["the paper says so"] and "the paper says so" not in claims_of(other)
    assert claims_of(both) == ["a plain value", "a plain value", "the paper says so"]


@pytest.mark.slow
def test_decide_against_the_null_and_random_init(tmp_path, tiny_llama, tiny_tokenizer, wikitext_dir):
    """A chapter decides its claims on a real (tiny) model with its random-init references, through the cache."""
    folder = tmp_path / "tiny"
    tiny_llama.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    kw = dict(models=str(folder), n=16, seed=0, cache_dir=tmp_path / "cache", ledger_dir=tmp_path / "ledger",
              reference_n=8, reference_seeds=(0, 1), conditions=("original",))
    ch = chapter.setup("02_activation_statistics", **kw)
    table = ch.decide(["r_early", "magnitude_increases"], n_boot=40)
    assert set(table["model"]) == {str(folder)} and set(table["condition"]) == {"original"}
    refs = ch.reference_streams(str(folder))
    assert sorted(refs) == ["default:0", "default:1", "matched:0", "matched:1"]
    assert all(r.shape == (8,) + ch.rs[str(folder), "original"].shape[1:] for r in refs.values())
    assert not np.allclose(refs["default:0"], refs["default:1"])             # seeds differ
    e = {x["key"]: x for x in ch.ledger.to_dict()["entries"]}
    head = e["r_early"]
    assert set(head["refs"]) == {"null", "default", "matched"} and head["refs"]["default"]["seeds"] == 2
    assert head["line"] and head["verdict_bh"] in ("holds", "fails", "undecided")
    # a second chapter with the same arguments reads the references from the cache (same arrays)
    again = chapter.setup("02_activation_statistics", **kw).reference_streams(str(folder))
    np.testing.assert_array_equal(again["matched:1"], refs["matched:1"])
