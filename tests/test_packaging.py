"""What a contributor and a packager meet: the package's metadata, the sdist, the jupytext pairing and its pinned
version, pre-commit, the docs staying inside the repository, and the workflows (pinned actions, least privilege,
caches pull requests cannot evict, zizmor in CI, the release)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import jupytext
import pytest
import yaml

import transformer_dynamics

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pinned_jupytext() -> str | None:
    """The jupytext version pinned (``==``) in the book extra, or None."""
    spec = next(d for d in PYPROJECT["project"]["optional-dependencies"]["book"] if d.startswith("jupytext"))
    m = re.fullmatch(r"jupytext==([\d.]+)", spec.split(";")[0].strip())
    return m[1] if m else None


# ----------------------------------------------------------------------------------------------------------
# the package


def test_metadata_for_an_index():
    project = PYPROJECT["project"]
    assert project["version"] == transformer_dynamics.__version__
    assert len(project["keywords"]) >= 4 and "Typing :: Typed" in project["classifiers"]
    assert any(c.startswith("Programming Language :: Python :: 3.") for c in project["classifiers"])
    assert (ROOT / "src" / "transformer_dynamics" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["transformer_dynamics"]


def test_sdist_holds_the_package_and_no_tests(tmp_path):
    """The tests read notebooks/, book/ and _config.yml, which the sdist does not ship: it carries no tests."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta as b; b.build_sdist({str(out)!r})"],
                   cwd=src, check=True, capture_output=True)
    with tarfile.open(next(out.glob("*.tar.gz"))) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert not [n for n in names if n.startswith(("tests/", "notebooks/"))]
    for want in ("pyproject.toml", "README.md", "LICENSE", "src/transformer_dynamics/py.typed",
                 "src/transformer_dynamics/profiles/full.yml", "src/transformer_dynamics/kde_grid.c"):
        assert want in names, want


# ----------------------------------------------------------------------------------------------------------
# contributors: jupytext, pre-commit, docs


def test_jupytext_pairing_and_pinned_version():
    cfg = tomllib.loads((ROOT / "jupytext.toml").read_text())
    assert cfg["formats"] == "ipynb,py:percent"
    pin = _pinned_jupytext()
    assert pin, "jupytext must be pinned exactly (==) in pyproject.toml's book extra"
    for py in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        header = jupytext.read(py).metadata["jupytext"]
        assert header["text_representation"]["jupytext_version"] == pin, py.name
        assert header["formats"] == cfg["formats"], py.name
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    deps = [d for repo in hooks["repos"] for h in repo["hooks"] for d in h.get("additional_dependencies", [])]
    assert f"jupytext=={pin}" in deps


@pytest.mark.skipif(jupytext.__version__ != _pinned_jupytext(), reason="another jupytext than the pinned one")
def test_jupytext_sync_leaves_the_notebooks_unchanged(tmp_path):
    """`jupytext --sync` with the pinned version rewrites nothing: headers and cells are as committed."""
    shutil.copy2(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    (tmp_path / "notebooks").mkdir()
    for f in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*")):
        shutil.copy2(f, tmp_path / "notebooks" / f.name)
    before = {f.name: f.read_bytes() for f in (tmp_path / "notebooks").iterdir()}
    from jupytext.cli import jupytext as cli

    cli(["--sync", "--quiet", *sorted(str(p) for p in (tmp_path / "notebooks").glob("*.py"))])
    changed = [n for n, b in before.items() if (tmp_path / "notebooks" / n).read_bytes() != b]
    assert not changed, f"jupytext --sync rewrites {changed}: run `make sync` and commit"


def test_pre_commit_runs_jupytext_ruff_and_zizmor():
    hooks = {h["id"]: h for repo in yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
             for h in repo["hooks"]}
    assert hooks["jupytext-sync"]["entry"] == "jupytext --sync" and "notebooks" in hooks["jupytext-sync"]["files"]
    assert hooks["ruff"]["entry"].startswith("ruff check")
    assert hooks["zizmor"]["entry"] == "zizmor --offline"
    assert "line-length" in PYPROJECT["tool"]["ruff"]


def test_docs_stay_inside_the_repository():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    assert "pre-commit install" in text and "jupytext" in text and "make test" in text
    for doc in (ROOT / "docs" / "CONTRACTS.md", ROOT / "CONTRIBUTING.md"):
        assert "shared/" not in doc.read_text(), f"{doc.name} names a folder beside the checkout"
        for target in re.findall(r"`(\.\./[^`]+)`|\]\((\.\./[^)]+)\)", doc.read_text()):
            path = (doc.parent / next(t for t in target if t)).resolve()
            assert path.is_relative_to(ROOT), f"{doc.name} sends contributors outside the repository: {path}"


# ----------------------------------------------------------------------------------------------------------
# workflows


def _steps(wf):
    return [(name, s) for name, job in wf["jobs"].items() for s in job.get("steps", [])]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_commits(path):
    for line in path.read_text().splitlines():
        m = re.match(r"\s*-?\s*uses:\s*(\S+)(.*)$", line)
        if not m or m[1].startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", m[1]), f"{path.name}: {m[1]} is not pinned to a commit"
        assert re.fullmatch(r"\s+#\s*v\d+(\.\d+)*", m[2]), f"{path.name}: {m[1]} has no '# vX.Y.Z' comment"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_are_least_privileged(path):
    wf = yaml.safe_load(path.read_text())
    assert wf.get("permissions") == {}, f"{path.name}: the workflow's default permissions must be none ({{}})"
    allowed_writes = {("book.yml", "deploy"): {"pages", "id-token"}, ("release.yml", "pypi"): {"id-token"}}
    for name, job in wf["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict), f"{path.name}: job {name} must say its permissions"
        writes = {k for k, v in perms.items() if v == "write"}
        assert writes <= allowed_writes.get((path.name, name), set()), (path.name, name, writes)
    for job, step in _steps(wf):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert (step.get("with") or {}).get("persist-credentials") is False, (path.name, job)


def test_pull_requests_never_save_a_cache():
    """GitHub keeps 10 GB of caches per repository: a 2.8 GB cache saved per pull request would evict the book's."""
    for path in WORKFLOWS:
        wf = yaml.safe_load(path.read_text())
        triggers = wf[True]  # YAML reads `on` as True
        saves = [s for _, s in _steps(wf) if str(s.get("uses", "")).startswith("actions/cache/save@")
                 or (str(s.get("uses", "")).startswith("actions/cache@"))
                 or (str(s.get("uses", "")).startswith("actions/setup-python@") and (s.get("with") or {}).get("cache"))]
        if "pull_request" in triggers or "pull_request_target" in triggers:
            assert not saves, f"{path.name} runs on pull requests and saves a cache"
    test_wf = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    restores = [s for _, s in _steps(test_wf) if str(s.get("uses", "")).startswith("actions/cache/restore@")]
    assert restores and all("td-${{ runner.os }}-full-" in s["with"]["restore-keys"] for s in restores)


def test_zizmor_runs_in_ci_without_ignore_rules():
    test_wf = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    runs = " ".join(str(s.get("run", "")) for _, s in _steps(test_wf))
    assert "zizmor --offline" in runs and re.search(r"zizmor==\d", runs)
    assert not list(ROOT.glob(".github/zizmor.y*ml")) and not list(ROOT.glob("zizmor.y*ml"))
    for path in WORKFLOWS:
        assert "zizmor: ignore" not in path.read_text(), path.name


@pytest.mark.skipif(shutil.which("zizmor") is None, reason="zizmor not installed here (CI's test.yml runs it)")
def test_zizmor_finds_nothing():
    proc = subprocess.run(["zizmor", "--offline", "--min-severity", "informational", ".github/workflows"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_release_builds_checks_and_publishes_by_trusted_publishing():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    assert wf[True] == {"push": {"tags": ["v*"]}}
    runs = " ".join(str(s.get("run", "")) for _, s in _steps(wf))
    assert "python -m build" in runs and "twine check --strict dist/*" in runs and "GITHUB_REF_NAME" in runs
    pypi = wf["jobs"]["pypi"]
    assert pypi["permissions"] == {"id-token": "write"} and pypi["environment"]["name"] == "pypi"
    assert any(str(s.get("uses", "")).startswith("pypa/gh-action-pypi-publish@") for s in pypi["steps"])
    assert not any("password" in (s.get("with") or {}) for s in pypi["steps"])  # no stored token
    book = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    assert "v*" in book[True]["push"]["tags"]  # the release's book: its Colab buttons open the tag
    assert "GITHUB_REF_NAME" in " ".join(str(s.get("run", "")) for _, s in _steps(book))
