"""How the in-memory fakes keep a transaction, as the databases do: a unit of work reads
the rows committed when it began plus its own writes; its writes reach the committed rows
when it commits and are dropped when it ends without a commit (or by an exception). A
fake that kept what the database rolls back would let a unit test pass on a write the
service never makes."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar, runtime_checkable

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


@runtime_checkable
class Transactional(Protocol):
    """A fake repository's part in a unit of work."""

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class StagedRows(Generic[K, V]):
    """One table as one unit of work sees it: `rows` is a copy of the committed rows
    taken at begin(), changed by its writes; commit() copies the rows it wrote into the
    committed ones (others' commits since it began are kept), rollback() drops them.
    Writes after a commit are pending again."""

    def __init__(self, committed: dict[K, V]) -> None:
        self.committed = committed
        self.rows: dict[K, V] = {}
        self._written: set[K] = set()

    def begin(self) -> None:
        self.rows = copy.deepcopy(self.committed)
        self._written.clear()

    def write(self, key: K, row: V) -> None:
        """Store a copy of `row`: a caller changing its object later changes nothing."""
        self.rows[key] = copy.deepcopy(row)
        self._written.add(key)

    def read(self, key: K) -> V | None:
        """A copy of the row, as a read from the database builds it."""
        row = self.rows.get(key)
        return None if row is None else copy.deepcopy(row)

    def __iter__(self) -> Iterator[V]:
        return iter(list(self.rows.values()))

    def commit(self) -> None:
        for key in self._written:
            self.committed[key] = copy.deepcopy(self.rows[key])
        self._written.clear()

    def rollback(self) -> None:
        self.rows = {}
        self._written.clear()


class StagedLog(Generic[T]):
    """Rows only ever added (events, outbox entries): the new ones are pending until
    commit() appends them to the committed list."""

    def __init__(self, committed: list[T]) -> None:
        self.committed = committed
        self.new: list[T] = []

    def begin(self) -> None:
        self.new.clear()

    def extend(self, rows: Iterable[T]) -> None:
        self.new.extend(rows)

    def __iter__(self) -> Iterator[T]:
        return iter([*self.committed, *self.new])

    def __len__(self) -> int:
        return len(self.committed) + len(self.new)

    def commit(self) -> None:
        self.committed.extend(self.new)
        self.new.clear()

    def rollback(self) -> None:
        self.new.clear()


class StagedRepository:
    """A fake repository whose tables are staged (StagedRows, StagedLog): it begins,
    commits and rolls back as they all do. Subclasses list them in `_tables`."""

    _tables: tuple[Transactional, ...] = ()

    def begin(self) -> None:
        for table in self._tables:
            table.begin()

    def commit(self) -> None:
        for table in self._tables:
            table.commit()

    def rollback(self) -> None:
        for table in self._tables:
            table.rollback()


class FakeTransaction:
    """A unit of work over fake repositories: begins each when entered, commits each on
    commit(), rolls each back when left (after a commit, that drops only what was written
    since). Subclasses list their parts in `_parts`."""

    _parts: tuple[Transactional, ...] = ()
    committed = False

    async def __aenter__(self) -> FakeTransaction:
        for part in self._parts:
            part.begin()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for part in self._parts:
            part.rollback()

    async def commit(self) -> None:
        for part in self._parts:
            part.commit()
        self.committed = True
