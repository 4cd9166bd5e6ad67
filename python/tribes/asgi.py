"""ASGI replication middleware (Tomcat's ``ReplicationValve`` + ``JvmRouteBinderValve`` for ASGI apps).

::

    app = tribes.asgi.ReplicationMiddleware(app, cluster.manager("shop"))

The session is ``scope["session"]`` (a :class:`tribes.web.RequestSession`; the application gets a copy
of the scope with it, as the ASGI spec asks of middleware). When the application starts its response,
the session's changes are committed first (in ``ack`` mode they are on the other members before the
response starts), unless the path matches ``filter``; ``Set-Cookie`` is added when the session is
new, re-bound or rotated. Commits that wait for acknowledgements (a changed session, ``ack`` or
``sync`` mode, other members present) are awaited (``SessionManager.commit_async``: no worker thread),
so the event loop keeps serving other requests meanwhile; everything else ends inline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .managers import SessionManager
from .web import Replicator, RequestSession

__all__ = ["ReplicationMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ReplicationMiddleware:
    """Wraps an ASGI application; ``options`` are :class:`tribes.web.Replicator`'s (``filter``,
    ``cookie_name``, ``cookie_path``, ``cookie_domain``, ``cookie_secure``, ``cookie_httponly``,
    ``cookie_samesite``)."""

    def __init__(self, app: ASGIApp, manager: SessionManager, **options: Any) -> None:
        """Wrap ``app``; sessions come from ``manager``."""
        self.app = app
        self.replicator = Replicator(manager, **options)
        # Async commits return at once: nothing to await for them.
        self._inline = manager.send_mode == "async"

    def stats(self) -> dict[str, int]:
        """Requests replicated, filtered (static paths), unchanged, sessions created, re-bound, …"""
        return self.replicator.stats.snapshot()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        replicator = self.replicator
        cookie_header = None
        for key, value in scope.get("headers", ()):
            if key == b"cookie":
                cookie_header = value.decode("latin-1")
                break
        request = replicator.open(cookie_header)
        scope = dict(scope, session=request)
        path = scope.get("path", "/")
        closed = False

        async def close() -> str | None:
            nonlocal closed
            closed = True
            if self._inline or not replicator.must_wait(request):
                # Nothing to wait for (no session, no change, async mode, no other member): inline.
                return replicator.close(request, path)
            # The loop serves other requests while the members acknowledge.
            return await replicator.aclose(request, path)

        async def send_wrapper(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept") and not closed:
                cookie = await close()
                if cookie is not None:
                    headers = list(message.get("headers", ()))
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                    message = dict(message, headers=headers)
            await send(message)

        await self.app(scope, receive, send_wrapper)
        if not closed and request.session is not None:
            # The application ended without a response (or a websocket closed): still replicate.
            await close()


def request_session(scope: Scope) -> RequestSession:
    """The session of a request handled by :class:`ReplicationMiddleware`."""
    session = scope.get("session")
    if not isinstance(session, RequestSession):
        raise RuntimeError("no tribes session in the scope: is tribes.asgi.ReplicationMiddleware installed?")
    return session
