"""Run profiles: the papermill parameters each notebook gets under a named profile.

A profile is a YAML file (``full.yml``, ``ci.yml``, ``colab.yml`` beside this module, or any path) with a
``defaults:`` block shared by every notebook and one block per notebook, keyed by the notebook's stem::

    defaults:
      MODELS: [smollm2-135m, gemma-3-270m]
      N: 1000
    03_phase_space_rotations:
      N_SHUFFLES: 1000

``load_profile("ci", "03_phase_space_rotations")`` merges the two (the notebook's block wins).

The code lives in the package ``__init__`` (not a ``profiles.py`` beside a ``profiles/`` folder) because a
module and a same-named folder cannot both be importable; the YAMLs ship as package data.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..parameters import check_count

__all__ = ["available_profiles", "profile_path", "read_profile", "load_profile", "filter_parameters",
           "check_blocks"]

DEFAULTS_KEY = "defaults"


def available_profiles() -> list[str]:
    """Names of the profiles shipped with the package (e.g. ``["ci", "colab", "full"]``)."""
    return sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".yml"))


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def profile_path(profile: str | os.PathLike) -> Path:
    """The YAML file of ``profile``: a shipped profile's name or a path to a ``.yml`` file."""
    p = Path(profile)
    if p.suffix in (".yml", ".yaml"):
        if p.is_dir():
            raise ValueError(f"profile {p} is a folder; give a .yml file")
        if not p.is_file():
            raise ValueError(f"profile file {p} does not exist")
        return p
    name = str(profile)
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"profile {name!r} is neither a shipped profile's name ({', '.join(available_profiles())}) "
                         "nor a path to a .yml file")
    res = resources.files(__name__).joinpath(f"{name}.yml")
    if not res.is_file():
        raise ValueError(f"unknown profile {name!r}; choose one of {available_profiles()} or give a path to a "
                         ".yml file")
    return Path(str(res))


def _key_lines(node: Any) -> dict[tuple[str, str], int]:
    """``{(block, PARAMETER): line}`` (1-based) from a composed YAML document, for messages naming the line."""
    out: dict[tuple[str, str], int] = {}
    if not isinstance(node, yaml.MappingNode):
        return out
    for key, block in node.value:
        bname = str(key.value)
        if key.tag.endswith(":int") and bname.isdigit():
            bname = f"{int(bname):02d}"
        if isinstance(block, yaml.MappingNode):
            for k, _ in block.value:
                out[(bname, str(k.value))] = k.start_mark.line + 1
    return out


def read_profile(profile: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The whole profile: ``{"defaults": {...}, "<notebook stem>": {...}, ...}`` (every block a dict). Errors
    (YAML syntax, a block that is not a mapping, a count that is not an integer in its range) are one line
    naming the file and line."""
    path = profile_path(profile)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"profile {path} cannot be read ({exc})") from None
    try:
        data = yaml.safe_load(text) or {}
        lines = _key_lines(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{where}: not valid YAML ({problem}); a profile is blocks of `PARAMETER: value` "
                         "lines") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a profile must be a mapping of blocks ('defaults' and notebook stems)")
    # a block keyed by a bare prefix (`02:`) reads as the integer 2 in YAML: key it as "02" again
    data = {(f"{k:02d}" if isinstance(k, int) else str(k)): v for k, v in data.items()}
    for key, block in data.items():
        if block is None:
            data[key] = {}
        elif not isinstance(block, dict):
            raise ValueError(f"{path}: block {key!r} must be a mapping of PARAMETER: value, got {type(block).__name__}")
        else:
            checked = {}
            for k, v in block.items():
                try:
                    checked[str(k)] = check_count(str(k), _coerce(v), f"{path}: {key}.")
                except ValueError as exc:
                    line = lines.get((key, str(k)))
                    raise ValueError(f"{exc}{f' (line {line})' if line else ''}") from None
            data[key] = checked
    return data


# YAML 1.1 (PyYAML) reads 1e3 and 1.5E-3 as strings (it wants a dot and a signed exponent): numbers here
_EXP_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _coerce(value: Any) -> Any:
    """``"1e3"`` -> 1000 and ``"1.5e-3"`` -> 0.0015 (also inside lists); anything else unchanged."""
    if isinstance(value, list):
        return [_coerce(v) for v in value]
    if isinstance(value, str) and _EXP_NUMBER.match(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    return value


def _misspelled(data: dict[str, Any], stem: str) -> list[str]:
    """Blocks that look meant for ``stem`` but do not name it (a close spelling: difflib ratio >= 0.85)."""
    prefix = stem.split("_")[0]
    return [key for key in data if key not in (DEFAULTS_KEY, stem, prefix)
            and difflib.SequenceMatcher(None, key, stem).ratio() >= 0.85]


def check_blocks(profile: str | os.PathLike, notebooks: Iterable[str | os.PathLike]) -> None:
    """Raise a ValueError naming every block of ``profile`` that matches none of ``notebooks`` (stems or
    paths; a block may also be keyed by a notebook's two-digit prefix), with the closest notebook name."""
    data = read_profile(profile)
    stems = [_stem(n) for n in notebooks]
    names = set(stems) | {s.split("_")[0] for s in stems} | {DEFAULTS_KEY}
    unknown = [k for k in data if k not in names]
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, stems, 1)) else "")
                 for k in unknown]
        raise ValueError(f"{profile_path(profile)}: block(s) {', '.join(hints)} name no notebook; rename them "
                         f"to a notebook stem ({', '.join(sorted(stems))}) or 'defaults'")


def _stem(notebook: str | os.PathLike) -> str:
    return Path(notebook).name.split(".")[0]


def load_profile(profile: str | os.PathLike, notebook: str | os.PathLike,
                 declared: Iterable[str] | None = None) -> dict[str, Any]:
    """Parameters of ``notebook`` under ``profile``: the ``defaults`` block updated with the notebook's block.

    Parameters
    ----------
    profile: a shipped profile's name (``"full"``, ``"ci"``, ``"colab"``) or a path to a YAML file.
    notebook: the notebook's stem (``"02_activation_statistics"``) or a path to it; a block keyed by the
        two-digit prefix alone (``"02"``) is accepted as well.
    declared: if given, the parameter names the notebook declares; others are dropped with a warning
        (see :func:`filter_parameters`).
    """
    data = read_profile(profile)
    stem = _stem(notebook)
    wrong = _misspelled(data, stem)
    if wrong and stem not in data:
        raise ValueError(f"{profile_path(profile)}: no block {stem!r}, but block(s) {wrong} look meant for it; "
                         f"rename the block to {stem!r} (else its parameters are silently not used)")
    params = dict(data.get(DEFAULTS_KEY, {}))
    prefix = stem.split("_")[0]
    if prefix != stem and prefix in data:
        params.update(data[prefix])
    params.update(data.get(stem, {}))
    if declared is not None:
        params, _ = filter_parameters(params, declared, notebook=stem)
    return params


def filter_parameters(params: Mapping[str, Any], declared: Iterable[str], notebook: str = "notebook"
                      ) -> tuple[dict[str, Any], list[str]]:
    """Keep the parameters a notebook declares: returns ``(kept, dropped_names)`` and warns about dropped ones."""
    declared = set(declared)
    kept = {k: v for k, v in params.items() if k in declared}
    dropped = sorted(k for k in params if k not in declared)
    if dropped:
        warnings.warn(f"{notebook}: its parameters cell does not declare {dropped}; not passed "
                      f"(declared: {sorted(declared)})", stacklevel=2)
    return kept, dropped
