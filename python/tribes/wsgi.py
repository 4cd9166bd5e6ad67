"""WSGI replication middleware (Tomcat's ``ReplicationValve`` + ``JvmRouteBinderValve`` for WSGI apps).

::

    app = tribes.wsgi.ReplicationMiddleware(app, cluster.manager("shop"))

The session is ``environ["tribes.session"]`` (a :class:`tribes.web.RequestSession`: a mutable mapping,
created on first write). When the application returns, the session's changes are committed (in
``ack`` mode they are on the other members before the response starts), unless the path matches
``filter``; the ``Set-Cookie`` header is added when the session is new, re-bound or rotated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .managers import SessionManager
from .web import Replicator

__all__ = ["ReplicationMiddleware"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

ENVIRON_KEY = "tribes.session"


class ReplicationMiddleware:
    """Wraps a WSGI application; ``options`` are :class:`tribes.web.Replicator`'s (``filter``,
    ``cookie_name``, ``cookie_path``, ``cookie_domain``, ``cookie_secure``, ``cookie_httponly``,
    ``cookie_samesite``)."""

    def __init__(self, app: WSGIApp, manager: SessionManager, **options: Any) -> None:
        """Wrap ``app``; sessions come from ``manager``."""
        self.app = app
        self.replicator = Replicator(manager, **options)

    def stats(self) -> dict[str, int]:
        """Requests replicated, filtered (static paths), unchanged, sessions created, re-bound, …"""
        return self.replicator.stats.snapshot()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        replicator = self.replicator
        request = replicator.open(environ.get("HTTP_COOKIE"))
        environ[ENVIRON_KEY] = request
        path = environ.get("PATH_INFO", "") or "/"
        captured: dict[str, Any] = {}

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], Any]:
            captured["args"] = (status, list(headers), exc_info)
            return lambda data: captured.setdefault("early", []).append(data)

        # The application's body is produced before the response starts, so that the session is
        # committed (and in ack mode on the other members) before the first byte goes out.
        body = self.app(environ, capture)
        try:
            chunks = list(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        cookie = replicator.close(request, path)
        status, headers, exc_info = captured["args"]
        if cookie is not None:
            headers.append(("Set-Cookie", cookie))
        write = start_response(status, headers, exc_info) if exc_info else start_response(status, headers)
        for data in captured.get("early", []):
            write(data)
        return chunks
