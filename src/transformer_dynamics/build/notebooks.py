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
           "notebook_parameters", "notebook_title", "toc_files", "repository_url", "injected_parameters",
           "clean_injected_cell", "scrub_paths", "fill_placeholders", "figure_names", "figure_panels"]

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


# ----------------------------------------------------------------------------------------------------------
# Staging an executed notebook for the book: its injected parameters, its figures' captions and alt text


INJECTED_TAG = "injected-parameters"
#: placeholders a figure cell's caption and alt text may hold (``mystnb.figure.caption``, ``mystnb.image.alt``),
#: filled in at staging from what the chapter ran
PLACEHOLDERS = ("models",)


def _is_machine_path(value: Any, paths: Iterable[str] = ()) -> bool:
    return isinstance(value, str) and (os.path.isabs(value) or value.startswith("~")
                                       or any(p and p in value for p in paths))


def injected_parameters(nb) -> dict[str, Any]:
    """The values papermill injected (the cell tagged ``injected-parameters``), as Python values; ``{}`` if
    there is no such cell."""
    out: dict[str, Any] = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and INJECTED_TAG in cell.get("metadata", {}).get("tags", []):
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        out[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
    return out


def clean_injected_cell(nb, paths: Iterable[str] = (), tag: str = "hide-cell") -> list[str]:
    """Make papermill's injected-parameters cell fit for readers: every assignment of a path of the build
    machine (an absolute path, ``~/...``, or a string holding one of ``paths``) is replaced by a comment saying
    the notebook's default applies, and the cell gets ``tag`` (``hide-cell``: folded in the book, its values
    one click away). Changes ``nb`` in place; returns the names whose assignment was removed."""
    paths = list(paths)
    removed: list[str] = []
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.cell_type != "code" or INJECTED_TAG not in tags:
            continue
        lines = cell.source.splitlines()
        for node in reversed(ast.parse(cell.source).body):
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                continue
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if _is_machine_path(value, paths):
                name = node.targets[0].id
                removed.append(name)
                lines[node.lineno - 1:node.end_lineno] = [
                    f"# {name}: a folder of the machine that built the book, left out (the default above applies)"]
        cell.source = "\n".join(lines)
        if tag and tag not in tags:
            cell.metadata["tags"] = [*tags, tag]
    return removed[::-1]


def scrub_paths(meta: Any, paths: Iterable[str] = ()) -> list[str]:
    """Remove, in place and recursively, every key of notebook metadata (a dict) whose value is a path of the
    build machine (papermill's ``input_path``, ``output_path``, ``parameters.LEDGER_DIR``...); returns the
    dotted keys removed."""
    paths = list(paths)
    removed: list[str] = []

    def walk(d: Any, prefix: str) -> None:
        if isinstance(d, dict):
            for k in list(d):
                if _is_machine_path(d[k], paths):
                    del d[k]
                    removed.append(prefix + str(k))
                else:
                    walk(d[k], f"{prefix}{k}.")
        elif isinstance(d, list):
            for x in d:
                walk(x, prefix)

    walk(meta, "")
    return removed


def fill_placeholders(nb, values: dict[str, str]) -> int:
    """Fill ``{models}``-style placeholders (:data:`PLACEHOLDERS`) in the figure captions and alt texts of the
    cells' ``mystnb`` metadata with ``values``; returns how many texts changed."""
    n = 0
    for cell in nb.cells:
        md = cell.get("metadata", {}).get("mystnb", {})
        for part, key in (("figure", "caption"), ("image", "alt")):
            text = (md.get(part) or {}).get(key)
            if isinstance(text, str):
                new = text
                for name, value in values.items():
                    new = new.replace("{" + name + "}", value)
                if new != text:
                    md[part][key] = new
                    n += 1
    return n


def figure_names(nb) -> list[str]:
    """The names of the notebook's numbered figures (``mystnb.figure.name`` of its cells), in order."""
    return [str(c.metadata["mystnb"]["figure"]["name"]) for c in nb.cells
            if (c.get("metadata", {}).get("mystnb", {}).get("figure") or {}).get("name")]


def figure_panels(names: Iterable[str]) -> dict[str, str]:
    """``{panel: figure id}`` from figure names ``fig-NN-<panel>[-<panel>...]`` (e.g. ``fig-02-1d-1e`` shows
    panels 1D and 1E); the first figure showing a panel wins. Panels in lower case."""
    out: dict[str, str] = {}
    for name in names:
        m = re.match(r"^fig-\d\d-(.+)$", name)
        if m:
            for panel in m.group(1).split("-"):
                out.setdefault(panel.lower(), name)
    return out
