"""Who is asking: an API token (``Authorization: Bearer``) or a session cookie (signed, set by
the login page), CSRF tokens for what a browser posts, and expiring signed download links.

Every failure is a 401 or 403, never a 500; a token is looked up by its sha256 only.
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

from starlette.requests import Request

from pipeline.serve.accounts import User, same, sign
from pipeline.serve.service import Service

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
#: a signed link lives at most this long
MAX_LINK_SECONDS = 7 * 24 * 3600
#: the session cookie's key naming the server-side session, and how long a session lasts
SESSION_KEY = "session"
SESSION_AGE = timedelta(days=14)


class Unauthorized(Exception):
    """No valid credentials (401)."""


class Forbidden(Exception):
    """Credentials, but not for this (403): a bad CSRF token, a bad or expired signature."""


def service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def user(request: Request) -> User:
    """The asking user (Unauthorized if none). A token wins over a session cookie; the cookie
    names a session kept server-side, so one logged out (or whose user's tokens were revoked, or
    whose user was removed) is no session, even if a copy of the cookie is still signed."""
    token = bearer(request)
    accounts = service(request).accounts
    if token is not None:
        found = accounts.authenticate(token)
        if found is None:
            raise Unauthorized("unknown or revoked token")
        request.state.via = "token"
        return found
    session = request.session.get(SESSION_KEY)
    found = accounts.session_user(session, SESSION_AGE) if isinstance(session, str) else None
    if found is None:
        raise Unauthorized("log in, or send an API token")
    request.state.via = "session"
    return found


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use), for the forms of a page."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = request.session[CSRF_FIELD] = secrets.token_urlsafe(24)
    return token


async def check_csrf(request: Request) -> None:
    """A request that changes something and rides on the session cookie must carry the session's
    CSRF token (a form field or the X-CSRF-Token header); token requests need none (a browser
    never adds an Authorization header by itself)."""
    if request.method in SAFE_METHODS or getattr(request.state, "via", "session") == "token":
        return
    expected = request.session.get(CSRF_FIELD)
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not given or not same(expected, given):
        raise Forbidden("missing or wrong CSRF token (reload the page)")


def log_in(request: Request, user: User) -> None:
    """A new session for ``user``: a new cookie (and so a new CSRF token) naming it."""
    request.session.clear()
    request.session[SESSION_KEY] = service(request).accounts.open_session(user, SESSION_AGE)


def log_out(request: Request) -> None:
    """End the session server-side (a copy of the cookie no longer works) and clear the cookie."""
    session = request.session.get(SESSION_KEY)
    if isinstance(session, str):
        service(request).accounts.close_session(session)
    request.session.clear()


def signed_link(secret: str, export_id: str, seconds: int, *, now: float | None = None) -> tuple[str, int]:
    """A download link for ``export_id`` that works without credentials until it expires."""
    expires = int(now if now is not None else time.time()) + seconds
    signature = sign(secret, f"download:{export_id}:{expires}")
    return f"/exports/{export_id}/download?expires={expires}&signature={signature}", expires


def check_signature(secret: str, export_id: str, expires: str, signature: str) -> None:
    if not expires.isdigit() or len(expires) > 12:
        raise Forbidden("bad link")
    if int(expires) < time.time():
        raise Forbidden("this link has expired")
    if not same(sign(secret, f"download:{export_id}:{expires}"), signature):
        raise Forbidden("bad link signature")
