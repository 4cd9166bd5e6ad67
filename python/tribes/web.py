"""What the web integrations share: the session cookie, the lazy per-request session, replication at the
end of the request, and failover re-binding (Tomcat's ``ReplicationValve`` and ``JvmRouteBinderValve``).

:class:`Replicator` holds the settings and the counters; each request gets a :class:`RequestSession`
from :meth:`Replicator.open` and hands it back to :meth:`Replicator.close`, which commits (unless the path
matches the static-resource ``filter``) and says which ``Set-Cookie`` header to send. ``tribes.wsgi``,
``tribes.asgi`` and the framework adapters are thin layers over these two calls.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from .cluster import ROUTE_PAYLOAD_PREFIX
from .errors import ChannelError
from .managers import SessionManager
from .session import Session

__all__ = [
    "DEFAULT_FILTER",
    "ROUTE_PAYLOAD_PREFIX",
    "Replicator",
    "RequestSession",
    "WebStats",
    "session_id_in",
]

_log = logging.getLogger("tribes.web")

DEFAULT_FILTER = r".*\.(gif|js|jpeg|jpg|png|htm|html|css|txt|ico|svg|woff2?)"
"""Tomcat's documented static endings: requests whose path fully matches are not replicated."""


# 32 hex digits (128 bits from the OS CSPRNG), then an optional route. Anything else starts a new session.
_ID = re.compile(r"[0-9A-F]{32}(?:\.([A-Za-z0-9_-]{1,64}))?")
_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


class WebStats:
    """Counters of a replicator, like Tomcat's ReplicationValve statistics (thread-safe)."""

    FIELDS = (
        "requests",
        "replicated",
        "filtered",
        "unchanged",
        "created",
        "rebound",
        "cycled",
        "invalidated",
        "replication_failures",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.FIELDS, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def request(self, outcome: str | None) -> None:
        """Count one request and its outcome (``replicated``, ``unchanged``, ``filtered``,
        ``replication_failures``, or None): one lock per request."""
        with self._lock:
            counts = self._counts
            counts["requests"] += 1
            if outcome is not None:
                counts[outcome] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class RequestSession(MutableMapping[str, Any]):
    """The session of one request: loaded on first use, created on first write.

    Reading from a request without a (valid, known) session id sees an empty mapping and creates
    nothing; the first write creates the session (and so the cookie). ``id`` is None until then.
    """

    def __init__(self, replicator: Replicator, incoming_id: str | None) -> None:
        self._replicator = replicator
        self._incoming = incoming_id
        self._loaded = incoming_id is None
        self._session: Session | None = None
        self._new_cookie = False
        self._invalidated = False
        # What the request's end counts besides the request itself (set when the path is filtered).
        self._outcome: str | None = None

    # -- loading ------------------------------------------------------------------------------------

    def _load(self) -> Session | None:
        if not self._loaded:
            self._loaded = True
            self._session = self._replicator._resume(self, self._incoming)
        return self._session

    def _ensure(self) -> Session:
        session = self._load()
        if session is None:
            session = self._replicator.manager.create()
            self._replicator.stats.add("created")
            self._session = session
            self._new_cookie = True
            self._invalidated = False
        return session

    @property
    def session(self) -> Session | None:
        """The underlying :class:`tribes.Session`, or None if the request has none (yet)."""
        return self._load()

    @property
    def id(self) -> str | None:
        """The session id, or None when the request has no session."""
        session = self._load()
        return None if session is None else session.id

    @property
    def is_new(self) -> bool:
        """True when the session was created by this request (or its client never came back yet)."""
        session = self._load()
        return session is None or session.is_new

    @property
    def modified(self) -> bool:
        """True when this request changed the session."""
        session = self._session
        return session is not None and session.modified

    def cycle_id(self) -> str:
        """Rotate the session id (fixation defence after login); the change replicates and the new
        cookie is sent. Creates the session if there is none."""
        session = self._ensure()
        new_id = session.cycle_id()
        self._new_cookie = True
        self._replicator.stats.add("cycled")
        return new_id

    def invalidate(self) -> None:
        """End the session on every member; the cookie is cleared."""
        session = self._load()
        if session is not None and session.valid:
            session.invalidate()
            self._replicator.stats.add("invalidated")
        self._session = None
        self._invalidated = True
        self._new_cookie = False

    # -- the mapping --------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        session = self._load()
        if session is None:
            raise KeyError(name)
        return session[name]

    def get(self, name: str, default: Any = None) -> Any:
        """The attribute ``name``, or ``default``."""
        session = self._load()
        return default if session is None else session.get(name, default)

    def __setitem__(self, name: str, value: Any) -> None:
        self._ensure()[name] = value

    def __delitem__(self, name: str) -> None:
        session = self._load()
        if session is None:
            raise KeyError(name)
        del session[name]

    def __contains__(self, name: object) -> bool:
        session = self._load()
        return session is not None and name in session

    def __iter__(self) -> Iterator[str]:
        session = self._load()
        return iter(()) if session is None else iter(list(session))

    def __len__(self) -> int:
        session = self._load()
        return 0 if session is None else len(session)

    def __repr__(self) -> str:
        return f"<tribes.web.RequestSession {self.id or '(none)'}>"


@dataclass(frozen=True)
class CookieSettings:
    """The session cookie (Tomcat's ``JSESSIONID``)."""

    name: str = "JSESSIONID"
    path: str = "/"
    domain: str | None = None
    secure: bool = False
    httponly: bool = True
    samesite: str | None = "lax"


_DEFAULT_FILTER_ENDINGS = frozenset(
    ("gif", "js", "jpeg", "jpg", "png", "htm", "html", "css", "txt", "ico", "svg", "woff", "woff2")
)


def _default_filter_matches(path: str) -> bool:
    """``re.fullmatch(DEFAULT_FILTER, path) is not None``, without the regex engine (a request's end
    asks it of every path)."""
    head, dot, ending = path.rpartition(".")
    return bool(dot) and ending in _DEFAULT_FILTER_ENDINGS and "\n" not in head


def session_id_in(cookie_header: str | None, name: str) -> str | None:
    """The well-formed session id in cookie ``name`` of a ``Cookie`` header, or None (absent, or not an id
    tribes issues)."""
    if not cookie_header or name not in cookie_header:
        return None
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            value = value.strip().strip('"')
            if _ID.fullmatch(value):
                return value
    return None


class Replicator:
    """Binds requests to sessions of one manager and replicates them when the request ends.

    ``filter`` is a regex of request paths that never replicate (full match; default: Tomcat's static
    endings); ``None`` or ``""`` replicates every request. Cookie settings: ``cookie_name`` (default
    ``JSESSIONID``), ``cookie_path`` (``/``), ``cookie_domain``, ``cookie_secure`` (False),
    ``cookie_httponly`` (True), ``cookie_samesite`` (``"lax"``; ``"strict"``, ``"none"`` or None).
    """

    def __init__(
        self,
        manager: SessionManager,
        *,
        filter: str | None = DEFAULT_FILTER,
        cookie_name: str = "JSESSIONID",
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        cookie_secure: bool = False,
        cookie_httponly: bool = True,
        cookie_samesite: str | None = "lax",
    ) -> None:
        """See the class docstring."""
        if not isinstance(manager, SessionManager):
            raise TypeError(f"manager must be a tribes session manager, got {type(manager).__name__}")
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", cookie_name or ""):
            raise ValueError(f"invalid cookie name {cookie_name!r}")
        if cookie_samesite is not None and cookie_samesite.lower() not in _SAMESITE:
            raise ValueError(
                f"cookie_samesite must be 'lax', 'strict', 'none' or None, got {cookie_samesite!r}"
            )
        if cookie_samesite is not None and cookie_samesite.lower() == "none" and not cookie_secure:
            raise ValueError("cookie_samesite='none' needs cookie_secure=True (browsers refuse it otherwise)")
        self.manager = manager
        self.cookie = CookieSettings(
            cookie_name, cookie_path, cookie_domain, cookie_secure, cookie_httponly, cookie_samesite
        )
        self.filter = re.compile(filter) if filter else None
        self.stats = WebStats()
        # The default filter is checked without the regex engine (same answer for every path), as
        # long as `filter` is still that pattern.
        self._default_filter = self.filter if filter == DEFAULT_FILTER else None

    def _filtered(self, path: str) -> bool:
        """True when ``path`` fully matches the filter (a static resource)."""
        pattern = self.filter
        if pattern is None:
            return False
        if pattern is self._default_filter:
            return _default_filter_matches(path)
        return pattern.fullmatch(path) is not None

    # -- requests -----------------------------------------------------------------------------------

    def open(self, cookie_header: str | None) -> RequestSession:
        """The session of a request with this ``Cookie`` header (loaded lazily)."""
        return RequestSession(self, self.session_id_from(cookie_header))

    def session_id_from(self, cookie_header: str | None) -> str | None:
        """The well-formed session id in a ``Cookie`` header, or None."""
        return session_id_in(cookie_header, self.cookie.name)

    def _resume(self, request: RequestSession, sid: str | None) -> Session | None:
        """The session a request's id names, re-bound to this member if its route's member is gone."""
        if sid is None:
            return None
        session = self.manager.get(sid)
        if session is None:
            return None  # unknown or expired: a new one starts on first write, never this id
        if session.is_new:
            session.is_new = False  # the client came back with it
        local_route = self._local_route()
        if not local_route:
            return session
        # `sid` is well formed (RequestSession ids come from session_id_in): the route follows the dot.
        route = sid.partition(".")[2] or None
        if route != local_route and not self._route_alive(route):
            # JvmRouteBinderValve: the member in the id is gone; this member takes the session over.
            old = session.id
            try:
                self.manager.change_id(session, route=local_route)
            except ChannelError as exc:
                self.stats.add("replication_failures")
                _log.warning("session %s: re-binding not replicated everywhere: %s", old, exc)
            request._new_cookie = True
            self.stats.add("rebound")
            _log.info("session %s re-bound to route %s as %s", old, local_route, session.id)
        return session

    def _local_route(self) -> str | None:
        return self.manager._cluster.config.route

    def _route_alive(self, route: str | None) -> bool:
        if route is None:
            return False
        return route in self.manager._cluster.member_routes()

    def close(self, request: RequestSession, path: str) -> str | None:
        """End a request: replicate (unless ``path`` matches the filter) and return the ``Set-Cookie``
        header value to send, if any."""
        session = self._to_commit(request, path)
        outcome = request._outcome
        if session is not None:
            try:
                changed = self.manager.commit(session)
            except ChannelError as exc:
                self._replication_failed(session, exc)
                outcome = "replication_failures"
            else:
                outcome = "replicated" if changed else "unchanged"
        self.stats.request(outcome)
        return self._cookie_after(request)

    async def aclose(self, request: RequestSession, path: str) -> str | None:
        """:meth:`close` for asyncio servers: the commit is awaited (see
        :meth:`~tribes.managers.SessionManager.commit_async`), so the event loop keeps serving while
        the other members acknowledge."""
        session = self._to_commit(request, path)
        outcome = request._outcome
        if session is not None:
            try:
                changed = await self.manager.commit_async(session)
            except ChannelError as exc:
                self._replication_failed(session, exc)
                outcome = "replication_failures"
            else:
                outcome = "replicated" if changed else "unchanged"
        self.stats.request(outcome)
        return self._cookie_after(request)

    def _to_commit(self, request: RequestSession, path: str) -> Session | None:
        """The session to commit, or None (none, ended, or a static path that did not change it;
        the latter sets the request's outcome to ``filtered``)."""
        session = request._session
        filtered = self._filtered(path)
        if session is not None and session._valid:
            if filtered and not session.modified:
                request._outcome = "filtered"
                return None
            return session
        if filtered and request._incoming is not None:
            request._outcome = "filtered"
        return None

    def _replication_failed(self, session: Session, exc: ChannelError) -> None:
        # Like Tomcat's valve: the response still goes out (the change is held here and by the
        # members that got it); the failure is counted (by the caller) and logged.
        _log.warning("session %s: replication incomplete: %s", session.id, exc)

    def _cookie_after(self, request: RequestSession) -> str | None:
        session = request._session
        if request._invalidated and request._incoming is not None:
            return self.cookie_header(None)
        if request._new_cookie and session is not None and session.valid:
            return self.cookie_header(session.id)
        return None

    def must_wait(self, request: RequestSession) -> bool:
        """True when ending this request may wait for other members (an acknowledged commit of a
        changed session with members to send to): only then is it worth awaiting."""
        session = request._session
        return (
            session is not None
            and session.valid
            and self.manager.send_mode != "async"
            and bool(self.manager._cluster.members)
            and session.modified
        )

    def cookie_header(self, sid: str | None) -> str:
        """A ``Set-Cookie`` value for ``sid`` (None: one that deletes the cookie)."""
        c = self.cookie
        jar: SimpleCookie = SimpleCookie()
        jar[c.name] = sid or ""
        morsel = jar[c.name]
        morsel["path"] = c.path
        if c.domain:
            morsel["domain"] = c.domain
        if c.secure:
            morsel["secure"] = True
        if c.httponly:
            morsel["httponly"] = True
        if c.samesite:
            morsel["samesite"] = _SAMESITE[c.samesite.lower()]
        if sid is None:
            morsel["max-age"] = 0
            morsel["expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
        return morsel.OutputString()
