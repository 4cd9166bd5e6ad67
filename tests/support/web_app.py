#!/usr/bin/env python3
"""A web application behind tribes' middleware, served by a real server in its own process.

    web_app.py --server stdlib|uvicorn --mcast-port P --route node1 [--kind delta] [--send-mode ack]

Prints ``READY <http port>`` once the cluster runs and the server listens; exits when stdin closes
(so it never outlives the test) or after ``--max-seconds``. Everything is on 127.0.0.1.

For gunicorn, the same module is the application (``web_app:wsgi_app``), with the cluster created
unstarted at import and started in each worker by ``tribes.prefork`` (see ``gunicorn_conf.py``);
the settings then come from the environment (``TRIBES_TEST_MCAST_PORT``, ``TRIBES_TEST_ROUTE``).

Endpoints (GET; the answer is JSON ``{"route", "id", "value", ...}``)::

    /set?k=..&v=..     session[k] = v             /get?k=..        session.get(k)
    /append?k=..&v=..  session[k].append(v)       /cycle           rotate the id
    /logout            invalidate                 /whoami          touches nothing
    /static/app.css    reads the session only     /_stats          middleware + manager stats
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import tribes
import tribes.asgi
import tribes.wsgi
from tribes.web import RequestSession

MANAGER = "web"


def make_cluster(mcast_port: int, route: str, kind: str, send_mode: str) -> tribes.Cluster:
    config = tribes.ClusterConfig.local(
        membership={"port": mcast_port},
        route=route,
        managers={MANAGER: {"kind": kind, "send_mode": send_mode}},
    )
    return tribes.Cluster(config)


def handle(
    session: RequestSession, path: str, query: str, route: str, stats: Callable[[], dict[str, Any]]
) -> Any:
    """The application logic, shared by the WSGI and ASGI fronts."""
    q = {k: v[0] for k, v in parse_qs(query).items()}
    out: dict[str, Any] = {"route": route}
    if path == "/set":
        session[q["k"]] = q["v"]
    elif path == "/append":
        items = session.get(q["k"])
        if isinstance(items, list):
            items.append(q["v"])  # in place: the commit finds it
        else:
            session[q["k"]] = [q["v"]]
    elif path == "/get":
        out["value"] = session.get(q["k"])
    elif path == "/cycle":
        session.cycle_id()
    elif path == "/logout":
        session.invalidate()
    elif path.startswith("/static/"):
        out["value"] = session.get("user")
    elif path == "/_stats":
        return stats()
    out["id"] = session.id if path != "/whoami" else None
    return out


CLUSTER: tribes.Cluster | None = None


def stats_of(cluster: tribes.Cluster, middleware: Any) -> dict[str, Any]:
    """What ``/_stats`` answers: the middleware's and the manager's counters, sessions held, peers."""
    manager = cluster.manager(MANAGER)
    return {
        "web": middleware.stats(),
        "manager": manager.stats(),
        "sessions": len(manager),
        "peers": len(cluster.members),
    }


def build_wsgi(cluster: tribes.Cluster) -> Callable[..., Iterable[bytes]]:
    manager = cluster.manager(MANAGER)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = handle(
            environ["tribes.session"],
            environ.get("PATH_INFO", "/"),
            environ.get("QUERY_STRING", ""),
            cluster.config.route or "",
            lambda: stats_of(cluster, middleware),
        )
        data = json.dumps(body).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    middleware = tribes.wsgi.ReplicationMiddleware(app, manager)
    return middleware


def build_asgi(cluster: tribes.Cluster) -> Any:
    manager = cluster.manager(MANAGER)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = handle(
            scope["session"],
            scope["path"],
            scope.get("query_string", b"").decode(),
            cluster.config.route or "",
            lambda: stats_of(cluster, middleware),
        )
        data = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    middleware = tribes.asgi.ReplicationMiddleware(app, manager)
    return middleware


# gunicorn imports this module as the application: the cluster is made here, unstarted.
if "TRIBES_TEST_MCAST_PORT" in os.environ:
    CLUSTER = make_cluster(
        int(os.environ["TRIBES_TEST_MCAST_PORT"]),
        os.environ.get("TRIBES_TEST_ROUTE", "node1"),
        "delta",
        "ack",
    )
    wsgi_app = build_wsgi(CLUSTER)


def serve_stdlib(app: Any, ready: Callable[[int], None]) -> None:
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Threaded(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_server("127.0.0.1", 0, app, server_class=Threaded, handler_class=Quiet)
    ready(server.server_address[1])
    server.serve_forever(poll_interval=0.2)


def serve_uvicorn(app: Any, ready: Callable[[int], None]) -> None:
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)

    def announce() -> None:
        for _ in range(2000):
            if server.started:
                ready(port)
                return
            threading.Event().wait(0.01)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", choices=["stdlib", "uvicorn"], required=True)
    parser.add_argument("--mcast-port", type=int, required=True)
    parser.add_argument("--route", required=True)
    parser.add_argument("--kind", default="delta")
    parser.add_argument("--send-mode", default="ack")
    parser.add_argument("--max-seconds", type=float, default=120)
    args = parser.parse_args()

    cluster = make_cluster(args.mcast_port, args.route, args.kind, args.send_mode)
    cluster.start()

    def ready(port: int) -> None:
        print(f"READY {port}", flush=True)

    def watch() -> None:
        sys.stdin.read()  # EOF: the test is gone
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    threading.Timer(args.max_seconds, lambda: os._exit(3)).start()
    if args.server == "stdlib":
        serve_stdlib(build_wsgi(cluster), ready)
    else:
        serve_uvicorn(build_asgi(cluster), ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
