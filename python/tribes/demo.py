"""``tribes demo``: a three-member cluster behind a load balancer on this machine, a user journey, a
crash, a failover and a restart, with the numbers measured in the run.

The parent process (:func:`run`) starts three members, each its own OS process
(``python -m tribes.demo --member …``) serving a small shop (a WSGI app behind
:class:`tribes.wsgi.ReplicationMiddleware`, routes ``node1``..``node3``) on a threaded stdlib server. It
runs a load balancer itself (threaded ``http.server`` + ``http.client``): sticky on the route suffix of the
``JSESSIONID`` cookie, failing over to the next member when a member refuses the connection. It then plays
a user journey through the balancer, kills the member serving the user with SIGKILL, shows the next
request served by another member with the cart intact and the id re-bound to that member's route, restarts
the killed member (which gets the sessions by state transfer) and prints a summary.

Everything stays on 127.0.0.1 (multicast bound to 127.0.0.1 with TTL 0, ``ClusterConfig.local``), on a
free multicast port and free TCP ports. Every wait has a deadline; the members stop when their standard
input closes, so they never outlive the parent.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import html
import http.client
import json
import logging
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .cluster import Cluster
from .config import ClusterConfig
from .wsgi import ReplicationMiddleware

__all__ = ["DemoError", "member_main", "run"]

LOOPBACK = "127.0.0.1"
ROUTES = ("node1", "node2", "node3")
MANAGER = "shop"
COOKIE = "JSESSIONID"
MCAST_GROUP = "228.0.0.4"  # ClusterConfig's default group, kept by the local preset
MCAST_PORTS = (49000, 49999)  # the tests pick from 45000-48999

#: A member must be serving (cluster started, state transfer done, HTTP bound) within this.
READY_TIMEOUT = 20.0
#: The members must see each other within this.
CONVERGE_TIMEOUT = 10.0
#: Deadline of one HTTP exchange (client → balancer → member).
HTTP_TIMEOUT = 5.0
#: How long the demo waits for a member to re-bind the session after the kill.
REBIND_TIMEOUT = 5.0
#: A member process lives at most this long unless --keep-running (then: as long as the parent).
MEMBER_MAX_SECONDS = 120.0
#: Interval of the demo's polls (membership views, re-binding).
POLL = 0.05
#: How long a member gets to stop cleanly before it is killed.
STOP_TIMEOUT = 5.0
#: Largest request body the balancer and the shop accept.
MAX_BODY = 64 * 1024


class DemoError(Exception):
    """The demo could not show what it claims (a member did not start, the cart was lost, …)."""


# ==================================================================================================
# The member: a shop behind the replication middleware
# ==================================================================================================

_CSS = b"""body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
.member { font-size: 2em; font-weight: bold; }
code { background: #eee; padding: 0 .3em; }
"""

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _read_form(environ: dict[str, Any]) -> dict[str, str]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(min(max(length, 0), MAX_BODY)) if length > 0 else b""
    fields = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=20)
    return {k: v[0] for k, v in fields.items() if v}


def _page(route: str, session: Any) -> bytes:
    user = session.get("user")
    cart = session.get("cart", [])
    sid = session.id
    items = "".join(f"<li>{html.escape(str(item))}</li>" for item in cart) or "<li>(empty)</li>"
    if user is None:
        body = (
            '<form method="post" action="/login"><input name="user" value="alice">'
            '<input type="hidden" name="next" value="/"><button>Log in</button></form>'
        )
    else:
        body = (
            f"<p>Logged in as <b>{html.escape(str(user))}</b>. Cart:</p><ul>{items}</ul>"
            '<form method="post" action="/cart/add"><input name="item" value="tea">'
            '<input type="hidden" name="next" value="/"><button>Add to cart</button></form>'
            '<form method="post" action="/logout"><input type="hidden" name="next" value="/">'
            "<button>Log out</button></form>"
        )
    shown_id = html.escape(sid) if sid else "(none yet: nothing was written)"
    return (
        "<!doctype html><html><head><title>tribes demo</title>"
        '<link rel="stylesheet" href="/static/app.css"></head><body>'
        f'<p>Served by <span class="member">{route}</span> (pid {os.getpid()})</p>'
        f"<p>Session id: <code>{shown_id}</code></p>{body}"
        "<p>Kill this member (its pid is above) and reload through the load balancer: another member "
        "serves the page, with the same cart and the id re-bound to its route.</p>"
        "</body></html>"
    ).encode()


def make_shop(route: str) -> WSGIApp:
    """The demo's WSGI app (to wrap in the middleware): log in, add to a cart, read it back."""

    def shop(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        session = environ["tribes.session"]
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO") or "/"
        extra = [("X-Served-By", route), ("Cache-Control", "no-store")]

        def reply(
            status: str, ctype: str, body: bytes, headers: Sequence[tuple[str, str]] = ()
        ) -> list[bytes]:
            start_response(
                status,
                [("Content-Type", ctype), ("Content-Length", str(len(body))), *extra, *headers],
            )
            return [body]

        def answer(data: dict[str, Any], form: dict[str, str], status: str = "200 OK") -> list[bytes]:
            if form.get("next") == "/":  # a browser form: back to the page
                return reply("303 See Other", "text/plain", b"", [("Location", "/")])
            payload = {"member": route, "session": session.id, **data}
            return reply(status, "application/json", json.dumps(payload).encode())

        if path == "/static/app.css":
            # The stylesheet greets the user, so it reads the session (never writes it). Its path matches
            # the middleware's static filter: the request is counted as filtered and nothing replicates.
            user = json.dumps(str(session.get("user", "guest")))
            return reply("200 OK", "text/css", _CSS + f"body::before {{ content: {user}; }}\n".encode())
        if path == "/" and method == "GET":
            return reply("200 OK", "text/html; charset=utf-8", _page(route, session))
        if path == "/cart" and method == "GET":
            return answer({"user": session.get("user"), "cart": list(session.get("cart", []))}, {})
        if method != "POST" or path not in ("/login", "/cart/add", "/logout"):
            return reply("404 Not Found", "text/plain", b"not found\n")
        form = _read_form(environ)
        if path == "/login":
            session["user"] = (form.get("user") or "guest").strip()[:40] or "guest"
            if "cart" not in session:
                session["cart"] = []
            return answer({"user": session["user"], "cart": list(session["cart"])}, form)
        if path == "/logout":
            session.invalidate()
            return answer({"user": None, "cart": []}, form)
        if "user" not in session:
            return answer({"error": "log in first"}, form, "403 Forbidden")
        item = (form.get("item") or "").strip()[:40]
        if item:
            session["cart"].append(item)  # changed in place: the session notices and replicates it
        return answer({"user": session["user"], "cart": list(session["cart"])}, form)

    return shop


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietWSGIHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _parse_member_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tribes.demo --member")
    parser.add_argument("--member", action="store_true", required=True)
    parser.add_argument("--route", required=True)
    parser.add_argument("--mcast-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=MEMBER_MAX_SECONDS, help="0: no limit")
    return parser.parse_args(argv)


def member_main(argv: Sequence[str]) -> int:
    """A demo member (a child of :func:`run`): prints ``READY {json}`` once it serves, and stops when
    its standard input closes (or says ``QUIT``) or after ``--max-seconds``."""
    args = _parse_member_args(argv)
    # Ctrl-C in a terminal reaches the whole process group: the parent decides when members stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "QUIT":
                break
        stop.set()  # QUIT, or end of file: the parent is gone

    threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()

    config = ClusterConfig.local(
        name=f"tribes-demo-{args.route}",
        membership={"port": args.mcast_port},
        receiver={"port": 0},
        route=args.route,
        managers={MANAGER: {}},
    )
    cluster = Cluster(config)
    cluster.start()  # joins, and fetches the sessions of the running members (state transfer)
    try:
        manager = cluster.manager(MANAGER)
        middleware = ReplicationMiddleware(make_shop(args.route), manager)

        def stats() -> dict[str, Any]:
            return {
                "route": args.route,
                "pid": os.getpid(),
                "members": sorted(cluster.member_routes()),
                "sessions": len(manager),
                "state_transfer": manager.state_transfer,
                "web": middleware.stats(),
                "manager": manager.stats(),
            }

        def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/_tribes/stats":  # admin: outside the middleware
                body = json.dumps(stats()).encode()
                start_response(
                    "200 OK",
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                        ("X-Served-By", args.route),
                    ],
                )
                return [body]
            return middleware(environ, start_response)

        try:
            server = make_server(LOOPBACK, args.http_port, app, _ThreadingWSGIServer, _QuietWSGIHandler)
        except OSError:  # the port was taken since the parent picked it: any free port will do
            server = make_server(LOOPBACK, 0, app, _ThreadingWSGIServer, _QuietWSGIHandler)
        serving = threading.Thread(target=server.serve_forever, args=(0.1,), name="http", daemon=True)
        serving.start()
        me = cluster.local_member
        ready = {
            "http_port": server.server_address[1],
            "cluster": f"{me.host}:{me.port}",
            **stats(),
        }
        print("READY " + json.dumps(ready), flush=True)
        stop.wait(args.max_seconds if args.max_seconds > 0 else None)
        server.shutdown()
        server.server_close()
    finally:
        cluster.stop()
    return 0


# ==================================================================================================
# The parent: member processes, the load balancer, the client
# ==================================================================================================


def _free_mcast_port(rng: random.Random) -> int:
    # A cluster's multicast socket is bound to (group, port) with SO_REUSEADDR; this bind, without it,
    # fails on a port that some cluster on this machine uses.
    for _ in range(200):
        port = rng.randint(*MCAST_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((MCAST_GROUP, port))
            except OSError:
                continue
        return port
    raise DemoError(f"no free multicast port in {MCAST_PORTS[0]}-{MCAST_PORTS[1]}")


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


class MemberProcess:
    """One member's OS process: stdin kept open (its lifeline), stdout read for ``READY``, stderr kept."""

    def __init__(self, route: str, mcast_port: int, http_port: int, max_seconds: float) -> None:
        self.route = route
        self.http_port = http_port
        self.ready: dict[str, Any] = {}
        self.stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._lines: queue.Queue[str | None] = queue.Queue()
        cmd = [
            sys.executable,
            "-m",
            "tribes.demo",
            "--member",
            "--route",
            route,
            "--mcast-port",
            str(mcast_port),
            "--http-port",
            str(http_port),
            "--max-seconds",
            str(max_seconds),
        ]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        self.pid = self.proc.pid
        threading.Thread(target=_pump, args=(self.proc.stdout, self._lines.put, True), daemon=True).start()
        threading.Thread(
            target=_pump, args=(self.proc.stderr, self.stderr.append, False), daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    def wait_ready(self, deadline: float) -> dict[str, Any]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoError(f"{self.route} did not start within {READY_TIMEOUT:g} s{self.tail()}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise DemoError(f"{self.route} exited before it was ready{self.tail()}")
            if line.startswith("READY "):
                self.ready = json.loads(line[6:])
                self.http_port = int(self.ready["http_port"])
                return self.ready

    def tail(self) -> str:
        lines = list(self.stderr)
        return (":\n    " + "\n    ".join(lines[-15:])) if lines else ""

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no goodbye to the cluster, sockets closed by the kernel
        self.proc.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Ask it to leave the cluster (QUIT, then end of input), kill it if it lingers."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.write("QUIT\n")
                self.proc.stdin.flush()
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()

    def join(self, deadline: float) -> str:
        """Wait for it to exit (killing it at ``deadline``); says how it ended."""
        if self.proc.returncode is not None:
            return f"had exited (status {self.proc.returncode})"
        try:
            code = self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
            return "killed (it did not stop in time)"
        return "left the cluster" if code == 0 else f"exited with status {code}"


def _pump(stream: Any, sink: Callable[[Any], object], mark_eof: bool) -> None:
    with contextlib.suppress(OSError, ValueError):
        for line in stream:
            sink(line.rstrip("\n"))
    if mark_eof:
        sink(None)


# -- the load balancer -----------------------------------------------------------------------------

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


def route_of(cookie_header: str | None) -> str | None:
    """The route suffix of the ``JSESSIONID`` cookie (``<id>.<route>``), or None."""
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    if morsel is None or "." not in morsel.value:
        return None
    return morsel.value.rsplit(".", 1)[1]


class LoadBalancer:
    """Sticky on the route suffix of the session cookie (mod_jk / mod_proxy_balancer style); a request
    without a route goes round-robin; a member that refuses the connection is skipped for the next."""

    def __init__(self, ports: dict[str, int]) -> None:
        self._lock = threading.Lock()
        self._ports = dict(ports)
        self._next = 0
        self.server = ThreadingHTTPServer((LOOPBACK, 0), _BalancerHandler)
        self.server.daemon_threads = True
        self.server.balancer = self  # type: ignore[attr-defined]
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=STOP_TIMEOUT)

    def set_port(self, route: str, port: int) -> None:
        with self._lock:
            self._ports[route] = port

    def candidates(self, route: str | None) -> list[tuple[str, int]]:
        """Members to try, in order: the sticky one first, then the others."""
        with self._lock:
            routes = list(self._ports)
            if route in self._ports:
                start = routes.index(route)
            else:
                start = self._next % len(routes)
                self._next += 1
            order = routes[start:] + routes[:start]
            return [(r, self._ports[r]) for r in order]


class _BalancerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "tribes-demo-lb"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._proxy()

    def do_HEAD(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def _proxy(self) -> None:
        balancer: LoadBalancer = self.server.balancer  # type: ignore[attr-defined]
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.send_error(413 if length > 0 else 400)
            return
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["X-Forwarded-For"] = self.client_address[0]
        idempotent = self.command in ("GET", "HEAD")
        refused: list[str] = []
        for route, port in balancer.candidates(route_of(self.headers.get("Cookie"))):
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=HTTP_TIMEOUT)
            try:
                conn.connect()
            except OSError:  # refused (the member is down): the request never reached it
                refused.append(route)
                conn.close()
                continue
            try:
                conn.request(self.command, self.path, body, headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                if idempotent:  # safe to send again elsewhere
                    refused.append(route)
                    continue
                self.send_error(502, f"{route} failed during the request")
                return
            conn.close()
            self.send_response_only(response.status, response.reason)  # the member's Date and Server
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            if refused:
                self.send_header("X-Balancer-Skipped", ",".join(refused))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        self.send_error(503, "no member answered: " + ",".join(refused))


# -- the client ------------------------------------------------------------------------------------


@dataclass
class Reply:
    """One response as the demo's browser saw it."""

    status: int
    member: str
    skipped: list[str]
    data: dict[str, Any]
    set_cookie: str | None
    at: float


@dataclass
class Browser:
    """A client with a cookie jar, talking to one base URL."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def session_id(self) -> str | None:
        return self.cookies.get(COOKIE)

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Reply:
        headers: dict[str, str] = {}
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=HTTP_TIMEOUT)
        try:
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        at = time.monotonic()
        set_cookie = response.getheader("Set-Cookie")
        if set_cookie:
            jar: SimpleCookie = SimpleCookie()
            jar.load(set_cookie)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        data: dict[str, Any] = {}
        if (response.getheader("Content-Type") or "").startswith("application/json"):
            data = json.loads(raw)
        skipped = response.getheader("X-Balancer-Skipped")
        return Reply(
            status=response.status,
            member=response.getheader("X-Served-By") or "?",
            skipped=skipped.split(",") if skipped else [],
            data=data,
            set_cookie=set_cookie,
            at=at,
        )


def _get_json(port: int, path: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise DemoError(f"GET {path} on port {port}: HTTP {response.status}")
    result: dict[str, Any] = json.loads(raw)
    return result


# ==================================================================================================
# The story
# ==================================================================================================


class _Stopped(Exception):
    """SIGTERM (or SIGINT outside --keep-running's wait) asked the demo to stop."""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _words(state: str) -> str:
    return state.replace("_", " ")


def _cart(items: Iterable[Any]) -> str:
    return ", ".join(map(str, items)) or "(empty)"


class Demo:
    """The run: members, balancer, journey, crash, restart, summary (see the module docstring)."""

    def __init__(self, out: Callable[[str], None], mcast_port: int | None, keep_running: bool) -> None:
        self.out = out
        self.keep_running = keep_running
        self.mcast_port = mcast_port or _free_mcast_port(random.Random())
        self.max_seconds = 0.0 if keep_running else MEMBER_MAX_SECONDS
        self.members: dict[str, MemberProcess] = {}
        self.gone: list[tuple[MemberProcess, dict[str, Any]]] = []  # killed, with their last stats
        self.balancer: LoadBalancer | None = None
        self.failover_s: float | None = None
        self.rebind_s: float | None = None

    # -- steps -------------------------------------------------------------------------------------

    def start_members(self) -> None:
        out = self.out
        out(f"Starting 3 members, each its own process (multicast 127.0.0.1:{self.mcast_port}, TTL 0) ...")
        t0 = time.monotonic()
        for route in ROUTES:  # one after the other, as a rolling start would
            m = MemberProcess(route, self.mcast_port, _free_tcp_port(), self.max_seconds)
            self.members[route] = m
            ready = m.wait_ready(time.monotonic() + READY_TIMEOUT)
            out(
                f"  {route}  pid {m.pid:<7} {m.url:<24} tribes {ready['cluster']:<16} "
                f"ready in {time.monotonic() - m.started:.1f} s, "
                f"state transfer: {_words(ready['state_transfer'])}"
            )
        self.converge()
        out(f"  every member sees the other two ({time.monotonic() - t0:.1f} s after the start)")

    def converge(self) -> None:
        """Wait until every member's view holds the two others."""
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        views: dict[str, list[str]] = {}
        for _ in range(int(CONVERGE_TIMEOUT / POLL) + 1):
            views = {r: self.stats(r)["members"] for r in self.members}
            if all(sorted(v) == sorted(set(ROUTES) - {r}) for r, v in views.items()):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(POLL)
        raise DemoError(f"the members did not find each other within {CONVERGE_TIMEOUT:g} s: {views}")

    def stats(self, route: str) -> dict[str, Any]:
        return _get_json(self.members[route].http_port, "/_tribes/stats")

    def start_balancer(self) -> LoadBalancer:
        balancer = LoadBalancer({r: m.http_port for r, m in self.members.items()})
        balancer.start()
        self.balancer = balancer
        self.out(
            f"Load balancer {balancer.url}  (sticky on the JSESSIONID route, "
            "fails over when a member refuses the connection)"
        )
        return balancer

    def show(self, who: str, method: str, path: str, reply: Reply, note: str) -> None:
        skipped = f" ({', '.join(reply.skipped)} refused)" if reply.skipped else ""
        self.out(f"  {who:<6} {method:<4} {path:<16} -> {reply.member}{skipped}  {reply.status}  {note}")

    def journey(self, port: int) -> Browser:
        out = self.out
        out("")
        out("1. A user journey through the load balancer (cookie jar, sticky by route)")
        alice = Browser(port)
        reply = alice.request("GET", "/")
        self.show("alice", "GET", "/", reply, "home page; nothing written, so no session and no cookie")
        _check(reply.status == 200 and alice.session_id is None, "the home page created a session")
        reply = alice.request("POST", "/login", {"user": "alice"})
        self.show("alice", "POST", "/login", reply, f"new session {alice.session_id}")
        _check(reply.status == 200 and alice.session_id is not None, "log in did not set a session cookie")
        for item in ("book", "lamp", "tea"):
            reply = alice.request("POST", "/cart/add", {"item": item})
            self.show("alice", "POST", "/cart/add", reply, f"item={item}  cart: {_cart(reply.data['cart'])}")
            _check(reply.status == 200, f"adding {item} failed: HTTP {reply.status}")
        reply = alice.request("GET", "/static/app.css")
        self.show("alice", "GET", "/static/app.css", reply, "static: the middleware does not replicate it")
        reply = alice.request("GET", "/cart")
        self.show("alice", "GET", "/cart", reply, f"cart: {_cart(reply.data['cart'])}")
        _check(reply.data["cart"] == ["book", "lamp", "tea"], f"the cart reads {reply.data['cart']}")
        for user, item in (("bob", "pen"), ("carol", "mug")):
            other = Browser(port)
            reply = other.request("POST", "/login", {"user": user})
            self.show(user, "POST", "/login", reply, f"new session {other.session_id}")
            reply = other.request("POST", "/cart/add", {"item": item})
            self.show(user, "POST", "/cart/add", reply, f"item={item}  cart: {_cart(reply.data['cart'])}")
            _check(reply.status == 200, f"{user}: HTTP {reply.status}")
        counts = {r: self.stats(r)["sessions"] for r in self.members}
        out("  sessions held per member: " + ", ".join(f"{r} {n}" for r, n in counts.items()))
        return alice

    def crash(self, alice: Browser, victim: str) -> None:
        out = self.out
        member = self.members[victim]
        old_id = alice.session_id or ""
        out("")
        out(f"2. Kill {victim} (SIGKILL, pid {member.pid}), the member serving alice")
        last = self.stats(victim)  # its counters, for the summary: the process takes them with it
        t_kill = time.monotonic()
        member.kill()
        reply = alice.request("GET", "/cart")
        self.failover_s = reply.at - t_kill
        self.show("alice", "GET", "/cart", reply, f"cart: {_cart(reply.data.get('cart', []))}")
        _check(reply.status == 200, f"the first request after the kill got HTTP {reply.status}")
        _check(reply.member != victim, f"the request after the kill was served by {reply.member}")
        _check(
            reply.data.get("cart") == ["book", "lamp", "tea"],
            f"the cart did not survive: {reply.data.get('cart')}",
        )
        out(f"  the cart is intact on {reply.member}: {_cart(reply.data['cart'])}")
        deadline = t_kill + REBIND_TIMEOUT
        for _ in range(int(REBIND_TIMEOUT / POLL) + 1):
            if route_of(f"{COOKIE}={alice.session_id}") != victim:
                break
            # The serving member still had the victim in its view: it re-binds once the victim is gone.
            if time.monotonic() > deadline:
                raise DemoError(f"the session id still names {victim} {REBIND_TIMEOUT:g} s after the kill")
            time.sleep(POLL)
            reply = alice.request("GET", "/cart")
            self.show("alice", "GET", "/cart", reply, "re-bound" if reply.set_cookie else "not re-bound yet")
        else:
            raise DemoError(f"the session id still names {victim} after {REBIND_TIMEOUT:g} s of requests")
        self.rebind_s = reply.at - t_kill
        new_id = alice.session_id or ""
        out(f"  id before: {old_id}")
        out(f"  id after:  {new_id}   (re-bound by {reply.member}: {victim} is gone; Set-Cookie sent)")
        out(
            f"  failover: {_ms(self.failover_s)} from the kill to the first response from another member; "
            f"id re-bound {_ms(self.rebind_s)} after the kill"
        )
        self.gone.append((member, last))
        reply = alice.request("GET", "/cart")
        self.show(
            "alice", "GET", "/cart", reply, f"sticky on the new route  cart: {_cart(reply.data['cart'])}"
        )

    def restart(self, alice: Browser, victim: str) -> None:
        out = self.out
        out("")
        out(f"3. Restart {victim}: it joins and fetches the sessions from the others (state transfer)")
        survivors = [r for r in ROUTES if r != victim]
        sent_before = {r: self.stats(r)["manager"]["transfer_sessions_sent"] for r in survivors}
        old_port = self.members[victim].http_port
        member = MemberProcess(victim, self.mcast_port, old_port, self.max_seconds)
        self.members[victim] = member
        ready = member.wait_ready(time.monotonic() + READY_TIMEOUT)
        assert self.balancer is not None
        self.balancer.set_port(victim, member.http_port)
        transfer = ready["state_transfer"]
        received = ready["manager"]["transfer_sessions_received"]
        out(
            f"  {victim}  pid {member.pid:<7} {member.url:<24} tribes {ready['cluster']:<16} "
            f"ready in {time.monotonic() - member.started:.1f} s"
        )
        sent = {r: self.stats(r)["manager"]["transfer_sessions_sent"] - sent_before[r] for r in survivors}
        senders = ", ".join(f"{n} from {r}" for r, n in sent.items() if n) or "none sent"
        out(
            f"  state transfer: {_words(transfer)}, {received} sessions received ({senders}), "
            f"{ready['sessions']} held"
        )
        _check(transfer == "complete", f"the state transfer of {victim} was {transfer}")
        self.converge()
        counts = {r: self.stats(r)["sessions"] for r in ROUTES}
        out("  sessions held per member: " + ", ".join(f"{r} {n}" for r, n in counts.items()))
        _check(received >= 3 and counts[victim] >= 3, f"{victim} holds {counts[victim]} sessions")
        # Proof on the restarted member itself, bypassing the balancer: alice's cart is there.
        direct = Browser(member.http_port, dict(alice.cookies))
        reply = direct.request("GET", "/cart")
        self.show(
            "alice", "GET", "/cart", reply, f"asked {victim} directly: cart: {_cart(reply.data['cart'])}"
        )
        _check(reply.data.get("cart") == ["book", "lamp", "tea"], f"{victim} has no cart: {reply.data}")

    def summary(self) -> None:
        out = self.out
        out("")
        out("4. Summary")
        head = (
            "member",
            "pid",
            "state",
            "sessions",
            "requests",
            "replicated",
            "filtered",
            "unchanged",
            "rebound",
            "state transfer at start",
        )
        rows: list[tuple[str, ...]] = []
        for member, last in self.gone:
            rows.append(_row(member.route, member.pid, "killed", last))
        for route in ROUTES:
            m = self.members[route]
            restarted = any(g.route == route for g, _ in self.gone)
            rows.append(_row(route, m.pid, "restarted" if restarted else "running", self.stats(route)))
        rows.sort(key=lambda r: (r[0], r[2] != "killed"))
        for line in _table(head, rows, numeric=range(3, 9)):
            out("  " + line)
        out("  (counters of the web middleware; a killed process's are as of just before the kill)")
        assert self.failover_s is not None and self.rebind_s is not None
        out(
            f"  failover time: {_ms(self.failover_s)} (kill -> first successful response from another member)"
        )
        out(f"  route re-bound: {_ms(self.rebind_s)} after the kill")

    def stop(self) -> dict[str, str]:
        """Stop the members (they leave the cluster) and the balancer; how each member ended."""
        deadline = time.monotonic() + STOP_TIMEOUT
        for m in self.members.values():
            m.stop()
        ended = {route: m.join(deadline) for route, m in self.members.items()}
        if self.balancer is not None:
            self.balancer.stop()
        return ended

    def member_logs(self) -> list[str]:
        """What the member processes wrote to stderr (warnings and errors), killed ones included."""
        procs = [m for m, _ in self.gone] + list(self.members.values())
        return [f"{m.route} (pid {m.pid}): {line}" for m in procs for line in m.stderr]

    # -- the whole run -------------------------------------------------------------------------------

    def run(self) -> None:
        started = time.monotonic()
        self.start_members()
        balancer = self.start_balancer()
        alice = self.journey(balancer.port)
        victim = route_of(f"{COOKIE}={alice.session_id}")
        _check(victim in self.members, f"alice's session id has no member route: {alice.session_id}")
        assert victim is not None
        self.crash(alice, victim)
        self.restart(alice, victim)
        self.summary()
        self.out(f"  demo run: {time.monotonic() - started:.1f} s")


def _row(route: str, pid: int, state: str, stats: dict[str, Any]) -> tuple[str, ...]:
    web = stats["web"]
    return (
        route,
        str(pid),
        state,
        str(stats["sessions"]),
        *(str(web[k]) for k in ("requests", "replicated", "filtered", "unchanged", "rebound")),
        f"{_words(stats['state_transfer'])}, {stats['manager']['transfer_sessions_received']} received",
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Iterable[int]) -> list[str]:
    """Aligned text columns (numbers right-aligned), a rule under the header."""
    right = set(numeric)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def _check(condition: bool, failure: str) -> None:
    if not condition:
        raise DemoError(failure)


def run(
    keep_running: bool = False, mcast_port: int | None = None, out: Callable[[str], None] | None = None
) -> int:
    """Run the demo; returns the exit status (0: everything it claims was seen, 1: something was not,
    130: interrupted). With ``keep_running``, everything stays up until SIGINT (Ctrl-C) or SIGTERM."""
    emit = out or (lambda text: print(text, flush=True))
    stop_now = threading.Event()
    waiting = threading.Event()  # set while --keep-running waits for Ctrl-C

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if waiting.is_set():
            stop_now.set()
        else:
            raise _Stopped()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    demo = Demo(emit, mcast_port, keep_running)
    status = 0
    emit("tribes demo: 3 members and a load balancer on 127.0.0.1 (loopback only)")
    emit("")
    try:
        demo.run()
        logs = demo.member_logs()
        emit(f"  member warnings and errors: {len(logs) or 'none'}")
        for line in logs[-10:]:
            emit("    " + line)
        if keep_running:
            _keep_running(demo, emit, stop_now, waiting)
    except DemoError as exc:
        emit(f"tribes demo failed: {exc}")
        for line in demo.member_logs()[-20:]:
            emit("    " + line)
        status = 1
    except (_Stopped, KeyboardInterrupt):
        emit("Interrupted.")
        status = 130
    finally:
        waiting.clear()
        ended = demo.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if keep_running or status:
        emit("Stopped: " + "; ".join(f"{route} {how}" for route, how in ended.items()) + ".")
    return status


def _keep_running(
    demo: Demo, emit: Callable[[str], None], stop_now: threading.Event, waiting: threading.Event
) -> None:
    assert demo.balancer is not None
    emit("")
    emit("Everything stays up. Open in a browser:")
    emit(f"  load balancer  {demo.balancer.url}/")
    for route in ROUTES:
        m = demo.members[route]
        emit(f"  {route}          {m.url}/   (pid {m.pid}; stats: {m.url}/_tribes/stats)")
    emit("Kill a member (kill -9 <pid>) and reload through the load balancer to see a failover.")
    emit("Press Ctrl-C to stop.")
    waiting.set()
    reported: set[int] = set()
    while not stop_now.wait(0.5):  # until Ctrl-C or SIGTERM
        for route, m in demo.members.items():
            code = m.proc.poll()
            if code is not None and m.pid not in reported:
                reported.add(m.pid)
                emit(f"  {route} (pid {m.pid}) exited with status {code}")
    emit("Stopping ...")


if __name__ == "__main__":  # pragma: no cover - the member processes
    if "--member" in sys.argv[1:]:
        sys.exit(member_main(sys.argv[1:]))
    sys.exit(run())
