"""Flask adapter: replicated server-side sessions through Flask's ``SessionInterface`` (``tribes[flask]``).

::

    cluster = tribes.Cluster(tribes.ClusterConfig.from_file("cluster.toml"))
    cluster.start()                                   # in each worker process, after any fork
    tribes.flask.init_app(app, cluster.manager("shop"))

Flask's ``session`` is then a :class:`TribesFlaskSession`: a mapping backed by a tribes session, which
is created on the first write (a request that never writes one creates nothing and sets no cookie).
At the end of each request the session's changes are committed (with ``send_mode="ack"`` they are on
the other members before the response leaves), including values changed in place
(``session["cart"].append(item)``: no ``session.modified = True`` needed, though setting it is
harmless and re-sends the cookie). Paths that fully match ``filter`` (default: static files, see
:data:`tribes.web.DEFAULT_FILTER`) commit only real changes.

- ``session.clear()`` (the usual logout) ends the session on every member and deletes the cookie;
  ``session.invalidate()`` does the same explicitly, ``session.cycle_id()`` rotates the id (after
  login).
- ``session.permanent = True`` gives the cookie an expiry date (``PERMANENT_SESSION_LIFETIME``) and
  the session the same idle timeout on every member (``max_inactive``); otherwise the manager's
  ``max_inactive`` applies and the cookie ends with the browser.
- Values go through tribes' codec (``None``, ``bool``, numbers, ``str``, ``bytes``, lists, tuples,
  dicts, sets, dates, times, ``UUID``, ``Decimal``); anything else raises ``TypeError`` when set.
- The cookie follows Flask's settings (``SESSION_COOKIE_NAME``, ``_PATH``, ``_DOMAIN``, ``_SECURE``,
  ``_HTTPONLY``, ``_SAMESITE``, ``_PARTITIONED``) unless ``cookie_name`` etc. are given to the
  interface (:class:`tribes.web.Replicator`'s options).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin

from ._frameworks import FrameworkReplicator
from .managers import SessionManager
from .web import DEFAULT_FILTER, RequestSession

__all__ = ["TribesFlaskSession", "TribesSessionInterface", "init_app"]

_COOKIE_OPTIONS = (
    "cookie_name",
    "cookie_path",
    "cookie_domain",
    "cookie_secure",
    "cookie_httponly",
    "cookie_samesite",
)


class TribesFlaskSession(SessionMixin):
    """Flask's ``session`` for one request: a mapping over a :class:`tribes.web.RequestSession`.

    ``modified`` is True when the request changed the session (in-place changes included); ``new`` is
    True when the session was created by this request (or has no id yet).
    """

    def __init__(self, request: RequestSession, path: str) -> None:
        """Internal: made by :meth:`TribesSessionInterface.open_session`."""
        self._request = request
        self._path = path
        self._touched = False  # the application used the session: only then is it loaded at the end
        self._forced = False  # ``session.modified = True``: re-send the cookie
        self.accessed = False

    @property
    def request_session(self) -> RequestSession:
        """The underlying :class:`tribes.web.RequestSession`."""
        return self._request

    def _use(self) -> RequestSession:
        self._touched = True
        return self._request

    # -- Flask's attributes ---------------------------------------------------------------------------

    @property
    def modified(self) -> bool:
        """True when this request changed the session; setting it to True re-sends the cookie (the
        change itself is found by tribes either way)."""
        if self._forced:
            return True
        session = self._request._session if self._touched else None
        # Attribute changes only (in-place ones included): RequestSession.modified also counts the
        # is-new flag that tribes clears when the client comes back, which the application did not do.
        return session is not None and session.valid and bool(session._changes()[0])

    @modified.setter
    def modified(self, value: bool) -> None:
        self._forced = bool(value)
        if value:
            self._touched = True

    @property
    def new(self) -> bool:
        """True when the request has no session yet, or created it."""
        return self._use().is_new

    @new.setter
    def new(self, value: bool) -> None:
        raise AttributeError("session.new is read-only: tribes knows whether the session is new")

    # -- tribes' own --------------------------------------------------------------------------------

    @property
    def id(self) -> str | None:
        """The session id, or None when the request has no session."""
        return self._use().id

    def cycle_id(self) -> str:
        """Rotate the session id (fixation defence after login), keeping the data; the new cookie is sent."""
        return self._use().cycle_id()

    def invalidate(self) -> None:
        """End the session on every member; the cookie is deleted."""
        self._use().invalidate()

    # -- the mapping --------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        return self._use()[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._use()[name] = value

    def __delitem__(self, name: str) -> None:
        del self._use()[name]

    def __contains__(self, name: object) -> bool:
        return name in self._use()

    def __iter__(self) -> Iterator[str]:
        return iter(self._use())

    def __len__(self) -> int:
        return len(self._use())

    def __repr__(self) -> str:
        return f"<tribes.flask.TribesFlaskSession {self._request.id if self._touched else '(not loaded)'}>"


class TribesSessionInterface(SessionInterface):
    """A Flask ``SessionInterface`` keeping sessions in a tribes manager (``app.session_interface = …``).

    ``replicator_options`` are :class:`tribes.web.Replicator`'s: ``filter`` (regex of paths that do
    not replicate unchanged sessions; default static files), and ``cookie_name``, ``cookie_path``,
    ``cookie_domain``, ``cookie_secure``, ``cookie_httponly``, ``cookie_samesite``, which default to
    the application's ``SESSION_COOKIE_*`` settings. No secret key is needed: the cookie holds only a
    random id.
    """

    pickle_based = False

    def __init__(self, manager: SessionManager, **replicator_options: Any) -> None:
        """Sessions come from ``manager`` (its cluster is started by the application, after any fork)."""
        if not isinstance(manager, SessionManager):
            raise TypeError(f"manager must be a tribes session manager, got {type(manager).__name__}")
        unknown = set(replicator_options) - {"filter", *_COOKIE_OPTIONS}
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        self.manager = manager
        self._options = replicator_options
        self._lock = threading.Lock()
        # One replicator per application, made on its first request: the cookie follows its config.
        self._replicators: weakref.WeakKeyDictionary[Flask, FrameworkReplicator] = weakref.WeakKeyDictionary()

    def replicator(self, app: Flask) -> FrameworkReplicator:
        """The :class:`tribes.web.Replicator` serving ``app`` (its cookie settings and counters)."""
        found = self._replicators.get(app)
        if found is not None:
            return found
        with self._lock:
            found = self._replicators.get(app)
            if found is None:
                options: dict[str, Any] = {
                    "filter": DEFAULT_FILTER,
                    "cookie_name": self.get_cookie_name(app),
                    "cookie_path": self.get_cookie_path(app) or "/",
                    "cookie_domain": self.get_cookie_domain(app),
                    "cookie_secure": bool(self.get_cookie_secure(app)),
                    "cookie_httponly": bool(self.get_cookie_httponly(app)),
                    "cookie_samesite": self.get_cookie_samesite(app),
                }
                options.update(self._options)
                found = FrameworkReplicator(self.manager, **options)
                self._replicators[app] = found
        return found

    def stats(self, app: Flask | None = None) -> dict[str, int]:
        """Requests replicated, filtered, unchanged, sessions created, re-bound, … of ``app`` (default:
        summed over every application using this interface)."""
        replicators = [self.replicator(app)] if app is not None else list(self._replicators.values())
        total: dict[str, int] = {}
        for replicator in replicators:
            for key, value in replicator.stats.snapshot().items():
                total[key] = total.get(key, 0) + value
        return total

    def open_session(self, app: Flask, request: Request) -> TribesFlaskSession:
        """The request's session, loaded when first used."""
        replicator = self.replicator(app)
        return TribesFlaskSession(replicator.open(request.headers.get("Cookie")), request.path)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Commit the request's changes (unless the path is filtered and nothing changed) and set or
        delete the cookie."""
        if not isinstance(session, TribesFlaskSession):
            return
        replicator = self.replicator(app)
        request = session.request_session
        if session.accessed:
            response.vary.add("Cookie")
        permanent = False
        if session._touched:
            tribes_session = request.session
            if tribes_session is not None and tribes_session.valid:
                permanent = session.permanent
                lifetime = int(app.permanent_session_lifetime.total_seconds())
                if permanent and lifetime > 0 and tribes_session.max_inactive != lifetime:
                    tribes_session.max_inactive = lifetime
        header = replicator.close(request, session._path)
        sid = request.id if session._touched or header is not None else None
        cookie = replicator.cookie
        partitioned = self.get_cookie_partitioned(app)
        attributes: dict[str, Any] = {
            "path": cookie.path,
            "domain": cookie.domain,
            "secure": cookie.secure,
            "httponly": cookie.httponly,
            "samesite": _samesite(cookie.samesite),
            "partitioned": partitioned,
        }
        if header is not None and sid is None:
            response.delete_cookie(cookie.name, **attributes)
            response.vary.add("Cookie")
            return
        refresh = sid is not None and (
            session._forced or (permanent and app.config["SESSION_REFRESH_EACH_REQUEST"])
        )
        if sid is None or (header is None and not refresh):
            return
        expires = datetime.now(UTC) + app.permanent_session_lifetime if permanent else None
        response.set_cookie(cookie.name, sid, expires=expires, **attributes)
        response.vary.add("Cookie")


def _samesite(value: str | None) -> str | None:
    return None if value is None else value.capitalize()


def init_app(app: Flask, manager: SessionManager, **replicator_options: Any) -> TribesSessionInterface:
    """Make ``app`` keep its sessions in ``manager``; returns the interface (``.stats()``).

    ``replicator_options``: see :class:`TribesSessionInterface`.
    """
    interface = TribesSessionInterface(manager, **replicator_options)
    app.session_interface = interface
    app.extensions["tribes"] = interface
    return interface
