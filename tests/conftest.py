"""Shared fixtures: tiny random-weight Llama and Gemma 3 models built from configs in code, a real
word-level tokenizer built in code, and the path of the offline WikiText files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

WORDS = ("the a of and to in is was for on that with as by at from his her it an were are which this "
         "be or has had first new one two after their its also he she they game season war album film "
         "song city river army ship team party state world year music series station church line").split()


def make_tokenizer(words=WORDS):
    """A real fast tokenizer (WordLevel over ``words``) with <s> as BOS and <pad>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(set(words)) + [".", ",", "\n", "@-@"])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit()])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def _seeded(build):
    torch.manual_seed(0)
    model = build()
    model.eval()
    model.requires_grad_(False)
    return model


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama(tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, bos_token_id=tiny_tokenizer.bos_token_id,
                      pad_token_id=tiny_tokenizer.pad_token_id, tie_word_embeddings=False)
    return _seeded(lambda: LlamaForCausalLM(cfg))


@pytest.fixture(scope="session")
def tiny_gemma3(tiny_tokenizer):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128,
                           num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                           max_position_embeddings=256, sliding_window=8,
                           layer_types=["sliding_attention", "sliding_attention", "sliding_attention",
                                        "full_attention"],
                           bos_token_id=tiny_tokenizer.bos_token_id, pad_token_id=tiny_tokenizer.pad_token_id)
    model = _seeded(lambda: Gemma3ForCausalLM(cfg))
    # Gemma's RMSNorm scales by (1 + weight) with weight initialised to 0: give the norms real weights
    # so a test that confuses two norms would fail.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    return model


@pytest.fixture(scope="session")
def wikitext_dir() -> Path:
    from transformer_dynamics.data import find_data_dir

    path = find_data_dir()
    if path is None:
        msg = ("no local WikiText-2 files: put wikitext-2-raw/ in ../shared/data/ beside the checkout or set "
               "TRANSFORMER_DYNAMICS_DATA to the folder holding wiki.test.raw")
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"{msg} (CI is set: a skipped check is not a passing check)")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def sample_texts():
    """Short texts of different lengths over the tiny vocabulary (forces padding in batches)."""
    return [
        "the game was the first of the season",
        "a war",
        "the album of the year is new and the song is one of their first",
        "she had a ship",
        "the city is on the river and the army was at the station in the first year of the war",
        "it was",
        "the team and the party",
    ]


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory) -> Path:
    """Where the real offline model is converted during the test session (shared across tests).

    Uses $TRANSFORMER_DYNAMICS_CACHE when set so a developer's converted model is reused."""
    env = os.environ.get("TRANSFORMER_DYNAMICS_CACHE")
    return Path(env) if env else tmp_path_factory.mktemp("td-cache")


def record_claim(led, key, value, *, ci=None, reading=None, model=None, condition="original", premise=None):
    """Record one claim row as a chapter does (through a verdict table), from a value and an interval."""
    import numpy as np
    import pandas as pd

    from transformer_dynamics import claims, verdicts

    c = claims.get(key)
    reading = reading or c.headline
    lo, hi = ci if ci is not None else (np.nan, np.nan)
    reps = np.linspace(lo, hi, 41) if ci is not None else np.full(41, np.nan)
    e = verdicts.Evidence(key, reading, "trained", value, reps, 100, recentred=False)
    d = verdicts.decide(e, premise=premise)
    if ci is not None:
        d["low"], d["high"] = ci
        if d["reason"] != "value undefined" and not d["reason"].startswith("premise"):
            d["verdict"], d["reason"] = verdicts.verdict_from_interval(key, value, *ci)
    row = {"claim": key, "reading": reading, **d, "line": d["verdict"], "refs": {}}
    led.claims(pd.DataFrame([row]), model=model, condition=condition)


_WATCHED_ENV = ("TRANSFORMER_DYNAMICS_", "HF_", "TRANSFORMERS_")


def _watched_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_WATCHED_ENV)}


@pytest.fixture(autouse=True)
def _environment_left_as_found():
    """No test leaves the package's or the hub's environment changed: a Colab test's Drive cache folder, left in
    os.environ, sent the later ci book build's captures there (and its path into every downloadable notebook)."""
    before = _watched_env()
    yield
    after = _watched_env()
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        for k in changed:
            if k in before:
                os.environ[k] = before[k]
            else:
                os.environ.pop(k, None)
        pytest.fail(f"the test left environment variables changed: {changed} (use monkeypatch)")


# --- the ci book, built in the background ------------------------------------------------------------------------
# The ci book (every chapter executed by papermill, the HTML, the browser check) keeps about one of the two cores
# busy for ~8 minutes. When a selected test needs it, it starts as a subprocess as soon as collection ends, the tests
# that need it move to the end of the session, and every other test runs beside it; ``tests/test_notebooks.py``'s
# ``ci_build`` fixture waits for it. Its output goes to files in its folder (a pipe left unread would stall it).

CI_BOOK_PROFILE = "ci"
CI_BOOK_FIXTURE = "ci_build"
_CI_BOOK = pytest.StashKey[tuple]()


def ci_book_command(out: Path) -> list[str]:
    """The background job: ``build run`` into ``out`` (log ``run.log``, exit status ``run.rc``), then, when every
    chapter ran, ``build html`` (``html.log``, ``html.rc``) and, when that built, the browser check (``check.log``,
    ``check.rc``, its report ``check-report.json``; not when the user opted out of it)."""
    import shlex
    import sys

    from transformer_dynamics import build

    def step(sub: str) -> str:
        args = [sys.executable, "-m", "transformer_dynamics.build", sub, "--out", str(out)]
        args += [] if sub == "check" else ["--profile", CI_BOOK_PROFILE]
        args += ["--no-progress"] if sub == "run" else []
        log, rc = shlex.quote(str(out / f"{sub}.log")), shlex.quote(str(out / f"{sub}.rc"))
        return f"{shlex.join(args)} > {log} 2>&1; echo $? > {rc}"

    def ok(sub: str) -> str:
        return f'[ "$(cat {shlex.quote(str(out / f"{sub}.rc"))})" = 0 ]'
    line = f"{step('run')}; if {ok('run')}; then {step('html')}; fi"
    if not build.opted_out():
        line += f"; if [ -f {shlex.quote(str(out / 'html.rc'))} ] && {ok('html')}; then {step('check')}; fi"
    return ["/bin/sh", "-c", line]


@pytest.hookimpl(trylast=True)  # after ``-k``/``-m`` deselected what they deselect
def pytest_collection_modifyitems(session, config, items):
    """Move the tests that need the ci book to the end and start building it (see the section's comment)."""
    import subprocess

    needs = [it for it in items if CI_BOOK_FIXTURE in getattr(it, "fixturenames", ())]
    if not needs or config.getoption("collectonly"):
        return
    items[:] = [it for it in items if it not in needs] + needs
    out = config._tmp_path_factory.mktemp("book_build")  # noqa: SLF001 (pytest's own tmp_path_factory)
    proc = subprocess.Popen(ci_book_command(out), cwd=Path(__file__).resolve().parents[1],
                            stdin=subprocess.DEVNULL, start_new_session=True)
    config.stash[_CI_BOOK] = (out, proc)


def ci_book(config):
    """The background ci book's ``(out folder, subprocess.Popen)``, or None when no selected test needed it."""
    return config.stash.get(_CI_BOOK, None)


def pytest_sessionfinish(session, exitstatus):
    """Stop a background ci book that is still running (the session ended early: ``-x``, Ctrl-C)."""
    import signal
    import subprocess

    started = ci_book(session.config)
    if started and started[1].poll() is None:
        try:
            os.killpg(started[1].pid, signal.SIGTERM)
            started[1].wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
