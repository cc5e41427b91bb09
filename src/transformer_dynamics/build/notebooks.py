"""The book's contents: the chapter notebooks (found, read, their ``parameters`` cell), the table of contents and
the repository named in ``_config.yml``."""

from __future__ import annotations

import ast
import json
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..profiles import filter_parameters, load_profile
from .layout import BuildError, parse_only, selected

__all__ = ["NOTEBOOK_RE", "notebook_stems", "read_notebook", "parameters_cell", "declared_parameters",
           "notebook_parameters", "notebook_title", "toc_files", "repository_url"]

NOTEBOOK_RE = re.compile(r"^(\d\d)_[A-Za-z0-9_]+$")


def notebook_stems(notebooks_dir: str | os.PathLike, only: Iterable[str] | None = None) -> list[str]:
    """Stems ``NN_name`` of the chapter notebooks in ``notebooks_dir`` (from ``.py`` or ``.ipynb``), sorted.
    ``only``: two-digit prefixes or stems to keep (``["02", "05"]`` or ``["02,05"]``)."""
    d = Path(notebooks_dir)
    stems = {p.stem for p in d.glob("[0-9][0-9]_*") if p.suffix in (".py", ".ipynb") and NOTEBOOK_RE.match(p.stem)}
    sel = parse_only(only)
    out = sorted(s for s in stems if selected(s, sel))
    if sel is not None and not out:
        raise BuildError(f"--only {sorted(sel)} matches none of the notebooks {sorted(stems)} in {d}")
    return out


def read_notebook(notebooks_dir: str | os.PathLike, stem: str):
    """The notebook ``stem`` as an ``nbformat`` node, read from the newer of its ``.py`` (jupytext percent) and
    ``.ipynb`` files; outputs are cleared, so nothing committed leaks into an execution."""
    import jupytext

    d = Path(notebooks_dir)
    candidates = [p for p in (d / f"{stem}.py", d / f"{stem}.ipynb") if p.is_file()]
    if not candidates:
        raise BuildError(f"notebook {stem} not found in {d} (neither .py nor .ipynb)")
    src = max(candidates, key=lambda p: (p.stat().st_mtime, p.suffix == ".py"))
    nb = jupytext.read(src)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})
    return nb


def parameters_cell(nb) -> Any:
    """The code cell tagged ``parameters`` (papermill's convention); ValueError if there is none."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    raise ValueError("the notebook has no code cell tagged 'parameters'; add `# %% tags=[\"parameters\"]` "
                     "before the cell that assigns MODELS, N, ...")


def declared_parameters(nb) -> dict[str, str]:
    """Names assigned at the top level of the ``parameters`` cell, mapped to the source of their default."""
    cell = parameters_cell(nb)
    src = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
    out: dict[str, str] = {}
    for node in ast.parse(src).body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        for t in targets:
            for n in (t.elts if isinstance(t, ast.Tuple) else [t]):
                if isinstance(n, ast.Name):
                    out[n.id] = ast.get_source_segment(src, node.value) or ""
    return out


def notebook_parameters(profile: str, nb, stem: str, extra: dict[str, Any] | None = None
                        ) -> tuple[dict[str, Any], list[str]]:
    """The profile's parameters for notebook ``stem`` plus ``extra`` (LEDGER_DIR, CACHE_DIR), kept only where the
    notebook's parameters cell declares them: returns ``(parameters, dropped_names)``."""
    params = load_profile(profile, stem)
    params.update(extra or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return filter_parameters(params, declared_parameters(nb), notebook=stem)


def notebook_title(path: str | os.PathLike) -> str | None:
    """The first ``# heading`` of a notebook's markdown cells (its chapter title), or None."""
    try:
        nb = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            m = re.search(r"^#\s+(.+)$", "".join(cell.get("source", [])), re.M)
            if m:
                return m.group(1).strip()
    return None


def toc_files(toc_path: str | os.PathLike) -> list[str]:
    """Every document in a Jupyter Book ``_toc.yml`` (root first, then in order), as written (no suffix)."""
    with open(toc_path) as fh:
        toc = yaml.safe_load(fh)
    files: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    files.append(node[key])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return files


def repository_url(config_path: str | os.PathLike) -> str:
    """``repository.url`` of a Jupyter Book ``_config.yml`` (the one place the repository is named)."""
    with open(config_path) as fh:
        cfg = yaml.safe_load(fh) or {}
    url = (cfg.get("repository") or {}).get("url")
    if not url:
        raise ValueError(f"{config_path} has no repository.url")
    return str(url).rstrip("/")
