"""Starlette / FastAPI adapter: ``request.session`` kept in a tribes manager (``tribes[starlette]``).

::

    cluster = tribes.Cluster(tribes.ClusterConfig.from_file("cluster.toml"))
    app.add_middleware(TribesSessionMiddleware, manager=cluster.manager("shop"))
    # start the cluster in each worker process, e.g. in the application's lifespan: cluster.start()

``request.session`` is then a :class:`tribes.web.RequestSession`: a mutable mapping, created on the
first write (a request that never writes creates nothing and sets no cookie). When the response
starts, the session's changes are committed (with ``send_mode="ack"`` they are on the other members
before the first byte leaves), values changed in place included. ``request.session.clear()`` (the
usual logout) and ``request.session.invalidate()`` end the session on every member and delete the
cookie; ``request.session.cycle_id()`` rotates the id (after login). This replaces Starlette's
``SessionMiddleware`` (no secret key: the cookie holds only a random id).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp

from . import asgi
from ._frameworks import FrameworkReplicator
from .managers import SessionManager

__all__ = ["TribesSessionMiddleware"]


class TribesSessionMiddleware(asgi.ReplicationMiddleware):
    """Starlette middleware providing ``request.session`` (``app.add_middleware(TribesSessionMiddleware,
    manager=…)``).

    ``options`` are :class:`tribes.web.Replicator`'s: ``filter`` (regex of paths that do not replicate
    unchanged sessions; default static files), ``cookie_name`` (default ``JSESSIONID``),
    ``cookie_path``, ``cookie_domain``, ``cookie_secure``, ``cookie_httponly``, ``cookie_samesite``.
    ``stats()`` gives the counters.
    """

    def __init__(self, app: ASGIApp, manager: SessionManager, **options: Any) -> None:
        """Wrap ``app``; sessions come from ``manager``."""
        super().__init__(app, manager, **options)
        self.replicator = FrameworkReplicator(manager, **options)
