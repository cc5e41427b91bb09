"""What a stored result was computed by: :func:`package_source_hash`, the package's source as one digest. The book's
runner keys a chapter's reuse on it, the evidence store (:mod:`transformer_dynamics.robustness.stored`) each
stored result."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["package_source_hash"]


def package_source_hash(package_dir: str | os.PathLike | None = None) -> str:
    """sha256 over every file of the package (default: the ``transformer_dynamics`` this process imports, as the
    kernels do): each file's path relative to the package and its bytes, in path order; ``__pycache__`` and
    compiled files left out. -> 64 hex digits."""
    d = Path(package_dir) if package_dir is not None else Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(p for p in d.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                    and p.suffix not in (".pyc", ".so", ".o")):
        h.update(f.relative_to(d).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()
