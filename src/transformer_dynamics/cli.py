"""What the three command lines share (``python -m transformer_dynamics``, ``python -m transformer_dynamics.build``,
``python -m transformer_dynamics.distributed``): argparse types with ranges, whose errors are one line naming the
flag (``error: argument --texts: must be an integer >= 1, got '0'``), and :func:`guarded`, which turns every error
of a command into one line on stderr (``--traceback`` shows the whole of it)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import Any

from . import __version__

__all__ = ["Parser", "parse", "integer", "seconds", "folder", "add_common", "guarded", "PACKAGE_ERRORS"]

# What the package raises for bad input or a failed step: a message written for the user
PACKAGE_ERRORS = (ValueError, RuntimeError, OSError)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, ``error: --texts must be an integer >= 1, got '0'
    (python -m ... --help)``, exit status 2 (no usage block)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        message = re.sub(r"^argument ([^:]+): ", r"\1 ", message)
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parse(parser: argparse.ArgumentParser, argv) -> argparse.Namespace | int:
    """``parser.parse_args(argv)``, or the exit status when argparse stops (an error: 2; --help, --version: 0)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2


def integer(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low`` (``"16"``; not ``"2.5"``, ``"1e3"`` or ``"-1"`` when low >= 0)."""
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def folder(text: str) -> str:
    """An argparse type: a path, not empty (``""`` would silently mean the working directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a folder, got {text!r}")
    return text


def add_common(parser: argparse.ArgumentParser, traceback: bool = True) -> None:
    """``--version`` and (unless a subcommand's parser carries it) ``--traceback`` on ``parser``."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    if traceback:
        parser.add_argument("--traceback", action="store_true",
                            help="on an error, show the whole traceback instead of one line")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def guarded(run: Callable[[], Any], *, traceback: bool = False, code: int = 1, full: tuple[type, ...] = ()) -> int:
    """``run()``'s exit status; an error becomes one line on stderr and exit status ``code`` (``full``: error types
    whose whole message is printed, e.g. a build step's log tail). ``traceback``: re-raise instead."""
    try:
        return int(run() or 0)
    except KeyboardInterrupt:
        if traceback:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except PACKAGE_ERRORS as exc:
        if traceback:
            raise
        print(f"error: {exc if isinstance(exc, full) else _first_line(exc)}", file=sys.stderr)
        return code
    except Exception as exc:  # noqa: BLE001 - a bug: still one line, and how to see where
        if traceback:
            raise
        print(f"error: unexpected {type(exc).__name__}: {_first_line(exc)} (a bug: rerun with --traceback and "
              "report it)", file=sys.stderr)
        return code
