"""The command lines: ``python -m transformer_dynamics.build``, ``python -m transformer_dynamics.distributed`` and
``python -m transformer_dynamics``. Every bad flag, file or folder gives one line on stderr (no traceback) and a
non-zero exit; every subcommand has its own --help; --set changes what runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from transformer_dynamics import __version__, profiles
from transformer_dynamics.build.__main__ import main as build_main
from transformer_dynamics.build.__main__ import set_profile

ROOT = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, code, rc: int | None = None) -> str:
    """The stderr of a failed run: one line, no traceback."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code != 0 and (rc is None or code == rc), (code, err)
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _run(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse exits with 2
        return int(exc.code or 0)


# ----------------------------------------------------------------------------------------------------------
# build


def test_build_version_and_help_per_subcommand(capsys):
    assert _run(build_main, ["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"python -m transformer_dynamics.build {__version__}"
    for cmd, own in [("run", "--cache-dir"), ("html", "--set"), ("check", "--only"), ("all", "--timeout"),
                     ("browser", None)]:
        assert _run(build_main, [cmd, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: python -m transformer_dynamics.build {cmd}"), out[:200]
        if own:
            assert own in out
    assert "--cache-dir" not in (_run(build_main, ["html", "--help"]), capsys.readouterr().out)[1]


@pytest.mark.parametrize("argv, match", [
    (["run", "--timeout", "-5"], "--timeout must be a number of seconds > 0, got '-5'"),
    (["run", "--timeout", "abc"], "--timeout must be a number of seconds > 0, got 'abc'"),
    (["run", "--cache-dir", ""], "--cache-dir must name a folder, got ''"),
    (["run", "--out", ""], "--out must name a folder, got ''"),
    (["run", "--set", "N"], "--set give NAME=VALUE"),
    (["run", "--set", "n=5"], "--set give NAME=VALUE"),
    (["run", "--set", "N=-3"], "N must be an integer >= 1, got -3"),
    (["run", "--set", "MODELS=[a, b"], "--set MODELS: not valid YAML"),
])
def test_build_flags_are_checked(capsys, argv, match):
    code = _run(build_main, argv)
    line = _one_line_error(capsys, code)
    assert match in line, line


def test_build_rejects_bad_places_before_any_work(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    cases = [
        (["run", "--out", str(tmp_path / "afile")], "is a file, not a folder"),
        (["html", "--profile", "../../evil"], "neither a shipped profile's name"),
        (["run", "--profile", str(tmp_path / "missing.yml")], "does not exist"),
        (["run", "--only", "99"], "matches none of the notebooks"),
        (["run", "--set", "NOT_A_PARAMETER=1"], "no chapter declares NOT_A_PARAMETER"),
    ]
    for argv, match in cases:
        code = _run(build_main, [*argv, "--root", str(ROOT)])
        line = _one_line_error(capsys, code)
        assert match in line, (argv, line)
    assert not (tmp_path.parent / "evil").exists() and not (ROOT / "evil").exists()
    bad = tmp_path / "bad.yml"
    bad.write_text("defaults:\n  N: 8\n 02_activation_statistics: [\n")
    code = _run(build_main, ["run", "--profile", str(bad), "--root", str(ROOT), "--out", str(tmp_path / "o")])
    assert "bad.yml:3: not valid YAML" in _one_line_error(capsys, code)
    assert not (tmp_path / "o").exists()  # nothing created before the profile was read


def test_build_outside_a_checkout_says_what_to_do(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(capsys, _run(build_main, ["run", "--profile", "ci"]))
    assert "no repository root" in line and "git clone" in line


@pytest.mark.parametrize("damage", ["truncated", "list", "stray", "timings", "timings-list", "timings-cut"])
def test_build_html_with_damaged_ledgers_or_timings_is_one_line(capsys, tmp_path, monkeypatch, damage):
    """A truncated or list-shaped ledger, a stray JSON file among the ledgers, an edited timings file: `build html`
    says which file and stops (never a traceback). (Jupyter Book itself is left out: staging reads every file.)"""
    from transformer_dynamics.build import __main__ as cli
    from transformer_dynamics.build import site

    monkeypatch.setattr(cli, "build_html", lambda profile, root, out, publish_incomplete=False:
                        site.stage(profile, root, out, publish_incomplete))
    out = tmp_path / "out"
    led = out / "ledger" / "ci"
    led.mkdir(parents=True)
    if damage == "truncated":
        (led / "02_activation_statistics.json").write_text('{"notebook": "02_activation_statistics", "entries": [')
    elif damage == "list":
        (led / "02_activation_statistics.json").write_text("[1, 2, 3]")
    elif damage == "stray":
        (led / "notes.json").write_text('{"hello": "world"}')
    elif damage == "timings":
        (out / "timings-ci.json").write_text('{"notebooks": {"02_activation_statistics": {"seconds": "soon"}}}')
    elif damage == "timings-list":
        (out / "timings-ci.json").write_text("[1]")
    else:
        (out / "timings-ci.json").write_text('{"notebooks": {"02_')
    for cmd in (["html"], ["run", "--only", "02"]) if damage.startswith("timings") else (["html"],):
        code = _run(build_main, [*cmd, "--profile", "ci", "--root", str(ROOT), "--out", str(out)])
        line = _one_line_error(capsys, code)
        assert line.startswith("error: ") and "unexpected" not in line, line
        assert ("timings-ci.json" if damage.startswith("timings") else ".json") in line, line


def test_set_writes_a_named_profile_every_block_agrees_with(tmp_path):
    path = set_profile("ci", {"N": 200, "N_BOOT": 10, "MODELS": ["smollm2-135m"]}, tmp_path)
    assert path.parent == tmp_path / "profiles" and path.stem == "ci+N=200+N_BOOT=10+MODELS=smollm2-135m"
    for stem in ("02_activation_statistics", "07_local_dynamics", "08_verdict_robustness"):
        p = profiles.load_profile(path, stem)
        assert p["N"] == 200 and p["MODELS"] == ["smollm2-135m"] and p["N_BOOT"] == 10, stem
    assert profiles.load_profile(path, "03_phase_space_rotations")["N_SHUFFLES"] == \
        profiles.load_profile("ci", "03_phase_space_rotations")["N_SHUFFLES"]
    assert set_profile("ci", {"N": 200, "N_BOOT": 10, "MODELS": ["smollm2-135m"]}, tmp_path) == path
    assert yaml.safe_load(path.read_text())["defaults"]["N"] == 200


def test_build_run_with_set_changes_what_runs(tmp_path, monkeypatch):
    """`build run --set N=200 --set MODELS=[smollm2-135m]`: the runner gets a profile with those values."""
    from transformer_dynamics.build import __main__ as cli

    seen = {}

    def fake_run(profile, root, out, only, cache_dir, timeout, **kw):
        seen.update(profile=profile, only=only, cache_dir=cache_dir, timeout=timeout)
        return {"failures": []}

    monkeypatch.setattr(cli, "run_notebooks", fake_run)
    assert cli.main(["run", "--profile", "ci", "--only", "02", "--set", "N=200", "--set", "MODELS=[smollm2-135m]",
                     "--root", str(ROOT), "--out", str(tmp_path), "--timeout", "30"]) == 0
    p = profiles.load_profile(seen["profile"], "02_activation_statistics")
    assert p["N"] == 200 and p["MODELS"] == ["smollm2-135m"] and seen["timeout"] == 30.0


def test_build_module_runs_as_a_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "transformer_dynamics.build", "run", "--timeout", "0"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --timeout must be a number of seconds > 0, got '0' "
        "(see python -m transformer_dynamics.build run --help)"]


# ----------------------------------------------------------------------------------------------------------
# distributed


@pytest.mark.parametrize("argv, match", [
    (["--texts", "0"], "--texts must be an integer >= 1, got '0'"),
    (["--texts", "2.5"], "--texts must be an integer >= 1, got '2.5'"),
    (["--shard-size", "0"], "--shard-size must be an integer >= 1, got '0'"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got '-1'"),
    (["--threads", "-3"], "--threads must be an integer >= 1, got '-3'"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got '0'"),
    (["--dtype", "int8"], "--dtype invalid choice: 'int8'"),
    (["--cache-dir", ""], "--cache-dir must name a folder, got ''"),
    (["--condition", "sideways"], "--condition invalid choice"),
])
def test_distributed_flags_are_checked(capsys, argv, match):
    from transformer_dynamics.distributed import main

    line = _one_line_error(capsys, _run(main, argv), rc=2)
    assert match in line, line


def test_distributed_errors_are_one_line(capsys, tmp_path):
    from transformer_dynamics.distributed import main

    (tmp_path / "f").write_text("x")
    code = _run(main, ["--texts", "2", "--cache-dir", str(tmp_path / "f"), "--device", "cpu"])
    assert "is a file, not a folder" in _one_line_error(capsys, code)
    code = _run(main, ["--texts", "2", "--model", str(tmp_path), "--device", "cpu"])
    assert "is not a model folder" in _one_line_error(capsys, code)


def test_distributed_help_and_version(capsys):
    from transformer_dynamics.distributed import main

    assert _run(main, ["--version"]) == 0 and __version__ in capsys.readouterr().out
    assert _run(main, ["--help"]) == 0 and "--shard-size" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------
# python -m transformer_dynamics


@pytest.mark.parametrize("argv, match", [
    (["--n", "0"], "--n must be an integer >= 1, got '0'"),
    (["--n", "1e3"], "--n must be an integer >= 1, got '1e3'"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got '-1'"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got '0'"),
    (["--dtype", "int8"], "--dtype invalid choice: 'int8'"),
    (["--cache-dir", ""], "--cache-dir must name a folder, got ''"),
    (["--data-dir", ""], "--data-dir must name a folder, got ''"),
    (["--splits", "test,,"], "--splits give test, validation or both, comma-separated"),
    (["--splits", "train"], "--splits give test, validation or both, comma-separated"),
])
def test_package_cli_flags_are_checked(capsys, argv, match):
    from transformer_dynamics.__main__ import main

    line = _one_line_error(capsys, _run(main, ["capture", *argv]), rc=2)
    assert match in line, line


def test_package_cli_version_and_help(capsys):
    from transformer_dynamics.__main__ import main

    assert _run(main, ["--version"]) == 0 and capsys.readouterr().out.strip().endswith(__version__)
    assert _run(main, ["capture", "--help"]) == 0 and "--n " in capsys.readouterr().out


def test_every_command_line_turns_an_unexpected_error_into_one_line(capsys, monkeypatch):
    """An error the package did not foresee (a bug) is still one line, saying how to see the traceback."""
    from transformer_dynamics import __main__ as pkg_cli
    from transformer_dynamics import distributed
    from transformer_dynamics.build import __main__ as build_cli

    def boom(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(pkg_cli, "_capture", boom)
    line = _one_line_error(capsys, _run(pkg_cli.main, ["capture", "--n", "2"]))
    assert "KeyError" in line and "--traceback" in line
    monkeypatch.setattr(distributed, "capture_store", boom)
    line = _one_line_error(capsys, _run(distributed.main, ["--texts", "2"]))
    assert "KeyError" in line and "--traceback" in line
    monkeypatch.setattr(build_cli, "run_notebooks", boom)
    argv = ["run", "--root", str(ROOT), "--only", "02", "--out", "/tmp/x"]
    line = _one_line_error(capsys, _run(build_cli.main, argv))
    assert "KeyError" in line and "--traceback" in line
    with pytest.raises(KeyError):
        build_cli.main(["run", "--root", str(ROOT), "--only", "02", "--out", "/tmp/x", "--traceback"])
