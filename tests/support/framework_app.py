#!/usr/bin/env python3
"""A Flask, Django or Starlette application using tribes' adapter, served in its own process.

    framework_app.py --framework flask|django|starlette --mcast-port P --route node1

Flask and Django are served by a threaded stdlib WSGI server, Starlette by uvicorn, on 127.0.0.1.
Prints ``READY <http port>`` once the server listens; exits when stdin closes or reads ``QUIT`` (so it
never outlives the test), or after ``--max-seconds``. Flask and Starlette start their cluster member
before serving; Django's starts lazily, on the first use of a session (``tribes.django``), with the
member configured by the ``TRIBES_CLUSTER`` setting.

Endpoints (GET; the answer is JSON ``{"route", "value", ...}``)::

    /set?k=..&v=..     session[k] = v             /get?k=..        session.get(k)
    /append?k=..&v=..  session[k].append(v) in place (or [v] when absent)
    /cycle             rotate the id (Django: cycle_key())
    /logout            Flask, Starlette: session.clear(); Django: flush()
    /assets/app.css    reads the session only
    /touch             Flask: session.modified = True      /permanent   Flask: session.permanent = True
    /_stats            {"peers", "sessions", "web" (Flask, Starlette), "started" (Django)};
                       Django: ``?start=0`` does not start the member
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import types
from collections.abc import Callable, MutableMapping
from typing import Any

from web_app import serve_stdlib, serve_uvicorn  # tests/support, the script's own directory

import tribes

MANAGER = "web"


def local_config(mcast_port: int, route: str) -> dict[str, Any]:
    """``ClusterConfig.local(membership={"port": …}, route=…)`` as a settings dict (for Django)."""
    return {
        "membership": {
            "bind": "127.0.0.1",
            "ttl": 0,
            "frequency_ms": 100,
            "drop_time_ms": 1000,
            "port": mcast_port,
        },
        "receiver": {"address": "127.0.0.1"},
        "route": route,
        "managers": {MANAGER: {"kind": "delta", "send_mode": "ack"}},
    }


def handle(
    session: MutableMapping[str, Any],
    path: str,
    q: dict[str, str],
    cycle: Callable[[], object],
    logout: Callable[[], object],
) -> dict[str, Any]:
    """The application logic, shared by the three frameworks."""
    out: dict[str, Any] = {}
    if path == "/set":
        session[q["k"]] = q["v"]
    elif path == "/append":
        items = session.get(q["k"])
        if isinstance(items, list):
            items.append(q["v"])  # in place: no assignment, no "modified" flag
        else:
            session[q["k"]] = [q["v"]]
    elif path == "/get":
        out["value"] = session.get(q["k"])
        out["keys"] = sorted(session.keys())
    elif path == "/cycle":
        cycle()
    elif path == "/logout":
        logout()
    elif path.startswith("/assets/"):
        out["value"] = session.get("user")
    else:
        raise LookupError(path)
    return out


# --------------------------------------------------------------------------------------------------
# The three applications
# --------------------------------------------------------------------------------------------------


def build_flask(cluster: tribes.Cluster) -> Any:
    import flask

    import tribes.flask

    app = flask.Flask("framework_app")
    interface = tribes.flask.init_app(app, cluster.manager(MANAGER))

    @app.route("/_stats")
    def stats() -> Any:
        manager = cluster.manager(MANAGER)
        return {"peers": len(cluster.members), "sessions": len(manager), "web": interface.stats()}

    @app.route("/<path:path>")
    def any_path(path: str) -> Any:
        session = flask.session
        assert isinstance(session, tribes.flask.TribesFlaskSession)
        out: dict[str, Any] = {}
        if path == "touch":
            session.modified = True  # Flask's way to ask for the cookie to be sent again
        elif path == "permanent":
            session.permanent = True
        else:
            out = handle(session, "/" + path, dict(flask.request.args), session.cycle_id, session.clear)
        tribes_session = session.request_session.session
        out["max_inactive"] = None if tribes_session is None else tribes_session.max_inactive
        out["route"] = cluster.config.route
        out["new"] = session.new
        out["modified"] = session.modified
        return out

    return app


def build_starlette(cluster: tribes.Cluster) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tribes.starlette import TribesSessionMiddleware

    async def stats(request: Request) -> JSONResponse:
        manager = cluster.manager(MANAGER)
        web = middleware_stats()
        return JSONResponse({"peers": len(cluster.members), "sessions": len(manager), "web": web})

    async def any_path(request: Request) -> JSONResponse:
        session = request.session  # Starlette's own accessor (asserts "session" in the scope)
        out = handle(
            session,
            request.url.path,
            dict(request.query_params),
            session.cycle_id,  # a tribes.web.RequestSession
            session.clear,
        )
        out["route"] = cluster.config.route
        return JSONResponse(out)

    app = Starlette(routes=[Route("/_stats", stats), Route("/{path:path}", any_path)])
    app.add_middleware(TribesSessionMiddleware, manager=cluster.manager(MANAGER))
    found: list[TribesSessionMiddleware] = []

    def middleware_stats() -> dict[str, int]:
        if not found:  # Starlette builds its middleware stack on the first request
            layer: Any = app.middleware_stack
            while layer is not None and not isinstance(layer, TribesSessionMiddleware):
                layer = getattr(layer, "app", None)
            assert layer is not None
            found.append(layer)
        return found[0].stats()

    return app


def build_django(mcast_port: int, route: str) -> Any:
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.http import HttpRequest, JsonResponse
    from django.urls import path, re_path

    import tribes.django

    def stats(request: HttpRequest) -> JsonResponse:
        if request.GET.get("start") == "0" and not tribes.django.is_started():
            return JsonResponse({"started": False, "peers": 0, "sessions": 0})
        cluster = tribes.django.get_cluster()
        return JsonResponse(
            {
                "started": tribes.django.is_started(),
                "member": cluster.local_member.port,
                "peers": len(cluster.members),
                "sessions": len(tribes.django.get_manager()),
            }
        )

    def any_path(request: HttpRequest, rest: str) -> JsonResponse:
        session = request.session
        out = handle(session, "/" + rest, request.GET.dict(), session.cycle_key, session.flush)
        out["route"] = route
        return JsonResponse(out)

    urls = types.ModuleType("framework_app_urls")
    urls.urlpatterns = [path("_stats", stats), re_path(r"^(?P<rest>.*)$", any_path)]
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tribes-tests-only-not-a-secret",
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=urls,
        INSTALLED_APPS=[],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        SESSION_ENGINE="tribes.django",
        TRIBES_CLUSTER=local_config(mcast_port, route),
        TRIBES_MANAGER=MANAGER,
        USE_TZ=True,
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
        },
    )
    django.setup()
    return get_wsgi_application()


# --------------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--framework", choices=["flask", "django", "starlette"], required=True)
    parser.add_argument("--mcast-port", type=int, required=True)
    parser.add_argument("--route", required=True)
    parser.add_argument("--max-seconds", type=float, default=180)
    args = parser.parse_args()

    cluster: tribes.Cluster | None = None
    if args.framework != "django":
        cluster = tribes.Cluster(tribes.ClusterConfig.from_dict(local_config(args.mcast_port, args.route)))
        cluster.start()

    def ready(port: int) -> None:
        print(f"READY {port}", flush=True)

    def leave() -> None:
        if cluster is not None:
            cluster.stop()
        elif args.framework == "django":
            import tribes.django

            if tribes.django.is_started():
                tribes.django.get_cluster().stop()

    def watch() -> None:
        for line in sys.stdin:  # until EOF: the test is gone
            if line.strip() == "QUIT":
                break
        leave()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    timer = threading.Timer(args.max_seconds, lambda: os._exit(3))
    timer.daemon = True
    timer.start()
    if args.framework == "flask":
        assert cluster is not None
        serve_stdlib(build_flask(cluster), ready)
    elif args.framework == "django":
        serve_stdlib(build_django(args.mcast_port, args.route), ready)
    else:
        assert cluster is not None
        serve_uvicorn(build_starlette(cluster), ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
