"""Where the build finds the repository and puts its outputs (``<out>/executed/<profile>``, ``<out>/ledger/<profile>``,
``<out>/timings-<profile>.json``, ``<out>/html``, ``<out>/screenshots``), and its one error type."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["BuildError", "log", "find_root", "out_dir", "profile_name", "executed_dir", "ledger_dir",
           "timings_path", "parse_only", "selected"]

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class BuildError(RuntimeError):
    """A step of the book build failed (the message says which and what to do)."""


def log(msg: str) -> None:
    """One line of build progress on stdout, prefixed ``[book]``."""
    print(f"[book] {msg}", flush=True)


def find_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root: the first of ``start`` (default: the working directory) and its parents that holds
    ``_config.yml`` and ``notebooks/``."""
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "_config.yml").is_file() and (d / "notebooks").is_dir():
            return d
    raise BuildError(f"no repository root (a folder with _config.yml and notebooks/) at or above {here}; "
                     "run from the repository root or pass --root")


def out_dir(root: Path, out: str | os.PathLike = "_build") -> Path:
    """The build folder ``out``, relative to ``root`` unless absolute."""
    return Path(out) if Path(out).is_absolute() else root / out


def profile_name(profile: str | os.PathLike) -> str:
    """``"ci"`` for ``"ci"`` and for ``"path/to/ci.yml"``."""
    p = Path(str(profile))
    return p.stem if p.suffix in (".yml", ".yaml") else str(profile)


def executed_dir(out: Path, profile: str) -> Path:
    return out / "executed" / profile_name(profile)


def ledger_dir(out: Path, profile: str) -> Path:
    return out / "ledger" / profile_name(profile)


def timings_path(out: Path, profile: str) -> Path:
    return out / f"timings-{profile_name(profile)}.json"


def parse_only(only: Iterable[str] | None) -> set[str] | None:
    """``["02", "05,06"]`` -> ``{"02", "05", "06"}``; None or empty -> None (everything)."""
    if not only:
        return None
    out: set[str] = set()
    for item in only:
        out.update(s.strip() for s in str(item).split(",") if s.strip())
    return out


def selected(stem: str, only: set[str] | None) -> bool:
    """Whether notebook ``stem`` is among ``only`` (stems or prefixes; None selects all)."""
    return only is None or stem in only or any(stem.startswith(o) for o in only)
