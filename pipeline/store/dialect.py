"""The one seam between eScriptorium-shaped SQL and the database it runs on.

The reader's statements are written once, with ``?`` and ``:name`` placeholders, named columns,
``"order"`` quoted and no JSON operators. A :class:`Dialect` says how one database differs:
its placeholders, whether geometry and timestamps arrive as text (SQLite) or already decoded
(PostgreSQL's ``jsonb`` and ``timestamptz``), and where part image sizes come from (this store's
``pipeline_image_size`` table; eScriptorium stores none, so they are read from image headers).
:class:`Db` runs statements through a dialect; the reader sees nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

from pipeline.errors import CorpusError
from pipeline.model import Polygon

_PLACEHOLDER = re.compile(r"\?|(?<![:\w]):([A-Za-z_]\w*)")
_ANY = re.compile(r"= ANY\(:([A-Za-z_]\w*)\)")


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database differs from the SQL the reader writes (SQLite's, by default)."""

    name: str
    #: what ``?`` and ``:name`` become (``{}`` is the name)
    positional: str = "?"
    named: str = ":{}"
    #: geometry columns hold JSON text, timestamp columns ISO 8601 text
    json_as_text: bool = True
    timestamps_as_text: bool = True
    #: part columns giving the image width and height, and the join that provides them
    image_size_columns: str = "s.width, s.height"
    image_size_join: str = "LEFT JOIN pipeline_image_size s ON s.part_id = p.id"
    #: a list of ids ``= ANY(:ids)`` is passed as an array; else as JSON text read by ``json_each``
    arrays: bool = False
    _cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def sql(self, text: str) -> str:
        """``text`` with this database's placeholders, id lists and image size columns."""
        if text not in self._cache:
            out = text.replace("{sizes}", self.image_size_columns)
            out = out.replace("{size_join}", self.image_size_join)
            if not self.arrays:
                out = _ANY.sub(r"IN (SELECT value FROM json_each(:\1))", out)
            if self.positional != "?" or self.named != ":{}":
                out = _PLACEHOLDER.sub(lambda m: self.named.format(m[1]) if m[1] else self.positional, out)
            self._cache[text] = out
        return self._cache[text]

    def params(self, params: Sequence[Any] | Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """Parameters as this database takes them: id lists as JSON text where there are no arrays."""
        if self.arrays or not isinstance(params, Mapping):
            return params
        return {k: json.dumps(list(v)) if isinstance(v, list | tuple) else v for k, v in params.items()}

    def timestamp(self, value: str | datetime | None) -> datetime | None:
        """A stored timestamp as a datetime; CorpusError for text that is not ISO 8601."""
        if value is None or isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(value)
        except ValueError as exc:
            raise CorpusError(f"bad timestamp {value!r} in corpus") from exc

    def polygons(self, values: Sequence[Any], what: Callable[[int], str]) -> list[Polygon | None]:
        """Point lists ``[[x, y], ...]`` (NULL or ``[]`` give None); ``what(i)`` names the i-th one
        in an error. JSON text is decoded with one decoder call for a part's worth: the per-call
        overhead of ``json.loads`` is most of the cost of small polygons."""
        decoded = _decode_all(values, what) if self.json_as_text else list(values)
        result: list[Polygon | None] = []
        for i, points in enumerate(decoded):
            if points is None:
                result.append(None)
                continue
            try:
                shaped = tuple(map(tuple, points))
            except TypeError:
                shaped = ((),)
            if shaped and set(map(len, shaped)) != {2}:
                raise CorpusError(f"bad polygon in {what(i)}: {str(values[i])[:80]!r}")
            result.append(shaped or None)
        return result


def parse_polygons(texts: Sequence[str | None], what: Callable[[int], str]) -> list[Polygon | None]:
    """JSON point lists as text (SQLite's columns; PostgreSQL ``jsonb`` loaded as text) → points."""
    return SQLITE.polygons(texts, what)


def _decode_all(texts: Sequence[str | None], what: Callable[[int], str]) -> list[Any]:
    try:
        decoded = json.loads(f"[{','.join('null' if t is None else t for t in texts)}]")
        if len(decoded) != len(texts):
            raise ValueError("a polygon is not one JSON value")
    except ValueError as exc:
        bad = next((i for i, t in enumerate(texts) if t is not None and not _is_json(t)), 0)
        raise CorpusError(f"bad polygon in {what(bad)}: {str(texts[bad])[:80]!r}") from exc
    return decoded


@lru_cache(maxsize=1024)
def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


#: this store's own database
SQLITE = Dialect("sqlite")
#: eScriptorium's (psycopg, with ``jsonb`` loaded as text so geometry is parsed as from SQLite;
#: no image sizes are stored there)
POSTGRES = Dialect("postgresql", positional="%s", named="%({})s", timestamps_as_text=False,
                   image_size_columns="NULL, NULL", image_size_join="", arrays=True)


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def close(self) -> None: ...

    def __iter__(self) -> Any: ...


class Connection(Protocol):
    """What the reader needs of a DB-API connection (sqlite3's, psycopg's)."""

    def execute(self, sql: str, params: Any = ...) -> Cursor: ...


class Db:
    """A connection and its dialect: statements go through :meth:`Dialect.sql`."""

    __slots__ = ("connection", "dialect")

    def __init__(self, connection: Connection, dialect: Dialect = SQLITE) -> None:
        self.connection, self.dialect = connection, dialect

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        return self.connection.execute(self.dialect.sql(sql), self.dialect.params(params))
