"""What the framework adapters (``tribes.flask``, ``tribes.starlette``) share, beyond :mod:`tribes.web`.

No web framework is imported here.
"""

from __future__ import annotations

from .session import Session
from .web import Replicator, RequestSession

__all__ = ["FrameworkReplicator"]


class FrameworkReplicator(Replicator):
    """A :class:`~tribes.web.Replicator` that ends a session which a request emptied.

    Flask's and Starlette's own session middleware delete the cookie of a session that a request
    emptied (``session.clear()``, the usual logout); here the session is also invalidated on every
    member, so the old id cannot be used again anywhere.
    """

    def _to_commit(self, request: RequestSession, path: str) -> Session | None:
        """Invalidate the session if this request removed its last attribute (for ``close`` and
        ``aclose`` alike), then as the base class."""
        session = request._session  # only if the request loaded it: never load here
        if session is not None and session.valid and session.modified and len(session) == 0:
            request.invalidate()
        return super()._to_commit(request, path)
