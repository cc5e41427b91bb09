"""The chapters as the book shows them, checked statically (no execution): every chapter is set up by
``chapter.setup``, keeps no algorithm the package has, hides the cells that only record, and shows code
that fits the page."""

import ast
import re
from pathlib import Path

import jupytext
import pytest

from transformer_dynamics import build

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STEMS = build.notebook_stems(NOTEBOOKS) if NOTEBOOKS.is_dir() else []
WIDTH = 92  # characters of code a reader sees per line (the book's page width)
HIDDEN = {"remove-input", "remove-cell", "hide-input"}
RECORDS = re.compile(r"^(ch\.ledger|led)\.(record|claim|claim_table)$|^ch\.(record|record_headlines)$"
                     r"|^record(_first|_headlines)?$")


def _code_cells(stem):
    return [c for c in jupytext.read(NOTEBOOKS / f"{stem}.py").cells if c.cell_type == "code"]


def _visible(cell) -> bool:
    return not set(cell.metadata.get("tags", [])) & (HIDDEN | {"parameters"})


def _only_records(stmts) -> bool:
    """Every statement records into the ledger (or prepares a value for it, or loops over such); at least one
    records."""
    recorded = False
    for s in stmts:
        if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call):
            if not RECORDS.match(ast.unparse(s.value.func)):
                return False
            recorded = True
        elif isinstance(s, (ast.For, ast.If)):
            if not _only_records(s.body + s.orelse):
                return False
            recorded = True
        elif not isinstance(s, (ast.Assign, ast.AugAssign)):
            return False
    return recorded


#: calls that build a figure's grid of axes by hand (plots.style.grid / side_by_side do it)
HAND_GRID = re.compile(r"(^|\.)(subplots|subplot|add_subplot|subplot_mosaic|add_gridspec|GridSpec|add_axes)$")


def _arranging_failures(source: str) -> list[str]:
    """What a chapter cell does beyond arranging: a function defined (``def``, ``lambda``, a class) or a grid of
    axes built by hand (``plt.subplots``, ``fig.add_subplot``...)."""
    out = []
    for node in ast.walk(ast.parse(source.replace(";\n", "\n").rstrip(";"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append(f"defines {node.name!r}")
        elif isinstance(node, ast.Lambda):
            out.append(f"defines a lambda: {ast.unparse(node)[:60]}")
        elif isinstance(node, ast.Call) and HAND_GRID.search(ast.unparse(node.func)):
            out.append(f"builds a grid by hand: {ast.unparse(node.func)}(...)")
    return out


def test_the_rules_see_what_they_are_meant_to():
    assert _arranging_failures("def f(x):\n    return x") == ["defines 'f'"]
    assert _arranging_failures("fmt = lambda v: f'{v:.2f}'")[0].startswith("defines a lambda")
    assert _arranging_failures("fig, axes = plt.subplots(1, 2)\nfor ax in axes:\n    ax.plot([1])")
    assert _arranging_failures("ax = fig.add_subplot(121);")
    assert not _arranging_failures("grid(plot_metrics.plot_velocity, data, row_kwargs=ch.row_kwargs)")
    assert _only_records(ast.parse("for m in M:\n    x = f(m)\n    ch.ledger.record('k', x, model=m)").body)
    assert not _only_records(ast.parse("for m in M:\n    ch.record(m, 'k', 1)\ngrid(plot, data)").body)
    assert not _only_records(ast.parse("x = 1").body)


@pytest.mark.parametrize("stem", STEMS)
def test_chapter_is_set_up_by_the_package(stem):
    source = (NOTEBOOKS / f"{stem}.py").read_text()
    assert source.count("chapter.setup(") == 1, f"{stem}: set the chapter up with one chapter.setup(...)"
    for pattern, what in ((r"\bLedger\(", "a Ledger of its own (chapter.setup makes it)"),
                          (r"def (record|suffix)\b", "its own record/suffix helper (ch.record, ch.key)"),
                          (r"array_split", "its own thirds (metrics.thirds, metrics.first_last_third)"),
                          (r"\[[01]::2\]", "the within/cross rule (arrays.split_transitions)")):
        assert not re.search(pattern, source), f"{stem} has {what}"


@pytest.mark.parametrize("stem", STEMS)
def test_cells_that_only_record_are_hidden(stem):
    for cell in _code_cells(stem):
        tree = ast.parse(cell.source.replace(";\n", "\n").rstrip(";"))
        if _only_records(tree.body):
            assert set(cell.metadata.get("tags", [])) & HIDDEN, (
                f"{stem}: a cell that only records is shown; tag it remove-input:\n{cell.source[:200]}")


@pytest.mark.parametrize("stem", STEMS)
def test_visible_code_fits_the_page(stem):
    wide = [line for cell in _code_cells(stem) if _visible(cell) for line in cell.source.splitlines()
            if len(line) > WIDTH]
    assert not wide, f"{stem}: {len(wide)} visible code line(s) over {WIDTH} characters, e.g. {wide[0]!r}"


@pytest.mark.parametrize("stem", STEMS)
def test_chapter_only_arranges(stem):
    """No chapter defines a function or builds a figure's grid by hand, in a visible cell or a hidden one: the
    package holds the logic and the panels, ``plots.style.grid`` and ``side_by_side`` lay them out."""
    found = [f"{f}\n    in: {c.source.splitlines()[0][:80]}" for c in _code_cells(stem)
             for f in _arranging_failures(c.source)]
    assert not found, f"{stem}: " + "\n".join(found)


# --------------------------------------------------------------------------------------------------
# one claim, one computation: chapters 6 and 8 read the evidence the deciding chapter stored
# --------------------------------------------------------------------------------------------------
#: The keywords of the claims' evidence that its stored identity can hold (:func:`.robustness.stored.pair_identity`).
IDENTITY_KEYWORDS = {"n_boot", "n_boot_slow", "seed", "massive", "mi_units", "n_shuffles", "variance", "pca_components"}
DECIDING = ("02_activation_statistics", "03_phase_space_rotations", "04_reduced_trajectories")


def _passed_keywords(stem: str) -> dict[str, str]:
    """``{keyword: parameter name}`` the chapter computes the claims' evidence with, read from its code: the keywords
    of its one ``ch.decide(...)`` call (which adds the chapter's ``seed``, SEED), else of its ``evidence_kwargs =
    dict(...)`` and the dicts that unpacks."""
    nb = jupytext.read(NOTEBOOKS / f"{stem}.py")
    tree = ast.parse("\n".join(line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines()
                                if not line.lstrip().startswith(("%", "!"))))
    dicts = {t.id: node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
             and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "dict"
             for t in node.targets if isinstance(t, ast.Name)}

    def keywords(call: ast.Call) -> dict[str, str]:
        out = {}
        for arg in call.args:                                   # dict(other_kwargs, ...)
            if isinstance(arg, ast.Name) and arg.id in dicts:
                out.update(keywords(dicts[arg.id]))
        for k in call.keywords:
            if k.arg in IDENTITY_KEYWORDS:
                assert isinstance(k.value, ast.Name), f"{stem}: {k.arg}= is not a parameter ({ast.unparse(k.value)})"
                out[k.arg] = k.value.id
        return out
    decide = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
              and n.func.attr == "decide"]
    if decide:
        assert len(decide) == 1, f"{stem} decides its claims in {len(decide)} calls"
        return {"seed": "SEED", **keywords(decide[0])}
    return keywords(dicts["evidence_kwargs"])


def _evidence_keywords(stem: str, profile: str) -> dict:
    """The keywords ``stem`` computes evidence with under ``profile``: the parameters :func:`_passed_keywords` names,
    their values the parameters cell's defaults updated with the profile's."""
    from transformer_dynamics import profiles

    passed = _passed_keywords(stem)
    nb = jupytext.read(NOTEBOOKS / f"{stem}.py")
    params = {k: ast.literal_eval(v) for k, v in build.notebooks.declared_parameters(nb).items()
              if k in passed.values()}
    params.update({k: v for k, v in profiles.load_profile(profile, stem).items() if k in params})
    return {kw: params[name] for kw, name in passed.items()}


def test_chapters_6_and_8_compute_each_claim_as_the_chapter_that_decides_it():
    """The published book (full profile): the evidence chapters 6 and 8 compute for a claim's headline reading on a
    stream has the same stored identity as the evidence the claim's own chapter decided it with, so they read it
    (one computation, one value per claim) instead of computing it again with other settings."""
    from transformer_dynamics import claims
    from transformer_dynamics.robustness import stored

    deciding = {stem: _evidence_keywords(stem, "full") for stem in DECIDING}
    differ = []
    for stem in ("06_models_and_robustness", "08_verdict_robustness"):
        kw = _evidence_keywords(stem, "full")
        for chapter, own in deciding.items():
            for key in claims.claims_of(source="rs", chapter=chapter):
                reading = claims.get(key).headline
                ids = [stored.pair_identity("s", key, reading, k, "p") for k in (kw, own)]
                if ids[0] != ids[1]:
                    differ.append(f"{stem} {key} ({reading}): {kw} vs {chapter}'s {own}")
    assert not differ, "\n".join(differ)
