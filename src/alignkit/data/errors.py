"""``DataError``: a bad row, named by where it came from and which field is wrong.

Every problem found in a dataset is reported as ``"<location>: field '<name>' <problem>"``, where the
location says which source and which row:

    ============================  =========================================================
    source                        location
    ============================  =========================================================
    JSON Lines file (.jsonl[.gz]) ``"data/train.jsonl line 17"`` (1-based line number)
    JSON array file (.json[.gz])  ``"data/train.json record 3"`` (1-based position in the array)
    list of dicts                 ``"rows[2]"`` (0-based, as Python indexes the list)
    ``datasets.Dataset``          ``"dataset[2]"`` (0-based, as the Dataset indexes)
    ============================  =========================================================

Lists that remember where their items came from (:class:`LocatedList`, the base of ``Rows`` and
``Examples``) find an item's location by the item's identity, so it survives shuffling or reordering
the list in place; an item that was replaced or copied is named by its index (``"row i"``) instead.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DataError", "LocatedList"]


class DataError(ValueError):
    """A row that cannot be used, or a source that cannot be read.

    Attributes:
        location: where the row is (see the module docstring), or the source alone for a whole-source
            problem (no rows, undetectable format); None when unknown.
        field: the offending column (``"chosen"``, ``"messages[2].content"``), or None for the whole row.
        problem: what is wrong, without the location.
        source: the file path as given, ``"rows"`` or ``"dataset"``; None when unknown.
        row: the row number as printed in ``location`` (1-based for files, 0-based for in-memory sources).
    """

    def __init__(
        self,
        problem: str,
        *,
        location: str | None = None,
        field: str | None = None,
        source: str | None = None,
        row: int | None = None,
    ):
        parts = [p for p in (location, f"field {field!r}" if field else None) if p]
        super().__init__(": ".join([*parts, problem]) if parts else problem)
        self.problem = problem
        self.location = location
        self.field = field
        self.source = source
        self.row = row

    def at(self, location: str, source: str | None = None, row: int | None = None) -> DataError:
        """The same problem, placed at ``location`` (for errors raised by helpers that do not know it)."""
        return DataError(self.problem, location=location, field=self.field, source=source, row=row)


class LocatedList(list):
    """A ``list`` whose items remember their source location (see the module docstring).

    ``where(i)`` is the location of the item now at index i: the one recorded for that very object, or
    ``f"{fallback} {i}"`` when the object was not among the items the list was built with.
    """

    fallback = "row"

    def __init__(self, items: Iterable = (), *, locations: list[str] | None = None):
        super().__init__(items)
        if locations is not None and len(locations) != len(self):
            raise ValueError(f"{len(self)} items but {len(locations)} locations")
        self._origin = list(self)  # keeps the originals alive, so their ids stay unique
        self._located = {id(item): k for k, item in enumerate(self._origin)} if locations is not None else {}
        self._locations = list(locations) if locations is not None else []

    def where(self, i: int) -> str:
        item = self[i]
        k = self._located.get(id(item))
        if k is not None and self._origin[k] is item:
            return self._locations[k]
        return f"{self.fallback} {i}"

    @property
    def locations(self) -> list[str]:
        """``[where(i) for i in range(len(self))]``."""
        return [self.where(i) for i in range(len(self))]
