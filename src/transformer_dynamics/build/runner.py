"""Run the chapter notebooks with papermill under a run profile, showing where the run is and what is left.

Every ``notebooks/NN_*`` (from its ``.py`` when that is newer than the ``.ipynb``) is executed into
``<out>/executed/<profile>/`` - the committed notebooks are never written - with the profile's parameters (only
those its ``parameters`` cell declares), ``LEDGER_DIR=<out>/ledger/<profile>`` and the cache dir; kernel
``python3``, working directory ``notebooks/``. Every notebook runs; the failures are reported together at the
end. Progress: one line per chapter (k/n, its parameters, the time it took last time and an estimate of what is
left, from the previous ``timings-<profile>.json``), papermill's bar over the chapter's cells, and with
``verbose`` the notebooks' own output (the package's capture/training bars included) streamed to the terminal.

A chapter's run is atomic from the book's point of view: it executes into partial locations
(``<out>/executed/.partial/<profile>/`` and ``<out>/ledger/.partial/<profile>/<chapter>/``) and only a run that
finishes replaces the chapter's executed notebook and ledger, so the last complete ones stay in place until
then. The timings file marks the chapter ``running`` before it starts, and ``ok`` only when it finished; a
chapter whose last run failed, was interrupted or was killed (still ``running``) is *incomplete*
(:func:`incomplete_chapters`), and ``build html`` refuses to stage it unless asked to publish anyway
(:func:`check_complete`).

A warm rebuild re-executes only what changed: a chapter is *reused* (not executed) when its inputs are those of its
last complete run and its outputs are still what that run published. The inputs (:func:`chapter_inputs`, one hash
each, kept in the chapter's timings entry) are the notebook's source (every cell, prose included, and its
metadata), the parameters it is given, the package's source (:func:`package_source_hash`: every file of
``transformer_dynamics``, so a changed package never reuses an output it did not make) and the environment the
kernel runs in (``$TRANSFORMER_DYNAMICS_*``, the kernel, the versions of the main dependencies). The outputs are
the executed notebook and the ledger files the run published, each with its sha256, checked on disk: a missing,
truncated or edited output, or a last run that failed, was interrupted or killed (its entry not ``ok``),
re-executes the chapter. A chapter that reads another chapter's ledger (chapter 10 the effect sizes, chapter 11
chapter 7's exponents) has what it read noted while it runs (``$TRANSFORMER_DYNAMICS_READS``, by
:func:`transformer_dynamics.ledger.load`) and runs again when one of those files has changed since. ``force``
re-executes every chapter.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import (ANSI_RE, BuildError, executed_dir, find_root, ledger_dir, log, out_dir, profile_name,
                     timings_path)
from .. import profiles
from ..ledger import READS_ENV
from ..provenance import package_source_hash
from .notebooks import notebook_parameters, notebook_stems, read_notebook

__all__ = ["run_notebooks", "previous_timings", "estimate_left", "format_duration", "incomplete_chapters",
           "check_complete", "executed_copy", "partial_executed_dir", "partial_ledger_dir", "package_source_hash",
           "chapter_inputs", "reuse_blocker"]

#: The dependencies whose versions are part of every chapter's inputs (a new version re-executes the book).
KEY_PACKAGES = ("numpy", "scipy", "torch", "transformers", "safetensors", "pandas", "matplotlib", "papermill",
                "nbformat", "ipykernel", "jupytext")
#: Environment variables that are part of every chapter's inputs: ``$TRANSFORMER_DYNAMICS_*`` but those the runner
#: itself sets per chapter.
KEY_ENV_PREFIX = "TRANSFORMER_DYNAMICS_"
_KEY_ENV_OWN = ("TRANSFORMER_DYNAMICS_LEDGER", "TRANSFORMER_DYNAMICS_PROFILE", READS_ENV)


def partial_executed_dir(out: Path, profile: str) -> Path:
    """Where a chapter's notebook executes before it is complete: ``<out>/executed/.partial/<profile>``."""
    return out / "executed" / ".partial" / profile_name(profile)


def partial_ledger_dir(out: Path, profile: str, stem: str) -> Path:
    """Where a running chapter records its ledger: ``<out>/ledger/.partial/<profile>/<stem>``."""
    return out / "ledger" / ".partial" / profile_name(profile) / stem


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    os.replace(tmp, path)


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes, None when it is missing or unreadable."""
    try:
        return _sha256(path.read_bytes())
    except OSError:
        return None


def _environment(kernel: str, verbose: bool) -> dict[str, Any]:
    """What the kernels run with beyond their notebook and parameters: ``$TRANSFORMER_DYNAMICS_*`` (but the
    runner's own), the kernel, Python's and :data:`KEY_PACKAGES`' versions, whether outputs stream (``verbose``)."""
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith(KEY_ENV_PREFIX) and k not in _KEY_ENV_OWN}
    return {"env": env, "kernel": kernel, "python": sys.version, "verbose": bool(verbose),
            "packages": {p: version(p) for p in KEY_PACKAGES}}


def chapter_inputs(nb, parameters: dict[str, Any], package_hash: str, environment: dict[str, Any]) -> dict[str, str]:
    """The hashes a chapter's reuse is keyed on: ``{"notebook", "parameters", "package", "environment"}`` (sha256
    hex each) of the notebook node (every cell's type, source and metadata, and the notebook's metadata), the
    parameters it is given, the package source hash (:func:`package_source_hash`) and the environment."""
    def dump(x: Any) -> str:
        return json.dumps(x, sort_keys=True, default=str)

    cells = [[c.cell_type, c.source, c.get("metadata", {})] for c in nb.cells]
    return {"notebook": _sha256(dump([cells, nb.metadata])), "parameters": _sha256(dump(parameters)),
            "package": package_hash, "environment": _sha256(dump(environment))}


def reuse_blocker(previous: Any, inputs: dict[str, str], executed: Path, led_dir: Path) -> str | None:
    """Why the chapter whose last timings entry is ``previous`` must execute again for ``inputs``, or None when its
    published outputs can be reused: no complete last run, an input changed (named), or an output that run
    published (the executed notebook ``executed``, its ledger files in ``led_dir``) missing or not what it wrote."""
    if not isinstance(previous, dict) or not (previous.get("ok") is True and previous.get("state", "ok") == "ok"):
        return "no complete last run"
    before, outputs = previous.get("inputs"), previous.get("outputs")
    if not isinstance(before, dict) or not isinstance(outputs, dict):
        return "its last run recorded no inputs"
    changed = [k for k in inputs if before.get(k) != inputs[k]]
    if changed:
        return f"changed: {', '.join(changed)}"
    if _file_sha256(executed) != outputs.get("notebook"):
        return f"its executed notebook {executed.name} is missing or not the one its last run wrote"
    ledgers = outputs.get("ledger")
    if not isinstance(ledgers, dict):
        return "its last run recorded no ledger files"
    for name, digest in ledgers.items():
        if _file_sha256(led_dir / name) != digest:
            return f"its ledger {name} is missing or not the one its last run wrote"
    for path, digest in (outputs.get("reads") or {}).items():  # other chapters' ledgers it read
        if _file_sha256(Path(path)) != digest:
            return f"it read {Path(path).name}, which has changed since"
    return None


def _reads(path: Path, stem: str) -> dict[str, str]:
    """The other chapters' ledgers a chapter read while it ran (:data:`transformer_dynamics.ledger.READS_ENV`):
    ``{path: sha256 as read}``; its own ledger left out."""
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and Path(str(r.get("path"))).name != f"{stem}.json":
            out[str(r["path"])] = str(r.get("sha256"))
    return out


def incomplete_chapters(out: str | os.PathLike, profile: str, stems: Iterable[str] | None = None) -> dict[str, str]:
    """``{stem: why}`` for the chapters (of ``stems``, default all in the timings file) whose last run did not
    finish: it failed, was interrupted, or is still marked running (killed, or running now). A chapter never
    run is not listed (it is staged without outputs, with its own warning)."""
    try:
        rec = json.loads(timings_path(Path(out), profile).read_text())
        entries = rec.get("notebooks") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    out_: dict[str, str] = {}
    for stem, e in entries.items():
        if (stems is not None and stem not in stems) or not isinstance(e, dict):
            continue
        state = e.get("state", "ok" if e.get("ok") else "failed")
        if state == "ok" and e.get("ok"):
            continue
        since = f" (started {e['started']})" if e.get("started") else ""
        out_[stem] = {"running": f"its run did not finish{since}: killed, or still running",
                      "interrupted": f"its run was interrupted{since}",
                      }.get(state, "its last run failed")
    return out_


def check_complete(out: str | os.PathLike, profile: str, stems: Iterable[str], publish_incomplete: bool = False
                   ) -> dict[str, str]:
    """Refuse (:class:`BuildError`, one line naming the chapters and the fix) to publish chapters whose last
    run did not finish; with ``publish_incomplete`` say so loudly and go on (each is staged from its last
    complete copy, else from the partial one). Returns :func:`incomplete_chapters`."""
    bad = incomplete_chapters(out, profile, list(stems))
    if not bad:
        return bad
    what = "; ".join(f"{stem}: {why}" for stem, why in bad.items())
    pname = profile_name(profile)
    if not publish_incomplete:
        raise BuildError(f"incomplete chapter(s) not published ({what}): rerun them (`python -m "
                         f"transformer_dynamics.build run --profile {pname} --only {','.join(bad)}`) or publish "
                         "anyway (publish_incomplete=True)")
    log(f"WARNING: publishing incomplete chapter(s) anyway ({what}): each shows its last complete run, else its "
        "partial one")
    return bad


def executed_copy(out: str | os.PathLike, profile: str, stem: str, publish_incomplete: bool = False) -> Path:
    """The executed notebook to stage for ``stem``: the last complete one; with ``publish_incomplete`` and none
    complete, the partial one (may not exist)."""
    final = executed_dir(Path(out), profile) / f"{stem}.ipynb"
    partial = partial_executed_dir(Path(out), profile) / f"{stem}.ipynb"
    return partial if publish_incomplete and not final.is_file() and partial.is_file() else final


def _publish_chapter(stem: str, partial_nb: Path, final_nb: Path, partial_led: Path, led_dir: Path) -> list[str]:
    """Move a finished chapter's executed notebook and ledger from their partial places into the book's (the
    notebook's injected LEDGER_DIR and papermill's output path name where they are now) -> the ledger files'
    names."""
    final_nb.parent.mkdir(parents=True, exist_ok=True)
    text = partial_nb.read_text(encoding="utf-8")
    for a, b in ((partial_led, led_dir), (partial_nb, final_nb)):  # papermill records its output path too
        text = text.replace(json.dumps(str(a))[1:-1], json.dumps(str(b))[1:-1])
    partial_nb.write_text(text, encoding="utf-8")
    os.replace(partial_nb, final_nb)
    (led_dir / f"{stem}.json").unlink(missing_ok=True)  # a chapter that no longer records leaves no old ledger
    names = []
    for f in sorted(partial_led.glob("*.json")):
        if not f.name.startswith("."):
            os.replace(f, led_dir / f.name)
            names.append(f.name)
    shutil.rmtree(partial_led, ignore_errors=True)
    return names


def format_duration(seconds: float | None) -> str:
    """``3725`` -> ``"1 h 02 min"``, ``95`` -> ``"1 min 35 s"``, ``None`` -> ``"?"``."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def previous_timings(path: str | os.PathLike) -> dict[str, float]:
    """Seconds per notebook of the successful runs recorded in a timings file (``{}`` if there is none)."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v["seconds"]) for k, v in (rec.get("notebooks") or {}).items()
            if isinstance(v, dict) and v.get("ok") and v.get("seconds") is not None}


def estimate_left(stems: list[str], previous: dict[str, float]) -> tuple[float, list[str]]:
    """Estimated seconds for running ``stems`` from ``previous`` timings: ``(seconds, stems_never_timed)``."""
    return sum(previous.get(s, 0.0) for s in stems), [s for s in stems if s not in previous]


def _format_failure(stem: str, exc: BaseException) -> str:
    lines = [f"notebook {stem} FAILED"]
    src = getattr(exc, "source", None)
    if src is not None:
        lines.append(f"  in cell {getattr(exc, 'cell_index', '?')} "
                     f"(execution count {getattr(exc, 'exec_count', '?')}):")
        lines += ["    | " + s for s in str(src).splitlines()]
        tb_text = ANSI_RE.sub("", "\n".join(getattr(exc, "traceback", None) or []))
        lines.append("  traceback (last lines):")
        lines += ["    " + s for s in tb_text.splitlines()[-25:]]
        lines.append(f"  error: {getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}")
    else:
        lines.append(f"  error: {type(exc).__name__}: {ANSI_RE.sub('', str(exc))}")
    return "\n".join(lines)


def _progress_line(k: int, stems: list[str], previous: dict[str, float], elapsed: float) -> str:
    stem = stems[k]
    left, unknown = estimate_left(stems[k:], previous)
    last = f"last run {format_duration(previous[stem])}" if stem in previous else "not timed before"
    est = f"~{format_duration(left)} left in all" + (f" (+ {len(unknown)} chapter(s) never timed)" if unknown else "")
    if not previous:
        est = "no previous timings: no estimate yet"
    return f"[{k + 1}/{len(stems)}] {stem}: {last}; {est}; {format_duration(elapsed)} so far"


@dataclass
class _Run:
    """What every chapter of one :func:`run_notebooks` call shares: where things go, the profile and the record."""

    profile: str
    pname: str
    nb_dir: Path
    out: Path
    exe_dir: Path
    led_dir: Path
    inputs: Path
    partial_exe: Path
    extra: dict[str, Any]
    tpath: Path
    previous: dict[str, float]
    record: dict[str, Any]
    stems: list[str]
    kernel: str
    timeout: float | None
    verbose: bool
    progress: bool
    force: bool
    entries: dict[str, Any] = field(default_factory=dict)  # every chapter's last timings entry
    package_hash: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    t_all: float = field(default_factory=time.perf_counter)


def _plan(profile: str, root: str | os.PathLike | None, out: str | os.PathLike, only: Iterable[str] | None,
          cache_dir: str | os.PathLike | None, **run: Any) -> _Run:
    """The folders made, the parameters every chapter gets, the previous timings and the chapters to run."""
    root = find_root(root)
    out = out_dir(root, out)
    nb_dir = root / "notebooks"
    pname = profile_name(profile)
    exe_dir, led_dir = executed_dir(out, pname), ledger_dir(out, pname)
    inputs = out / "executed" / ".inputs" / pname
    partial_exe = partial_executed_dir(out, pname)
    for d in (exe_dir, led_dir, inputs, partial_exe):
        d.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or os.environ.get("TRANSFORMER_DYNAMICS_CACHE")
    extra: dict[str, Any] = {"LEDGER_DIR": str(led_dir)}
    if cache_dir:
        extra["CACHE_DIR"] = str(Path(cache_dir).resolve())
    tpath = timings_path(out, pname)
    record: dict[str, Any] = {"profile": pname, "notebooks": {}}
    entries: dict[str, Any] = {}
    try:
        entries = dict(json.loads(tpath.read_text()).get("notebooks", {}))
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    if only:  # a partial run keeps the other chapters' entries
        record["notebooks"] = dict(entries)
    stems = notebook_stems(nb_dir, only)
    if not stems:
        raise BuildError(f"no notebooks NN_*.py / NN_*.ipynb in {nb_dir}")
    try:  # a misspelled block would otherwise be ignored silently: say so before the long run
        profiles.check_blocks(profile, notebook_stems(nb_dir))
    except ValueError as exc:
        log(f"WARNING: {exc}")
    return _Run(profile, pname, nb_dir, out, exe_dir, led_dir, inputs, partial_exe, extra, tpath,
                previous_timings(tpath), record, stems, entries=entries, package_hash=package_source_hash(),
                environment=_environment(run["kernel"], run["verbose"]), **run)


@contextlib.contextmanager
def _kernel_environment(run: _Run):
    """The environment the kernels inherit while the chapters run (restored after): the ledger folder, the
    profile's name, no progress bars inside the kernels unless ``verbose``, the inline figure backend."""
    if run.verbose:  # papermill logs the notebooks' outputs at INFO
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    env_backup = dict(os.environ)
    os.environ["TRANSFORMER_DYNAMICS_LEDGER"] = str(run.led_dir)   # for notebooks that leave LEDGER_DIR as default
    os.environ["TRANSFORMER_DYNAMICS_PROFILE"] = run.pname
    if not run.verbose:  # bars inside the kernel would land in the book's outputs; papermill's own bar stays on
        os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"),
                                                          "ignore:IProgress not found"]))
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    os.environ.pop("MPLBACKEND", None)                         # keep the inline backend: figures must be outputs
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(env_backup)


def _execute(run: _Run, k: int, stem: str, entry: dict[str, Any], partial_nb: Path, partial_led: Path) -> None:
    """Execute chapter ``stem`` into its partial places and publish it when it finished (``entry`` updated)."""
    import nbformat
    import papermill as pm

    nb = read_notebook(run.nb_dir, stem)
    params, dropped = notebook_parameters(run.profile, nb, stem, {**run.extra, "LEDGER_DIR": str(partial_led)})
    shown = {**params, **({"LEDGER_DIR": str(run.led_dir)} if "LEDGER_DIR" in params else {})}
    entry.update(parameters=shown, dropped=dropped)
    inputs = chapter_inputs(nb, {"parameters": params, "dropped": dropped}, run.package_hash, run.environment)
    final_nb = run.exe_dir / f"{stem}.ipynb"
    why = "--force" if run.force else reuse_blocker(run.entries.get(stem), inputs, final_nb, run.led_dir)
    if why is None:
        entry.clear()
        entry.update({**run.entries[stem], "reused": True, "checked": time.strftime("%Y-%m-%d %H:%M:%S")})
        log(f"[{k + 1}/{len(run.stems)}] {stem}: unchanged since its last complete run (notebook, parameters, "
            "package, environment): its executed notebook and ledger are reused (--force executes it)")
        return
    entry.update(inputs=inputs, reused=False)
    if isinstance(run.entries.get(stem), dict):  # say why a chapter run before runs again
        log(f"{stem}: executing again ({why})")
    if dropped:
        log(f"{stem}: WARNING: profile {run.pname} sets {dropped}, which its parameters cell does not declare; "
            "not passed")
    in_path = run.inputs / f"{stem}.ipynb"
    nbformat.write(nb, in_path)
    partial_nb.unlink(missing_ok=True)
    shutil.rmtree(partial_led, ignore_errors=True)
    partial_led.mkdir(parents=True)
    os.environ["TRANSFORMER_DYNAMICS_LEDGER"] = str(partial_led)
    reads = run.inputs / f"{stem}.reads.jsonl"
    reads.unlink(missing_ok=True)
    os.environ[READS_ENV] = str(reads)
    _write_json(run.tpath, run.record)  # "running": a run killed now leaves the chapter marked incomplete
    log(_progress_line(k, run.stems, run.previous, time.perf_counter() - run.t_all))
    log(f"{stem}: running ({run.pname}: "
        f"{', '.join(f'{a}={v!r}' for a, v in params.items() if a not in run.extra)})")
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(in_path), str(partial_nb), parameters=params, kernel_name=run.kernel,
                            cwd=str(run.nb_dir),
                            progress_bar={"desc": f"{stem} (cells)", "unit": "cell"} if run.progress else False,
                            log_output=run.verbose, execution_timeout=run.timeout)
    finally:
        entry["seconds"] = round(time.perf_counter() - t0, 2)
    names = _publish_chapter(stem, partial_nb, final_nb, partial_led, run.led_dir)
    entry.update(ok=True, state="ok", outputs={"notebook": _file_sha256(final_nb),
                                               "ledger": {n: _file_sha256(run.led_dir / n) for n in names},
                                               "reads": _reads(reads, stem)})
    log(f"{stem}: ok in {format_duration(entry['seconds'])}")


def _run_chapter(run: _Run, k: int, stem: str) -> None:
    """Run chapter ``stem`` (the ``k``-th): its entry in the record marked running, then ok, failed (the message
    kept in ``run.failures``; the other chapters go on) or interrupted (re-raised); the record written."""
    entry: dict[str, Any] = {"seconds": None, "ok": False, "error": None, "state": "running",
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    run.record["notebooks"][stem] = entry
    partial_nb = run.partial_exe / f"{stem}.ipynb"
    partial_led = partial_ledger_dir(run.out, run.pname, stem)
    t0 = time.perf_counter()
    try:
        _execute(run, k, stem, entry, partial_nb, partial_led)
    except Exception as exc:  # one failing notebook must not stop the others
        msg = _format_failure(stem, exc)
        entry.update(error=msg, state="failed")
        run.failures.append(msg)
        log(msg)
        log(f"{stem}: its last complete notebook and ledger stay published; this run's partial notebook is "
            f"{partial_nb}")
    except BaseException:  # interrupted (Ctrl-C): marked so, the last complete copies kept
        entry.update(state="interrupted", error="interrupted", seconds=round(time.perf_counter() - t0, 2))
        _write_json(run.tpath, {**run.record, "failures": run.failures + [f"notebook {stem} interrupted"]})
        log(f"{stem}: INTERRUPTED; its last complete notebook and ledger stay published")
        raise
    _write_json(run.tpath, run.record)


def run_notebooks(profile: str = "full", root: str | os.PathLike | None = None, out: str | os.PathLike = "_build",
                  only: Iterable[str] | None = None, cache_dir: str | os.PathLike | None = None,
                  timeout: float | None = None, kernel: str = "python3", verbose: bool = False,
                  progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Execute the chapter notebooks with papermill under ``profile`` (see the module docstring): a chapter whose
    inputs and published outputs are those of its last complete run is reused, not executed (``force``: every
    chapter executes).

    Returns the timings record ``{"profile", "notebooks": {stem: {"seconds", "ok", "error", "parameters",
    "dropped", "state", "inputs", "outputs", "reused"}}, "failures": [messages], "total_seconds"}`` (a reused
    chapter's entry is that of the run that made its outputs, its ``seconds`` included, with ``reused`` true); it
    is also written to ``<out>/timings-<profile>.json``
    (with ``only``, the other chapters keep their previous entry).
    """
    import nbformat  # noqa: F401 - imported before the kernels' environment is set (as tqdm)
    import papermill  # noqa: F401
    import tqdm.auto  # noqa: F401 - tqdm reads TQDM_* at import: imported before TQDM_DISABLE is set below

    run = _plan(profile, root, out, only, cache_dir, kernel=kernel, timeout=timeout, verbose=verbose,
                progress=progress, force=force)
    with _kernel_environment(run):
        for k, stem in enumerate(run.stems):
            _run_chapter(run, k, stem)
    record, stems = run.record, run.stems
    record["total_seconds"] = round(time.perf_counter() - run.t_all, 2)
    record["failures"] = run.failures
    _write_json(run.tpath, record)
    log(f"{len(stems) - len(run.failures)}/{len(stems)} notebooks ok in {format_duration(record['total_seconds'])} "
        f"(timings: {run.tpath})")
    return record
