"""``load_rows``: read a dataset from a file, a list of dicts or a ``datasets.Dataset``, validated row by row.

Sources:
* a path (``str`` or ``os.PathLike``) ending in ``.jsonl``, ``.ndjson`` or ``.json``, optionally ``.gz``.
  JSON Lines: one object per line; blank lines are not rows (and are not counted as skipped). ``.json``:
  a JSON array of objects, or JSON Lines under a ``.json`` name (as ``datasets`` writes them: a file that
  fails to parse as one document because of "extra data" after the first value is read as JSON Lines).
  Lines are decoded as UTF-8 one by one, so an undecodable byte is reported at its line.
* a list (or any iterable) of dicts;
* a ``datasets.Dataset`` or ``datasets.IterableDataset`` (iterated row by row; ``datasets`` is never
  imported here, only recognised when the caller already has it loaded). A ``DatasetDict`` is refused:
  pick a split.

Every row is validated and normalised by :func:`alignkit.data.formats.normalize_row`. Errors are
:class:`~alignkit.data.errors.DataError` and name the source, the row (1-based line numbers for files,
0-based indices for in-memory rows) and the field.

``skip_invalid=True`` drops bad rows instead of raising, and reports them: the returned :class:`Rows`
holds ``skipped`` (the count) and ``problems`` (one ``DataError`` per dropped row, in order), and a
``RuntimeWarning`` with the count and the first problem is emitted, so that nothing is dropped silently.
Whole-source problems (unreadable file, undetectable format, no valid row at all) always raise.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import DataError, LocatedList
from .formats import FORMATS, detect_row_format, normalize_row

__all__ = ["Rows", "load_rows", "SUFFIXES"]

SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")


class Rows(LocatedList):
    """The normalised rows (a ``list`` of dicts), plus where they came from and what was skipped.

    Attributes:
        format: the format the rows were read as (given or detected).
        source: the file path as given, ``"rows"`` (in-memory list) or ``"dataset"``.
        locations: one location string per row, e.g. ``"train.jsonl line 7"`` (``where(i)`` for one); the
            tokenisers name rows by it in their errors. Found by row identity, so it survives shuffling.
        problems: the :class:`DataError` of each skipped row (``skip_invalid=True``), in source order.
        skipped: ``len(problems)``, the number the trainer should log.
    """

    def __init__(
        self,
        rows: Iterable[dict] = (),
        *,
        format: str | None = None,
        source: str | None = None,
        locations: list[str] | None = None,
        problems: list[DataError] | None = None,
    ):
        super().__init__(rows, locations=locations)
        self.format = format
        self.source = source
        self.problems = list(problems or [])

    @property
    def skipped(self) -> int:
        return len(self.problems)


# ------------------------------------------------------------------------------------------------ sources
# Each reader yields (row number as printed, location, row or the DataError that stopped it from parsing).
_Item = tuple[int, str, Any]


def _read_lines(path: Path, label: str, opened) -> Iterator[_Item]:
    for n, raw in enumerate(opened, start=1):
        where = f"{label} line {n}"
        try:
            line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as e:
            yield n, where, DataError(f"is not valid UTF-8 ({e.reason} at byte {e.start})", location=where)
            continue
        if not line.strip():
            continue
        try:
            yield n, where, json.loads(line)
        except json.JSONDecodeError as e:
            yield n, where, DataError(f"is not valid JSON: {e.msg} (column {e.colno})", location=where)


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


@contextmanager
def _damaged_file(label: str):
    """A truncated or corrupt compressed file is a data error naming the file (not a bare EOFError)."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"is damaged: the compressed stream ends early or is corrupt ({type(e).__name__}: {e}); "
                        "download or copy it again", location=label, source=label) from None


def _read_file(path: Path, label: str) -> Iterator[_Item]:
    name = path.name.lower()
    if not name.endswith(SUFFIXES):
        raise ValueError(f"{label}: unsupported file type; expected one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{label}: no such file")
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")):
        with _open(path) as f, _damaged_file(label):
            yield from _read_lines(path, label, f)
        return
    with _open(path) as f, _damaged_file(label):
        data = f.read()
    try:
        records = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"is not valid UTF-8 ({e.reason} at byte {e.start})", location=label, source=label) from None
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":
            raise DataError(f"is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", location=label,
                            source=label) from None
        with _open(path) as f, _damaged_file(label):  # JSON Lines under a .json name
            yield from _read_lines(path, label, f)
        return
    if not isinstance(records, list):
        raise DataError(
            f"holds a JSON {type(records).__name__}; expected an array of row objects (or one object per line "
            "in a .jsonl file)",
            location=label,
            source=label,
        )
    for n, record in enumerate(records, start=1):
        yield n, f"{label} record {n}", record


def _is_dataset(source: Any) -> str | None:
    """"dataset" / "dataset_dict" when ``source`` is a ``datasets`` object (without importing datasets)."""
    module = sys.modules.get("datasets")
    if module is None:
        return None
    if isinstance(source, (module.DatasetDict, module.IterableDatasetDict)):
        return "dataset_dict"
    if isinstance(source, (module.Dataset, module.IterableDataset)):
        return "dataset"
    return None


def _items(source: Any) -> tuple[str, Iterator[_Item]]:
    """(source name, items) for any supported source."""
    if isinstance(source, (str, os.PathLike)):
        label = os.fspath(source)
        return label, _read_file(Path(label), label)
    kind = _is_dataset(source)
    if kind == "dataset_dict":
        raise TypeError(f"got a DatasetDict with splits {list(source.keys())}; pass one split, e.g. ds['train']")
    if kind == "dataset":
        return "dataset", ((i, f"dataset[{i}]", row) for i, row in enumerate(source))
    if isinstance(source, (bytes, Mapping)) or not isinstance(source, Iterable):
        raise TypeError(
            f"source must be a file path, a list of dicts or a datasets.Dataset, got {type(source).__name__}"
        )
    return "rows", ((i, f"rows[{i}]", row) for i, row in enumerate(source))


# ------------------------------------------------------------------------------------------------ loading
def load_rows(
    source: Any,
    *,
    format: str | None = None,
    skip_invalid: bool = False,
    max_rows: int | None = None,
) -> Rows:
    """Read, validate and normalise the rows of ``source``.

    Args:
        source: a path (``.jsonl``/``.ndjson``/``.json``, optionally ``.gz``), a list of dicts, or a
            ``datasets.Dataset``.
        format: one of :data:`~alignkit.data.formats.FORMATS`; None detects it from the keys of the first
            row that is a JSON object (:func:`~alignkit.data.formats.detect_row_format`).
        skip_invalid: drop bad rows (malformed JSON, missing/mistyped/empty fields, identical pairs) and
            count them in ``Rows.skipped``/``Rows.problems`` instead of raising at the first one.
        max_rows: stop once this many rows have been kept (None: read everything). The source is read
            lazily, so a large file is not read past that point.
    Returns:
        :class:`Rows`, a ``list[dict]`` of normalised rows (schemas in :mod:`alignkit.data.formats`).
    Raises:
        DataError: a bad row (unless ``skip_invalid``), an unreadable or empty source, an undetectable format.
        FileNotFoundError, ValueError, TypeError: a missing file, an unsupported suffix, an unsupported source.

    >>> rows = load_rows([{"prompt": "2+2=", "completion": " 4"}])
    >>> rows, rows.format, rows.locations
    ([{'prompt': '2+2=', 'completion': ' 4'}], 'prompt_completion', ['rows[0]'])
    >>> load_rows([{"prompt": "hi", "chosen": "a", "rejected": "a"}])
    Traceback (most recent call last):
        ...
    alignkit.data.errors.DataError: rows[0]: field 'rejected': is identical to 'chosen'; ...
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {FORMATS} (or None to detect it)")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1 or None, got {max_rows}")
    name, items = _items(source)
    kept: list[dict] = []
    locations: list[str] = []
    problems: list[DataError] = []
    seen = 0
    for number, where, row in items:
        seen += 1
        if format is None and isinstance(row, Mapping):
            try:
                format = detect_row_format(row)
            except DataError as e:  # a whole-source problem: raised even with skip_invalid
                raise DataError(f"{e.problem} (the keys of the first row)", location=where, source=name,
                                row=number) from None
        try:
            if isinstance(row, DataError):
                raise row
            if format is None:
                raise DataError(f"row must be a JSON object (dict), got {type(row).__name__}")
            kept.append(normalize_row(row, format))
            locations.append(where)
        except DataError as e:
            err = e.at(where, source=name, row=number)
            if not skip_invalid:
                raise err from None
            problems.append(err)
            continue
        if max_rows is not None and len(kept) >= max_rows:
            break
    if not kept:
        first = f"; the first problem: {problems[0]}" if problems else ""
        raise DataError(f"has no valid rows ({seen} read, {len(problems)} invalid){first}", location=name,
                        source=name)
    if problems:
        warnings.warn(
            f"{name}: skipped {len(problems)} invalid row(s) of {seen} read; the first: {problems[0]}",
            RuntimeWarning,
            stacklevel=2,
        )
    return Rows(kept, format=format, source=name, locations=locations, problems=problems)
