"""Pre-fork servers (gunicorn, uWSGI): every worker process is its own cluster member.

A cluster must never start in the server's master process: its threads and sockets would not survive
the fork. Create the :class:`tribes.Cluster` (and the middleware) when the application is imported, do
not start it, and let the server's post-fork hook start it in each worker, with a route of its own
(``<route>-w<n>``; a receiver port found by ``auto_bind``).

gunicorn (``gunicorn.conf.py``)::

    from tribes.prefork import post_fork, worker_exit   # noqa: F401 - gunicorn calls them
    preload_app = True    # the app (and its Cluster) is imported once, in the master, unstarted

uWSGI (in the application module, with ``lazy-apps = false``)::

    from uwsgidecorators import postfork
    import tribes.prefork
    postfork(lambda: tribes.prefork.start_clusters(worker=uwsgi.worker_id()))

Without ``preload_app`` gunicorn imports the application in each worker after ``post_fork`` ran: then
start the cluster yourself when the module is imported (that import already runs after the fork), with
``tribes.prefork.start_clusters(worker=…)`` at its end.
"""

from __future__ import annotations

import logging
from typing import Any

from .cluster import Cluster, instances

__all__ = ["post_fork", "start_clusters", "stop_clusters", "worker_exit"]

_log = logging.getLogger("tribes.prefork")


def start_clusters(worker: int | str | None = None) -> list[Cluster]:
    """Start every stopped :class:`Cluster` of this process; with ``worker``, each member's route becomes
    ``<route>-w<worker>`` (or ``w<worker>`` when it had none). Returns the clusters started."""
    started = []
    for cluster in instances():
        if cluster.running:
            continue
        if worker is not None:
            base = cluster.config.route
            cluster.set_route(f"{base}-w{worker}" if base else f"w{worker}")
        cluster.start()
        started.append(cluster)
        _log.info("cluster %s started in worker %s", cluster.config.name, worker)
    return started


def stop_clusters() -> None:
    """Stop every running :class:`Cluster` of this process."""
    for cluster in instances():
        cluster.stop()


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn's ``post_fork`` hook: start the clusters in the new worker (route ``<route>-w<age>``)."""
    start_clusters(worker=getattr(worker, "age", None))


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``worker_exit`` hook: leave the cluster cleanly."""
    stop_clusters()
