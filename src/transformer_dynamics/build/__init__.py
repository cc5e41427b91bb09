"""Build tooling for the book, apart from the analysis package: one job per module.

- :mod:`.layout`: the repository root, the build folder's layout, :class:`BuildError`.
- :mod:`.notebooks`: the chapter notebooks, their ``parameters`` cell, the table of contents.
- :mod:`.runner`: papermill runs under a run profile, with progress and an estimate of what is left.
- :mod:`.pages`: the generated pages (ledger, benchmarks) and the profile banner.
- :mod:`.site`: staging and ``jupyter-book build``.
- :mod:`.browser`: the browser check (Playwright driving the system Chromium).
- ``python -m transformer_dynamics.build {run,html,check,all,browser}``: the command line (:mod:`.__main__`).
"""

from .browser import (INSTALL_HINT, OPT_OUT_ENV, can_install_chromium, check_html, ensure_chromium,
                      find_chromium, opted_out)
from .layout import BuildError, find_root
from .notebooks import (declared_parameters, notebook_parameters, notebook_stems, parameters_cell, read_notebook,
                        repository_url, toc_files)
from .pages import BENCHMARKS_MARKER, LEDGER_MARKER, json_to_markdown, render_benchmarks_page, render_ledger_page
from .runner import run_notebooks
from .site import build_html, stage

__all__ = [
    "BuildError", "find_root", "notebook_stems", "read_notebook", "parameters_cell", "declared_parameters",
    "notebook_parameters", "toc_files", "repository_url", "run_notebooks", "LEDGER_MARKER", "BENCHMARKS_MARKER",
    "render_ledger_page", "render_benchmarks_page", "json_to_markdown", "stage", "build_html", "OPT_OUT_ENV",
    "INSTALL_HINT", "opted_out", "find_chromium", "can_install_chromium", "ensure_chromium", "check_html",
]
