"""WikiText-2 raw rows, the paper's length filter, seeded sampling, and the shuffled-token permutation.

Rows are exactly what ``datasets.load_dataset("wikitext", "wikitext-2-raw-v1")`` yields: a row keeps its
trailing newline (so most rows end in ``" \\n"``), and a blank line is ``""``.

Where the rows come from, in this order:

1. a folder passed as ``data_dir`` (or in ``$TRANSFORMER_DYNAMICS_DATA``) holding ``wiki.{split}.raw``;
2. ``../shared/data/wikitext-2-raw`` beside the checkout, if present (the offline copy);
3. the Hugging Face hub (needs the ``datasets`` package and a network).

Local files are checked before use: against the folder's ``SHA256SUMS`` when it lists them, else the
published files' sha256 and row counts (:data:`KNOWN_FILES`). A truncated or edited copy, Windows (CRLF)
line endings or a binary file is an error naming the file and what differs, never a silent change.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import paper
from .validation import check_int, check_path, check_positive_int, check_seed

__all__ = [
    "DATA_ENV",
    "DEFAULT_SPLITS",
    "L_MIN",
    "L_MAX",
    "TextSource",
    "KNOWN_FILES",
    "find_data_dir",
    "read_raw_rows",
    "load_rows",
    "filter_rows",
    "sample_rows",
    "load_texts",
    "rows_hash",
    "shuffle_token_ids",
]

DATA_ENV = "TRANSFORMER_DYNAMICS_DATA"
#: The paper's length filter on characters: l_min < len(row) < l_max.
L_MIN, L_MAX = paper.TEXT_CHARS
#: Splits used by default: those that exist offline. Together they hold 1,246 rows that pass the filter,
#: enough for the paper's N = 1000 (the test split alone has 661).
DEFAULT_SPLITS = ("test", "validation")
_FILE_SPLIT = {"test": "test", "validation": "valid", "valid": "valid", "train": "train"}
_SHARED_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "wikitext-2-raw"
#: wikitext-2-raw-v1 as published, per raw file: rows, rows passing the paper's filter, sha256 (None: unknown).
KNOWN_FILES = {
    "wiki.test.raw": (4358, 661, "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"),
    "wiki.valid.raw": (3760, 585, "4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7"),
    "wiki.train.raw": (36718, None, None),
}


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local folder of raw WikiText-2 files to read, or None to use the Hugging Face hub."""
    data_dir = check_path(data_dir, "data_dir")
    for candidate, what in ((data_dir, "data_dir"), (os.environ.get(DATA_ENV), f"${DATA_ENV}")):
        if candidate:
            path = Path(candidate).expanduser()
            if path.exists() and not path.is_dir():
                raise NotADirectoryError(
                    f"WikiText folder {path} (from {what}) is a file, not a folder. Point {what} at the folder "
                    "holding wiki.test.raw and wiki.valid.raw (the wikitext-2-raw-v1 files).")
            if not path.is_dir():
                raise FileNotFoundError(
                    f"WikiText folder {path} (from {what}) does not exist. Point {what} at a folder "
                    "holding wiki.test.raw and wiki.valid.raw (the wikitext-2-raw-v1 files).")
            return path
    for candidate in (_SHARED_DIR, Path.cwd() / ".." / "shared" / "data" / "wikitext-2-raw"):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def read_raw_rows(path: str | os.PathLike) -> list[str]:
    """Rows of one raw WikiText file as the Hugging Face loader gives them (newline kept, blanks "").

    A file that is not UTF-8 text, or has Windows (CRLF) line endings, is an error naming the file: CRLF
    would silently end every text in ``"\\r\\n"`` and change every tokenisation.
    """
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}): "
                         "is it a raw WikiText file (wiki.*.raw from wikitext-2-raw-v1)?") from None
    if "\r" in text:
        raise ValueError(f"{path} has Windows (CRLF) line endings: every text would end in '\\r\\n'. Convert "
                         f"it to LF endings (dos2unix {path}, or sed -i 's/\\r$//' {path}) and rerun.")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    # The loader yields each line with its newline; a line holding only " " is a blank row "".
    return [("" if line.strip() == "" else line + "\n") for line in lines]


@dataclass(frozen=True)
class TextSource:
    """Where rows came from: ``kind`` is ``"local"`` or ``"hub"``; ``location`` the folder or dataset id."""

    kind: str
    location: str
    splits: tuple[str, ...]

    def describe(self) -> str:
        return f"wikitext-2-raw-v1 {'+'.join(self.splits)} ({self.kind}: {self.location})"


def load_rows(splits: Sequence[str] = DEFAULT_SPLITS, data_dir: str | os.PathLike | None = None
              ) -> tuple[list[str], TextSource]:
    """All rows of the given splits, in order, and where they came from. ``splits``: split names, or one
    name (``"test"`` is ``("test",)``)."""
    splits = _check_splits(splits)
    unknown = [s for s in splits if s not in _FILE_SPLIT]
    if unknown:
        raise ValueError(f"unknown WikiText split(s) {unknown}; choose from 'train', 'validation', 'test'")
    folder = find_data_dir(data_dir)
    if folder is not None:
        rows: list[str] = []
        for split in splits:
            path = folder / f"wiki.{_FILE_SPLIT[split]}.raw"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing. The folder {folder} must hold wiki.{_FILE_SPLIT[split]}.raw for the "
                    f"'{split}' split; pass splits=('test', 'validation') to use only the offline splits.")
            split_rows = read_raw_rows(path)
            _check_file(path, split_rows, l_min=L_MIN, l_max=L_MAX)
            rows.extend(split_rows)
        return rows, TextSource("local", str(folder), splits)
    try:
        import datasets  # noqa: PLC0415
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "No local WikiText files found and the `datasets` package is not installed. Either set "
            f"${DATA_ENV} to a folder with wiki.test.raw / wiki.valid.raw, or `pip install datasets`.") from err
    rows = []
    try:
        for split in splits:
            split_rows = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=split)["text"]
            expected = KNOWN_FILES[f"wiki.{_FILE_SPLIT[split]}.raw"][0]
            if len(split_rows) != expected:
                raise ValueError(f"the hub's wikitext-2-raw-v1 '{split}' split has {len(split_rows)} rows, not "
                                 f"{expected}: clear its datasets cache and reload")
            rows.extend(split_rows)
    except ValueError:  # pragma: no cover - network dependent
        raise
    except Exception as err:  # pragma: no cover - network dependent
        raise RuntimeError(
            f"Could not load WikiText-2 from the Hugging Face hub ({err}). Offline? Set ${DATA_ENV} to a "
            "folder holding the raw files wiki.test.raw and wiki.valid.raw.") from err
    return rows, TextSource("hub", "wikitext/wikitext-2-raw-v1", splits)


def _check_splits(splits) -> tuple[str, ...]:
    """``splits`` as a tuple of names: one name alone is one split (not its letters)."""
    if isinstance(splits, str):
        return (splits,)
    if isinstance(splits, (bytes, os.PathLike)) or not isinstance(splits, Sequence) or not splits \
            or not all(isinstance(s, str) for s in splits):
        raise ValueError(f"splits must be a split name or a non-empty list of them ('train', 'validation', "
                         f"'test'); got {splits!r}")
    return tuple(splits)


def _listed_sha256(folder: Path, name: str) -> str | None:
    """The sha256 that ``folder/SHA256SUMS`` lists for ``name`` (None when not listed or no such file)."""
    try:
        lines = (folder / "SHA256SUMS").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == name:
            return parts[0].lower()
    return None


def _check_file(path: Path, rows: list[str], l_min: int, l_max: int) -> None:
    """Raise a ValueError saying what differs when a raw file is not the published wikitext-2-raw-v1 file.

    Checked against the published file's sha256 when known and the folder's ``SHA256SUMS`` when it lists
    the file (both must match), else against the known row count.
    """
    n_rows, n_filtered, known_sha = KNOWN_FILES.get(path.name, (None, None, None))
    expected = [(sha, why) for sha, why in ((known_sha, "the published file's"),
                                            (_listed_sha256(path.parent, path.name), "the one SHA256SUMS lists"))
                if sha]
    if expected:
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        wrong = [(sha, why) for sha, why in expected if sha != got]
        if not wrong:
            return
        what = f"its sha256 is {got[:12]}…, not {wrong[0][1]} ({wrong[0][0][:12]}…)"
    elif n_rows is None or len(rows) == n_rows:
        return
    else:
        what = f"it has {len(rows)} rows, not {n_rows}"
    counts = f"{len(rows)} rows, {len(filter_rows(rows, l_min, l_max))} pass the length filter"
    if n_rows is not None:
        counts += f"; the published file has {n_rows} rows" + (f", {n_filtered} pass" if n_filtered else "")
    raise ValueError(f"{path} is not the published wikitext-2-raw-v1 file: {what} ({counts}). A truncated or "
                     "edited copy? Replace it with the original raw file.")


def filter_rows(rows: Sequence[str], l_min: int = L_MIN, l_max: int = L_MAX) -> list[str]:
    """The paper's filter: rows with ``l_min < len(row) < l_max`` characters (newline included)."""
    return [r for r in rows if l_min < len(r) < l_max]


def sample_rows(rows: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """``n`` distinct rows drawn without replacement with ``numpy.random.default_rng(seed)``."""
    n, seed = check_positive_int(n, "n"), check_seed(seed)
    if n > len(rows):
        raise ValueError(
            f"asked for N = {n} texts but only {len(rows)} rows pass the length filter; lower N or add "
            "splits (the offline test + validation splits give 1246 rows).")
    idx = np.random.default_rng(seed).choice(len(rows), size=n, replace=False)
    return [rows[i] for i in idx]


def load_texts(n: int, seed: int = 0, *, splits: Sequence[str] = DEFAULT_SPLITS,
               data_dir: str | os.PathLike | None = None, l_min: int = L_MIN, l_max: int = L_MAX
               ) -> tuple[list[str], TextSource]:
    """Load, filter and sample ``n`` WikiText rows; returns ``(texts, source)``."""
    n, seed = check_positive_int(n, "n"), check_seed(seed)
    l_min, l_max = check_int(l_min, "l_min", low=0), check_int(l_max, "l_max", low=0)
    if l_max <= l_min + 1:
        raise ValueError(f"need l_min + 1 < l_max (rows with l_min < length < l_max); got l_min={l_min}, "
                         f"l_max={l_max}")
    rows, source = load_rows(splits, data_dir)
    return sample_rows(filter_rows(rows, l_min, l_max), n, seed), source


def rows_hash(texts: Sequence[str]) -> str:
    """sha256 over the texts (order matters): identifies the exact inputs of a capture."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def shuffle_token_ids(ids: Sequence[Sequence[int]], seed: int | np.random.Generator = 0,
                      keep_first: bool | Sequence[bool] = True, keep_last: bool = False) -> list[list[int]]:
    """The paper's shuffled-token control: each sequence's tokens permuted, the first (BOS) kept in place.

    ids: token id lists, one per text. keep_first: keep position 0 fixed (per sequence or for all).
    keep_last: also keep the last token in place (the variant in which only the order changes: the token
    whose residual stream is read stays the same).
    One ``default_rng(seed)`` draws every permutation in order, so the result is reproducible; pass a
    ``numpy.random.Generator`` to continue one stream over several chunks of texts.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_seed(seed))
    keep = [keep_first] * len(ids) if isinstance(keep_first, bool) else list(keep_first)
    out = []
    for seq, k in zip(ids, keep):
        seq = list(seq)
        head, tail = (seq[:1], seq[1:]) if k else ([], seq)
        end, tail = (tail[-1:], tail[:-1]) if keep_last and tail else ([], tail)
        out.append(head + [tail[i] for i in rng.permutation(len(tail))] + end)
    return out
