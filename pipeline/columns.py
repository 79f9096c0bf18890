"""A writer's batch kept by shape, from the readings on, so a store can write it column by column
without a Python object per value.

Points are appended as they arrive (``add``) to the buffer of their *shape*: the measurement and the
field names in the point's order.  Fleet traffic is ordered by time across homes, so a batch holds each
series about once but only a handful of shapes (a meter's power; a meter's power with its counters; an
inverter's power and state...).  A shape's buffer keeps one row per point: its place in the batch, the
series (household, device, source), the timestamp and the values, laid end to end in one flat list
(appending a point extends it by one short-lived tuple).  Flat, a column is a strided slice
(``Shape.columns``: one C-level copy each, no transposition of row tuples), and a batch waiting to be
written holds no object per row for the garbage collector to scan (row tuples were ~8% of a fleet
ingest's CPU in collections).  Encoders take each column at once (``pipeline.lineproto``: polars
formats a column of numbers in one call).

The batch is also a ``Sequence[Point]`` in arrival order, for whatever wants points one by one (the
spool, a store with no column path, tests): those are made on demand.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, overload

from pipeline.points import Point, PointValue

# Row layout: (position, household, device, source, ts_ns, *values)
POSITION: Final = 0
HOUSEHOLD: Final = 1
DEVICE: Final = 2
SOURCE: Final = 3
TS: Final = 4
VALUES: Final = 5


class Shape:
    """The rows of one (measurement, field names) shape, in arrival order, end to end in ``flat``
    (``width`` items a row: position, household, device, source, ts_ns, then one per field)."""

    __slots__ = ("flat", "measurement", "names", "width")

    def __init__(self, measurement: str, names: tuple[str, ...]) -> None:
        self.measurement = measurement
        self.names = names
        self.width = VALUES + len(names)
        self.flat: list[Any] = []

    def __len__(self) -> int:
        return len(self.flat) // self.width

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        """One tuple a row (for readers that go row by row)."""
        return list(zip(*self.columns(), strict=True))

    def columns(self) -> list[list[Any]]:
        """Positions, households, devices, sources, timestamps, then one column per field."""
        flat, width = self.flat, self.width
        return [flat[i::width] for i in range(width)]

    def positions(self) -> list[int]:
        """The rows' places in their batch (ascending: rows are appended in arrival order)."""
        return self.flat[POSITION :: self.width]

    def point(self, row: int) -> Point:
        r = self.flat[row * self.width : (row + 1) * self.width]
        fields = dict(zip(self.names, r[VALUES:], strict=True))
        return Point(self.measurement, r[HOUSEHOLD], r[DEVICE], r[SOURCE], r[TS], fields)


class ColumnBatch(Sequence[Point]):
    """Points appended in arrival order, kept by shape (see the module docstring)."""

    __slots__ = ("_base", "_by_measurement", "_index", "_next", "_shapes")

    def __init__(self, points: Iterable[Point] = ()) -> None:
        self._shapes: dict[tuple[str, ...], Shape] = {}  # (measurement, *names), in order of arrival
        # ``add``'s way to the same Shape objects: measurement -> names -> shape.  ``tuple(fields)`` is
        # made in C where ``(measurement, *fields)`` is built through a list; a shape missing here is
        # looked up in (or added to) ``_shapes``, so this only caches and never decides the order.
        self._by_measurement: dict[str, dict[tuple[str, ...], Shape]] = {}
        self._base = 0  # rows' positions count from here (a chunk of a larger batch keeps its rows)
        self._next = 0  # the next row's position: ``_base`` + the number of points
        self._index: list[tuple[Shape, int]] = []  # by position; rebuilt when points were added since
        for p in points:
            self.add(p.measurement, p.household, p.device, p.source, p.ts_ns, p.fields)

    def add(
        self,
        measurement: str,
        household: str,
        device: str,
        source: str,
        ts_ns: int,
        fields: Mapping[str, PointValue],
    ) -> None:
        """Append one point (``fields`` is read now, not kept).  Called once per reading at fleet
        rates: one tuple of the field names to find the shape, one short tuple of the row's position
        and series, and the values straight from the dict (no list is built to unpack them into)."""
        try:
            shape = self._by_measurement[measurement][tuple(fields)]
        except KeyError:
            shape = self._shape_for(measurement, tuple(fields))
        flat = shape.flat
        flat += (self._next, household, device, source, ts_ns)
        flat += fields.values()
        self._next += 1

    def _shape_for(self, measurement: str, names: tuple[str, ...]) -> Shape:
        """The buffer of a shape ``add`` has not cached yet (made if the batch has none), cached."""
        key = (measurement, *names)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = Shape(measurement, names)
        self._by_measurement.setdefault(measurement, {})[names] = shape
        return shape

    def extend(self, other: ColumnBatch) -> None:
        """Append every point of ``other`` after this batch's, in ``other``'s order (its rows are
        copied and re-numbered; no ``Point`` is made)."""
        shift = self._next - other._base
        for key, shape in other._shapes.items():
            mine = self._shapes.get(key)
            if mine is None:
                mine = self._shapes[key] = Shape(shape.measurement, shape.names)
            start = len(mine.flat)
            mine.flat += shape.flat
            if shift:
                mine.flat[start + POSITION :: mine.width] = [at + shift for at in shape.positions()]
        self._next += len(other)

    def households(self) -> set[str]:
        """Every household the batch writes."""
        return {h for shape in self._shapes.values() for h in shape.flat[HOUSEHOLD :: shape.width]}

    def shapes(self) -> list[Shape]:
        """Every shape's buffer, in the order the shapes first arrived."""
        return list(self._shapes.values())

    def chunks(self, size: int) -> list[ColumnBatch]:
        """Consecutive batches of at most ``size`` points, in order, each a slice of this one's rows
        (no ``Point`` is made, as slicing would)."""
        if len(self) <= size:
            return [self]
        out = []
        for start in range(self._base, self._next, size):
            chunk = ColumnBatch()
            chunk._base = start
            chunk._next = min(start + size, self._next)
            out.append(chunk)
        for key, shape in self._shapes.items():
            # A shape's positions ascend, so each chunk takes one run of its rows.
            at, width, row = shape.positions(), shape.width, 0
            while row < len(at):
                index = (at[row] - self._base) // size
                end = bisect.bisect_left(at, self._base + (index + 1) * size, row)
                part = out[index]._shapes[key] = Shape(shape.measurement, shape.names)
                part.flat = shape.flat[row * width : end * width]
                row = end
        return out

    def __len__(self) -> int:
        return self._next - self._base

    def _where(self) -> list[tuple[Shape, int]]:
        index = self._index
        if len(index) != len(self):
            found: list[tuple[Shape, int] | None] = [None] * len(self)
            for shape in self._shapes.values():
                for row, at in enumerate(shape.positions()):
                    found[at - self._base] = (shape, row)
            index = self._index = [w for w in found if w is not None]
        return index

    @overload
    def __getitem__(self, i: int) -> Point: ...

    @overload
    def __getitem__(self, i: slice) -> ColumnBatch: ...

    def __getitem__(self, i: int | slice) -> Point | ColumnBatch:
        where = self._where()
        if isinstance(i, slice):
            return ColumnBatch(shape.point(row) for shape, row in where[i])
        shape, row = where[i]
        return shape.point(row)

    def __iter__(self) -> Iterator[Point]:
        for shape, row in self._where():
            yield shape.point(row)
