"""Users, their API tokens and which exports are whose, in the registry's SQLite file.

A token is shown once, when made, and stored only as its sha256: a stolen registry file gives no
access. Exports made through the service are linked to the user who asked (the registry's own
table knows nothing of users); the server's signing secret lives here too, so sessions and
signed links survive a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError, UsageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS pipeline_user (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pipeline_token (
    sha256 TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES pipeline_user (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pipeline_serve_export (
    export_id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES pipeline_user (id) ON DELETE CASCADE,
    document_id INTEGER,
    document_name TEXT NOT NULL,
    format TEXT NOT NULL,
    options TEXT NOT NULL,
    created_at TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS pipeline_serve_export_user ON pipeline_serve_export (user_id, created_at);
CREATE TABLE IF NOT EXISTS pipeline_session (
    sha256 TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES pipeline_user (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pipeline_serve_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    secret TEXT NOT NULL
);
"""

#: a token: a prefix that says what it is (for secret scanners), then 256 random bits
TOKEN_PREFIX = "pipe_"


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Owned:
    """An export made through the service: who asked, for what (before the registry knows it)."""

    export_id: str
    user_id: int
    document_id: int | None
    document_name: str
    format: str
    options: str
    created_at: str
    error: str | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Accounts:
    """The service's tables in ``path`` (the registry file; created if needed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with self._connect() as db:
                db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise PipelineError(f"{self.path}: cannot keep users in it: {exc}") from None

    def _connect(self) -> closing[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA foreign_keys = ON")
        return closing(db)

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._connect() as db:
                return db.execute(sql, params).fetchall()
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise PipelineError(f"{self.path}: users: {exc}") from None

    # --- users and tokens ---------------------------------------------------------------------

    def add_user(self, name: str) -> str:
        """A new user and their first token (returned: it is never shown again)."""
        if not name.strip() or name != name.strip() or len(name) > 150:
            raise UsageError(f"user name {name!r}: give a non-empty name without surrounding spaces")
        try:
            self._execute("INSERT INTO pipeline_user (name, created_at) VALUES (?, ?)", (name, _now()))
        except sqlite3.IntegrityError:
            raise UsageError(f"{self.path}: user {name!r} exists already (new token: users token)") from None
        return self.new_token(name)

    def new_token(self, name: str) -> str:
        """Another token for ``name`` (the old ones keep working until revoked)."""
        user = self.user(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._execute("INSERT INTO pipeline_token (sha256, user_id, created_at) VALUES (?, ?, ?)",
                      (_digest(token), user.id, _now()))
        return token

    def revoke(self, name: str) -> int:
        """Remove every token of ``name``, and end their sessions (logged in with a token);
        returns how many tokens."""
        user = self.user(name)
        count = self._execute("SELECT count(*) FROM pipeline_token WHERE user_id = ?", (user.id,))[0][0]
        self._execute("DELETE FROM pipeline_token WHERE user_id = ?", (user.id,))
        self._execute("DELETE FROM pipeline_session WHERE user_id = ?", (user.id,))
        return int(count)

    # --- sessions -----------------------------------------------------------------------------

    def open_session(self, user: User, max_age: timedelta) -> str:
        """A new session of ``user`` (its id goes into the signed cookie; only its sha256 is
        kept here); sessions older than ``max_age`` are dropped on the way."""
        session = secrets.token_urlsafe(32)
        limit = (datetime.now(UTC) - max_age).isoformat(timespec="seconds")
        self._execute("DELETE FROM pipeline_session WHERE created_at < ?", (limit,))
        self._execute("INSERT INTO pipeline_session (sha256, user_id, created_at) VALUES (?, ?, ?)",
                      (_digest(session), user.id, _now()))
        return session

    def session_user(self, session: str, max_age: timedelta) -> User | None:
        """The user of a session still open (not logged out, not older than ``max_age``)."""
        limit = (datetime.now(UTC) - max_age).isoformat(timespec="seconds")
        rows = self._execute("SELECT u.id, u.name FROM pipeline_session s JOIN pipeline_user u"
                             " ON u.id = s.user_id WHERE s.sha256 = ? AND s.created_at >= ?",
                             (_digest(session), limit))
        return User(*rows[0]) if rows else None

    def close_session(self, session: str) -> None:
        """Log out: the session's cookie is worth nothing from now on, wherever a copy of it is."""
        self._execute("DELETE FROM pipeline_session WHERE sha256 = ?", (_digest(session),))

    def user(self, name: str) -> User:
        rows = self._execute("SELECT id, name FROM pipeline_user WHERE name = ?", (name,))
        if not rows:
            raise UsageError(f"{self.path}: no user {name!r}")
        return User(*rows[0])

    def users(self) -> Iterator[tuple[User, int]]:
        """Every user with their number of tokens."""
        rows = self._execute("SELECT u.id, u.name, count(t.sha256) FROM pipeline_user u"
                             " LEFT JOIN pipeline_token t ON t.user_id = u.id GROUP BY u.id ORDER BY u.name")
        return ((User(i, n), c) for i, n, c in rows)

    def authenticate(self, token: str) -> User | None:
        """The user a token belongs to, or None. Looked up by digest: the comparison is of hashes,
        so its timing says nothing about the token."""
        rows = self._execute("SELECT u.id, u.name FROM pipeline_token t JOIN pipeline_user u"
                             " ON u.id = t.user_id WHERE t.sha256 = ?", (_digest(token),))
        return User(*rows[0]) if rows else None

    # --- whose exports ------------------------------------------------------------------------

    def own(self, export_id: str, user: User, *, document_id: int | None, document_name: str,
            format: str, options: str) -> None:
        self._execute(
            "INSERT INTO pipeline_serve_export (export_id, user_id, document_id, document_name, format,"
            " options, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (export_id, user.id, document_id, document_name, format, options, _now()))

    def failed(self, export_id: str, error: str) -> None:
        """An export that failed before the registry recorded it (e.g. an unknown layer)."""
        self._execute("UPDATE pipeline_serve_export SET error = ? WHERE export_id = ?", (error, export_id))

    def owned(self, user: User) -> list[Owned]:
        """The user's exports, newest first."""
        rows = self._execute("SELECT * FROM pipeline_serve_export WHERE user_id = ?"
                             " ORDER BY created_at DESC, rowid DESC", (user.id,))
        return [Owned(*row) for row in rows]

    def find(self, export_id: str, user: User) -> Owned | None:
        """The export if it is ``user``'s (exact id: never a prefix), else None."""
        rows = self._execute("SELECT * FROM pipeline_serve_export WHERE export_id = ? AND user_id = ?",
                             (export_id, user.id))
        return Owned(*rows[0]) if rows else None

    def find_any(self, export_id: str) -> Owned | None:
        """The export whoever owns it (for a signed link, which carries no user)."""
        rows = self._execute("SELECT * FROM pipeline_serve_export WHERE export_id = ?", (export_id,))
        return Owned(*rows[0]) if rows else None

    def forget(self, export_id: str) -> None:
        self._execute("DELETE FROM pipeline_serve_export WHERE export_id = ?", (export_id,))

    # --- the signing secret -------------------------------------------------------------------

    def secret(self) -> str:
        """The server's signing key (sessions, CSRF, signed links), made on first use."""
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO pipeline_serve_secret (id, secret) VALUES (1, ?)",
                       (secrets.token_urlsafe(48),))
            return str(db.execute("SELECT secret FROM pipeline_serve_secret WHERE id = 1").fetchone()[0])


def sign(secret: str, message: str) -> str:
    """An HMAC-SHA256 of ``message`` (hex)."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
