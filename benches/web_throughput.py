#!/usr/bin/env python3
"""Web throughput benchmark: requests/s of one session-touching endpoint served by uvicorn, per session store.

Measures, in one run and on 127.0.0.1 only, the requests/s of ``GET /hit`` (read a value from the
session, increment a counter in it) served by uvicorn (one worker process; uvloop and httptools when
installed) behind each of these, every variant its own server process:

``none``         no sessions: the endpoint does the same reads and writes on a dict of the process;
``dict``         sessions in a dict of the server process, a minimal cookie middleware (the ceiling:
                 in-memory sessions, no replication);
``tribes-alone`` ``tribes.asgi.ReplicationMiddleware`` on a cluster with no other member, ``send_mode``
                 async and ack (what tribes costs before any network: the session table, the codec, the
                 commit; with no member, an ack commit has nothing to wait for);
``tribes``       the same with 2 peers (two more member processes, each serving the same application
                 on its own port), ``send_mode`` async and ack;
``redis``        sessions in a real ``redis-server`` (started here, no persistence) through
                 ``redis.asyncio``: one GET and one SET (JSON, 30 min expiry) per request.

The load generator for every variant is ``wrk`` (Debian's package): ``--connections`` connections, one
``wrk`` thread each, each connection with its own session cookie, made by one request before the
rounds, so that every timed request touches an existing session (``none`` gets an equally long dummy
cookie). Each round runs every variant for ``--seconds``, in an order that rotates from round to
round; medians over the rounds are shown, and ratios are medians of the per-round ratios (so that a
drift of the machine during the run hits both sides of a ratio alike). CPU time per request of each
process (server, peers, redis-server, wrk) comes from ``/proc`` around each round and shows where the
time goes.

After the rounds, each tribes variant with peers is checked: every session the load used holds the
same counter on the server and on both peers.

Replication delay, for the tribes variants with peers, over ``--delay-samples`` writes, one at a time,
each through member A with a header saying when A's application started its response (the middleware
commits right after): half the writes are watched by member B in its own session table (the moment
the new value is there, on the machine's one monotonic clock), half are read through B over HTTP
(``/read``, same cookie) after A's response, until B returns the new value.

Usage::

    python benches/web_throughput.py                 # defaults: 5 rounds x 3 s x 7 variants, ~2.5 min
    python benches/web_throughput.py --quick         # smoke run: 1 round x 1 s, ~30 s
    python benches/web_throughput.py --connections 64 --rounds 3 --seconds 5
    python benches/web_throughput.py --only dict,tribes-ack,redis
    python benches/web_throughput.py --work-us 500   # an endpoint that also computes for 0.5 ms
    python benches/web_throughput.py --json out.json # also save every figure

Needs ``wrk`` and ``redis-server`` (``apt-get install wrk redis-server``) and the ``bench`` extra
(``uvicorn`` and ``redis`` are the ones used); ``uvloop`` and ``httptools`` (``uvicorn[standard]``)
and ``hiredis`` are used when installed, and the report says which ran.

Targets (issue: the web layer): tribes ``ack`` ≥ 0.90 x the in-memory ceiling (``dict``) and ≥ 1.5 x
``redis``. For scale: Tomcat 10.1 with DeltaManager served 0.36 x the requests/s of the same Tomcat
without a cluster (one session; 0.32 x with 1,000), and a value written on A was readable on B after
a median 0.86 ms. All processes share this machine: the client, the server, its peers and
redis-server compete for the same cores, as they would in any one-machine measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import asdict, dataclass
from http.cookies import SimpleCookie
from typing import Any

from bench_common import JsonChild, free_mcast_port, json_replier, log, percentile, start_watchdog
from tribes.web import session_id_in

TARGET_ACK_VS_CEILING = 0.90
TARGET_ACK_VS_REDIS = 1.5
TOMCAT_DELTA_RATIO = 0.36  # Tomcat 10.1 DeltaManager / no cluster, one session (0.32 with 1,000)
TOMCAT_DELAY_MS = 0.86  # Tomcat: written on A, readable on B, median

MANAGER = "web"
COOKIE = "JSESSIONID"
CHILD_LIFETIME_S = 900.0  # a server process exits after this, whatever happens
BUSY_CORES = 0.25  # other processes busier than this (cores, on average over the rounds): warn
SESSION_TTL_S = 1800  # redis expiry, as tribes' default max_inactive

# (key, label, session store, tribes send mode, peers)
VARIANTS: tuple[tuple[str, str, str, str | None, int], ...] = (
    ("none", "no sessions (same work on a process dict)", "none", None, 0),
    ("dict", "in-memory dict sessions (ceiling)", "dict", None, 0),
    ("tribes-alone-async", "tribes, no peer, `async`", "tribes", "async", 0),
    ("tribes-alone-ack", "tribes, no peer, `ack`", "tribes", "ack", 0),
    ("tribes-async", "tribes, 2 peers, `async`", "tribes", "async", 2),
    ("tribes-ack", "tribes, 2 peers, `ack`", "tribes", "ack", 2),
    ("redis", "redis-server, 1 GET + 1 SET", "redis", None, 0),
)
CEILING = "dict"


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: Sequence[float]) -> str:
    if len(values) < 2:
        return ""
    return f" ({min(values):,.0f} to {max(values):,.0f})"


# ------------------------------------------------------------------------------------------------
# Server processes: the application and the session middlewares
# ------------------------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def make_endpoint(store: str, work_us: int = 0, peek: Callable[[str], Any] | None = None) -> ASGIApp:
    """The application: ``/hit`` reads ``user`` and increments ``counter`` (writing ``user`` on a session's
    first request); ``/read`` returns ``counter``. ``store == "none"``: the same on a dict of the process.
    ``/hit-stamped`` is ``/hit`` with an ``x-app-done`` header: the ``time.monotonic()`` at which the
    application started its response, before the middleware's commit. ``work_us``: every ``/hit`` also
    keeps the CPU busy that long (an application that does more than touch its session).

    ``/watch?sid=S&n=N`` (tribes members only, for the replication delay): starts its response at once, then
    polls ``peek(S)`` (the session's counter in this member's table, read without HTTP) until it is N,
    and ends the body with the ``time.monotonic()`` of that moment (``-1`` after 1 s). It blocks this
    member's event loop meanwhile: it is used only while nothing else is served here.
    """
    local: dict[str, Any] = {}
    plain = store == "none"
    headers = [(b"content-type", b"text/plain")]

    work_s = work_us / 1e6

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        session = local if plain else scope["session"]
        path = scope["path"]
        status = 200
        if path == "/hit" or path == "/hit-stamped":
            if work_s:
                end = time.perf_counter() + work_s
                while time.perf_counter() < end:
                    pass
            user = session.get("user")
            n = session.get("counter", 0) + 1
            session["counter"] = n
            if user is None:
                session["user"] = "bench-user@example.com"
            body = b"%d" % n
            if path == "/hit-stamped":
                # The moment the application hands its response to the middleware (which then commits).
                stamped = [*headers, (b"x-app-done", repr(time.monotonic()).encode())]
                await send({"type": "http.response.start", "status": 200, "headers": stamped})
                await send({"type": "http.response.body", "body": body})
                return
        elif path == "/read":
            body = b"%d" % session.get("counter", 0)
        elif path == "/watch" and peek is not None:
            query = dict(x.split("=", 1) for x in scope["query_string"].decode().split("&") if "=" in x)
            sid, want = query["sid"], int(query["n"])
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            end = time.monotonic() + 1.0
            seen = -1.0
            while True:
                now = time.monotonic()
                if peek(sid) == want:
                    seen = now
                    break
                if now > end:
                    break
            await send({"type": "http.response.body", "body": repr(seen).encode()})
            return
        else:
            status, body = 404, b"not found"
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def session_id_from(cookie_header: str | None) -> str | None:
    """The well-formed session id in a ``Cookie`` header (``tribes.web.Replicator``'s parser itself, so
    that every variant parses cookies alike)."""
    return session_id_in(cookie_header, COOKIE)


def set_cookie_header(sid: str) -> bytes:
    """A ``Set-Cookie`` value as tribes builds it (path, HttpOnly, SameSite=Lax)."""
    jar: SimpleCookie = SimpleCookie()
    jar[COOKIE] = sid
    morsel = jar[COOKIE]
    morsel["path"] = "/"
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    return morsel.OutputString().encode("latin-1")


def _cookie_of(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"cookie":
            return str(value.decode("latin-1"))
    return None


class DictSessions:
    """Sessions in a dict of this process: the ceiling. Created on first write; cookie like tribes'."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.sessions: dict[str, dict[str, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sid = session_id_from(_cookie_of(scope))
        data = self.sessions.get(sid) if sid is not None else None
        new = data is None
        if data is None:
            data = {}
        scope = dict(scope, session=data)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and new and data:
                new_id = secrets.token_hex(16).upper()
                self.sessions[new_id] = data
                message = dict(
                    message, headers=[*message.get("headers", ()), (b"set-cookie", set_cookie_header(new_id))]
                )
            await send(message)

        await self.app(scope, receive, send_wrapper)


class RedisSessions:
    """Sessions in redis-server: one GET when the request comes in, one SET (JSON, with expiry) when the
    response starts, as the usual Python session backends do."""

    def __init__(self, app: ASGIApp, port: int) -> None:
        import redis.asyncio

        self.app = app
        self.redis = redis.asyncio.Redis(host="127.0.0.1", port=port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sid = session_id_from(_cookie_of(scope))
        data: dict[str, Any] | None = None
        if sid is not None:
            raw = await self.redis.get(b"session:" + sid.encode())
            if raw is not None:
                data = json.loads(raw)
        new = data is None
        if data is None:
            data = {}
        scope = dict(scope, session=data)

        async def send_wrapper(message: Message) -> None:
            nonlocal sid
            if message["type"] == "http.response.start" and data:
                if new:
                    sid = secrets.token_hex(16).upper()
                    cookie = (b"set-cookie", set_cookie_header(sid))
                    message = dict(message, headers=[*message.get("headers", ()), cookie])
                assert sid is not None
                await self.redis.set(b"session:" + sid.encode(), json.dumps(data), ex=SESSION_TTL_S)
            await send(message)

        await self.app(scope, receive, send_wrapper)


def serve_main() -> int:
    """A server process: reads its settings as one JSON line, answers ``{"port": …}`` once it listens,
    then serves until ``quit`` (or stdin closes); ``stats`` answers the middleware's and cluster's
    counters."""

    start_watchdog(CHILD_LIFETIME_S)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # only answers go to the parent's pipe

    reply = json_replier(out)

    spec = json.loads(sys.stdin.readline())
    import uvicorn

    cluster = None
    middleware: Any = None
    try:
        app = make_endpoint(spec["store"], spec["work_us"])
        if spec["store"] == "dict":
            app = middleware = DictSessions(app)
        elif spec["store"] == "redis":
            app = middleware = RedisSessions(app, spec["redis_port"])
        elif spec["store"] == "tribes":
            import tribes
            import tribes.asgi

            cfg = tribes.ClusterConfig.local(
                name=f"bench-web-{spec['variant']}",
                membership={"port": spec["mcast_port"]},
                managers={MANAGER: {"send_mode": spec["mode"]}},
                route=spec["route"],
                **({"worker_threads": int(os.environ["BENCH_WT"])} if os.environ.get("BENCH_WT") else {}),
            )
            cluster = tribes.Cluster(cfg)
            cluster.start()
            if spec["wait_members"]:
                cluster.wait_for_members(spec["wait_members"], timeout=30)
            manager = cluster.manager(MANAGER)

            def peek(sid: str) -> Any:
                session = manager.peek(sid)
                return None if session is None else session.get("counter")

            app = middleware = tribes.asgi.ReplicationMiddleware(
                make_endpoint("tribes", spec["work_us"], peek), manager
            )
        loop = "uvloop" if _have("uvloop") else "asyncio"
        http_impl = "httptools" if _have("httptools") else "h11"
        config = uvicorn.Config(
            app,
            loop=loop,
            http=http_impl,
            lifespan="off",
            access_log=False,
            log_level="warning",
            backlog=1024,
        )
        server = uvicorn.Server(config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
    except Exception as exc:
        reply({"error": f"{type(exc).__name__}: {exc}"})
        return 1

    def commands() -> None:
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stats":
                doc: dict[str, Any] = {}
                if cluster is not None:
                    doc["web"] = middleware.stats()
                    doc["manager"] = cluster.manager(MANAGER).stats()
                    doc["channel"] = cluster.stats()
                    doc["members"] = len(cluster.members)
                elif isinstance(middleware, DictSessions):
                    doc["sessions"] = len(middleware.sessions)
                reply(doc)
            elif cmd == "quit":
                break
        server.should_exit = True

    threading.Thread(target=commands, daemon=True).start()
    reply({"port": sock.getsockname()[1], "pid": os.getpid(), "loop": loop, "http": http_impl})
    try:
        server.run(sockets=[sock])
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------------------------------------
# The parent: processes, CPU accounting, the load generator
# ------------------------------------------------------------------------------------------------


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a live process; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return 0.0


def thread_cpu(pid: int) -> tuple[float, float, float]:
    """CPU seconds of a live server process by thread: (its main thread, which runs the event loop; its
    other Python threads: commit workers, the tribes dispatcher; tribes' Rust threads, named ``tribes-…``)."""
    main = py = rust = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0, 0.0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        cpu = (int(fields[11]) + int(fields[12])) / _TICK
        if tid == str(pid):
            main += cpu
        elif comm.startswith("tribes"):
            rust += cpu
        else:
            py += cpu
    return main, py, rust


def machine_busy() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy (user + nice + system) and CPU seconds the hypervisor
    took from this virtual machine (steal), from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return (values[0] + values[1] + values[2]) / _TICK, values[7] / _TICK
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def waited_children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class Server:
    """One uvicorn process (a variant's server, or a peer member that serves the same application)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.child = JsonChild(__file__, "--serve", f"server {spec['variant']}/{spec['route']}", 60.0, 15.0)
        self.child.send(json.dumps(spec))
        self.port = 0
        self.pid = 0
        self.impl = ""

    def ready(self, timeout: float) -> None:
        got = self.child.answer(timeout)
        self.port, self.pid = got["port"], got["pid"]
        self.impl = f"{got['loop']}+{got['http']}"

    def stats(self) -> dict[str, Any]:
        return self.child.call("stats", 10.0)

    def close(self) -> None:
        self.child.close()


class Redis:
    """A redis-server of our own on 127.0.0.1, without persistence."""

    def __init__(self, binary: str) -> None:
        self.port = free_tcp_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = subprocess.Popen(
            [
                *(binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly"),
                *("no", "--dir", self.dir, "--logfile", "", "--loglevel", "warning", "--daemonize", "no"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"INFO server\r\n")
                    data = s.recv(65536).decode("latin-1")
                m = re.search(r"redis_version:(\S+)", data)
                return m.group(1) if m else "?"
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within {timeout:g} s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


WRK_SCRIPT = r"""
-- One thread per connection; each thread (so each connection) sends its own session cookie.
local n = 0
function setup(thread)
   n = n + 1
   thread:set("index", n)
end
function init(args)
   wrk.headers["Cookie"] = "JSESSIONID=" .. args[index]
end
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"connect\":%d,\"read\":%d,\"write\":%d," ..
      "\"status\":%d,\"timeout\":%d,\"p50_us\":%d,\"p99_us\":%d,\"mean_us\":%.1f}\n",
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def http_get(
    conn: http.client.HTTPConnection, path: str, cookie: str | None
) -> tuple[int, bytes, http.client.HTTPResponse]:
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, body, resp


def new_sessions(port: int, count: int) -> list[str]:
    """Session ids made by one ``/hit`` each (the first request of each client)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ids = []
    try:
        for _ in range(count):
            status, body, resp = http_get(conn, "/hit", None)
            set_cookie = resp.getheader("set-cookie")
            if status != 200 or not set_cookie:
                raise RuntimeError(f"port {port}: /hit answered {status} {body[:80]!r} without a cookie")
            ids.append(set_cookie.split(";", 1)[0].split("=", 1)[1])
    finally:
        conn.close()
    return ids


@dataclass
class Settings:
    rounds: int
    seconds: int  # per round, per variant (wrk takes whole seconds)
    warmup_s: int  # per variant, before the rounds
    connections: int  # wrk connections (one thread and one session each)
    delay_samples: int  # writes on A read on B, per tribes mode with peers
    work_us: int = 0  # CPU time the endpoint spends per request besides its session


FULL = Settings(rounds=5, seconds=3, warmup_s=2, connections=32, delay_samples=300)
QUICK = Settings(rounds=1, seconds=1, warmup_s=1, connections=16, delay_samples=50)


class Bench:
    def __init__(self, s: Settings, variants: list[str], wrk: str, redis_bin: str | None) -> None:
        self.s = s
        self.variants = variants
        self.wrk = wrk
        self.redis_bin = redis_bin
        self.servers: dict[str, Server] = {}
        self.peers: dict[str, list[Server]] = {}
        self.redis: Redis | None = None
        self.cookies: dict[str, list[str]] = {}
        self.anomalies: list[str] = []
        self.script = ""
        self.meta: dict[str, Any] = {}

    # -- processes ----------------------------------------------------------------------------------

    def start(self) -> None:
        used: set[int] = set()
        by_key = {v[0]: v for v in VARIANTS}
        if "redis" in self.variants:
            assert self.redis_bin is not None
            self.redis = Redis(self.redis_bin)
            self.meta["redis_version"] = self.redis.wait_ready(15)
        pending: list[Server] = []
        for key in self.variants:
            _, _, store, mode, peers = by_key[key]
            spec: dict[str, Any] = {"variant": key, "store": store, "mode": mode, "route": "node1"}
            spec["work_us"] = self.s.work_us
            spec["wait_members"] = peers
            if store == "tribes":
                spec["mcast_port"] = free_mcast_port(used)
                self.peers[key] = []
                for i in range(peers):
                    peer = Server({**spec, "route": f"node{i + 2}", "wait_members": 0})
                    self.peers[key].append(peer)
                    pending.append(peer)
            if store == "redis":
                assert self.redis is not None
                spec["redis_port"] = self.redis.port
            server = Server(spec)
            self.servers[key] = server
            pending.append(server)
        for srv in pending:  # every server was started above; they come up in parallel
            srv.ready(60)
        self.meta["server_impl"] = sorted({s.impl for s in pending})
        for key, peers in self.peers.items():
            if peers:
                members = self.servers[key].stats()["members"]
                if members != len(peers):
                    self.anomalies.append(f"{key}: the server sees {members} members, expected {len(peers)}")
        n = self.s.connections
        for key, srv in self.servers.items():
            if by_key[key][2] == "none":
                # The same request bytes as the others: a dummy cookie of a tribes id's length.
                self.cookies[key] = [secrets.token_hex(16).upper() + ".node1" for _ in range(n)]
            else:
                self.cookies[key] = new_sessions(srv.port, n)
        fd, self.script = tempfile.mkstemp(prefix="bench-wrk-", suffix=".lua")
        with os.fdopen(fd, "w") as f:
            f.write(WRK_SCRIPT)

    def close(self) -> None:
        for srv in [*self.servers.values(), *(p for ps in self.peers.values() for p in ps)]:
            with contextlib.suppress(Exception):
                srv.close()
        if self.redis is not None:
            self.redis.close()
        if self.script:
            with contextlib.suppress(OSError):
                os.unlink(self.script)

    def _pids(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for key, srv in self.servers.items():
            out[f"server:{key}"] = [srv.pid]
            out[f"peers:{key}"] = [p.pid for p in self.peers.get(key, [])]
        if self.redis is not None:
            out["redis"] = [self.redis.pid]
        return out

    # -- one measurement ----------------------------------------------------------------------------

    def wrk_round(self, key: str, seconds: int) -> dict[str, Any]:
        srv = self.servers[key]
        n = self.s.connections
        cmd = [self.wrk, "-t", str(n), "-c", str(n), "-d", f"{seconds}s", "--timeout", "5s"]
        cmd += ["-s", self.script, f"http://127.0.0.1:{srv.port}/hit", "--", *self.cookies[key]]
        pids = self._pids()
        cpu0 = {k: sum(proc_cpu(p) for p in ps) for k, ps in pids.items()}
        threads0 = thread_cpu(srv.pid)
        busy0, self0, kids0 = machine_busy(), self_cpu(), waited_children_cpu()
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
        wall = time.monotonic() - t0
        busy1, self1, kids1 = machine_busy(), self_cpu(), waited_children_cpu()
        cpu1 = {k: sum(proc_cpu(p) for p in ps) for k, ps in pids.items()}
        threads1 = thread_cpu(srv.pid)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")), None)
        if proc.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[:400]}")
        res: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
        reqs = res["requests"]
        res["rate"] = reqs / (res["duration_us"] / 1e6)
        errors = sum(res[k] for k in ("connect", "read", "write", "status", "timeout"))
        if errors:
            self.anomalies.append(f"{key}: {errors} wrk errors in a round ({res})")
        ours = sum(cpu1[k] - cpu0[k] for k in cpu0) + (self1 - self0) + (kids1 - kids0)
        res["other_cores"] = max(0.0, (busy1[0] - busy0[0]) - ours) / wall
        res["steal_cores"] = (busy1[1] - busy0[1]) / wall
        per = 1e6 / max(1, reqs)
        res["cpu_us"] = {
            "server": (cpu1[f"server:{key}"] - cpu0[f"server:{key}"]) * per,
            "peers": (cpu1[f"peers:{key}"] - cpu0[f"peers:{key}"]) * per,
            "redis": (cpu1["redis"] - cpu0["redis"]) * per if "redis" in cpu0 and key == "redis" else 0.0,
            "wrk": (kids1 - kids0) * per,
        }
        for name, c0, c1 in zip(("loop", "threads", "rust"), threads0, threads1, strict=True):
            res["cpu_us"][name] = (c1 - c0) * per
        res["server_cores"] = (cpu1[f"server:{key}"] - cpu0[f"server:{key}"]) / wall
        return res

    def run(self, deadline: float) -> dict[str, list[dict[str, Any]]]:
        log(f"warm-up: {self.s.warmup_s:g} s per variant")
        for key in self.variants:
            self.wrk_round(key, self.s.warmup_s)
        results: dict[str, list[dict[str, Any]]] = {k: [] for k in self.variants}
        for rnd in range(self.s.rounds):
            need = len(self.variants) * (self.s.seconds + 0.5)
            if rnd and deadline - time.monotonic() < need:
                log(f"skipping round {rnd + 1}: time budget")
                break
            shift = rnd % len(self.variants)
            order = self.variants[shift:] + self.variants[:shift]
            for key in order:
                r = self.wrk_round(key, self.s.seconds)
                results[key].append(r)
                log(
                    f"round {rnd + 1}/{self.s.rounds} {key:<19} {r['rate']:>8,.0f} req/s  p50 "
                    f"{r['p50_us'] / 1000:5.2f} ms  server {r['cpu_us']['server']:5.0f} µs/req "
                    f"({r['server_cores']:.2f} cores)  others busy {r['other_cores']:.2f} cores, steal "
                    f"{r['steal_cores']:.2f}"
                )
        return results

    # -- replication delay --------------------------------------------------------------------------

    def verify(self, key: str) -> dict[str, Any]:
        """After the load: every session the load used holds the same counter on the server and on each
        peer (read over HTTP, retried for up to 2 s: async commits may still be in flight), and the load
        created no session of its own (every request carried a known cookie)."""
        stats = self.servers[key].stats()
        out: dict[str, Any] = {"stats": stats}
        n = self.s.connections
        if "sessions" in stats and stats["sessions"] != n:
            self.anomalies.append(f"{key}: {stats['sessions']} sessions after the load, expected {n}")
        if "web" in stats and stats["web"]["created"] > n + 1:
            self.anomalies.append(f"{key}: {stats['web']['created']} sessions created, expected {n} (+1)")
        peers = self.peers.get(key) or []
        if not peers:
            return out
        conns = [
            http.client.HTTPConnection("127.0.0.1", x.port, timeout=10) for x in [self.servers[key], *peers]
        ]
        same = 0
        try:
            for sid in self.cookies[key]:
                end = time.monotonic() + 2.0
                while True:
                    values = [http_get(c, "/read", sid)[1] for c in conns]
                    if len(set(values)) == 1 or time.monotonic() > end:
                        break
                    time.sleep(0.01)
                if len(set(values)) == 1:
                    same += 1
                else:
                    self.anomalies.append(f"{key}: session {sid} differs between members: {values}")
        finally:
            for c in conns:
                c.close()
        out["sessions_identical_on_every_member"] = f"{same}/{len(self.cookies[key])}"
        return out

    def delay(self, key: str, deadline: float) -> dict[str, Any] | None:
        """Write through A (the variant's server) and time when B (its first peer) has the new value.

        Every write is ``/hit-stamped``, whose header says when A's application started the response
        (the middleware commits right after). Samples alternate between two probes. Table: B watches its
        own session table (``/watch``, started before the write) and stamps the moment the value is
        there. HTTP: after A's response, the client reads through B (``/read``, same cookie) until B
        returns the value. Every stamp is ``time.monotonic()``, one clock for all processes here.
        """
        peers = self.peers.get(key) or []
        if not peers:
            return None
        a_port, b_port = self.servers[key].port, peers[0].port
        a = http.client.HTTPConnection("127.0.0.1", a_port, timeout=10)
        b = http.client.HTTPConnection("127.0.0.1", b_port, timeout=10)
        figures: dict[str, list[float]] = {
            k: []
            for k in (
                "table",
                "table_after_response",
                "http",
                "http_after_response",
                "read",
                "commit_to_client",
            )
        }
        reads: list[int] = []
        missed = 0
        clock = time.monotonic

        def write(want: int) -> tuple[float, float]:
            """(A's application done, A's response here)."""
            status, body, resp = http_get(a, "/hit-stamped", sid)
            t1 = clock()
            if status != 200 or int(body) != want:
                raise RuntimeError(f"{key}: /hit-stamped on A answered {status} {body!r}, expected {want}")
            t_app = float(resp.getheader("x-app-done") or "nan")
            figures["commit_to_client"].append(t1 - t_app)
            return t_app, t1

        try:
            sid = new_sessions(a_port, 1)[0]
            n = int(http_get(a, "/hit", sid)[1])
            for i in range(self.s.delay_samples):
                if clock() > deadline:
                    self.anomalies.append(f"{key}: replication delay stopped at {i} samples (time budget)")
                    break
                time.sleep(0.002)  # one write at a time, with the members idle in between
                n += 1
                if i % 2 == 0:
                    b.request("GET", f"/watch?sid={sid}&n={n}")
                    watch = b.getresponse()  # its headers: B is watching
                    t_app, t1 = write(n)
                    seen = float(watch.read())
                    if seen < 0:
                        missed += 1
                    else:
                        figures["table"].append(seen - t_app)
                        figures["table_after_response"].append(seen - t1)
                    continue
                t_app, t1 = write(n)
                for tries in range(1, 2001):
                    r0 = clock()
                    got = http_get(b, "/read", sid)[1]
                    r1 = clock()
                    if got == b"%d" % n:
                        figures["http"].append(r1 - t_app)
                        figures["http_after_response"].append(r1 - t1)
                        figures["read"].append(r1 - r0)
                        reads.append(tries)
                        break
                    if r1 - t1 > 1.0:
                        missed += 1
                        break
        finally:
            a.close()
            b.close()
        if missed:
            self.anomalies.append(f"{key}: {missed} writes not on B within 1 s")
        out: dict[str, Any] = {"samples": len(figures["table"]) + len(figures["http"]), "missed": missed}
        for name, values in figures.items():
            values.sort()
            out[f"{name}_ms"] = percentile(values, 0.5) * 1000
            out[f"{name}_p99_ms"] = percentile(values, 0.99) * 1000
        out["first_read_hit"] = sum(1 for r in reads if r == 1) / max(1, len(reads))
        return out


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def paired_ratio(results: dict[str, list[dict[str, Any]]], a: str, b: str) -> float | None:
    """Median over the rounds of rate(a) / rate(b) in the same round."""
    if a not in results or b not in results:
        return None
    pairs = [x["rate"] / y["rate"] for x, y in zip(results[a], results[b], strict=False) if y["rate"] > 0]
    return _median(pairs) if pairs else None


def report(doc: dict[str, Any]) -> None:
    results: dict[str, list[dict[str, Any]]] = doc["rounds"]
    labels = {v[0]: v[1] for v in VARIANTS}
    meta = doc["meta"]
    st = meta["settings"]
    ceiling = CEILING if CEILING in results else None

    print()
    print(
        "| variant | req/s | vs ceiling | latency p50 / p99 | server CPU/req (loop + threads + Rust) "
        "| peers CPU/req | redis CPU/req | wrk CPU/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, rs in results.items():
        if not rs:
            continue
        rates = [r["rate"] for r in rs]
        ratio = paired_ratio(results, key, ceiling) if ceiling else None
        cpu = {
            k: _median([r["cpu_us"][k] for r in rs])
            for k in ("server", "loop", "threads", "rust", "peers", "redis", "wrk")
        }
        p50 = _median([r["p50_us"] for r in rs]) / 1000
        p99 = _median([r["p99_us"] for r in rs]) / 1000
        print(
            f"| `{key}`: {labels[key]}{_spread(rates)} | {_median(rates):,.0f} | "
            f"{f'{ratio:.2f}x' if ratio is not None else '-'} | {p50:.2f} / {p99:.2f} ms | "
            f"{cpu['server']:.0f} µs ({cpu['loop']:.0f} + {cpu['threads']:.0f} + {cpu['rust']:.0f}) | "
            f"{cpu['peers']:.0f} µs | {cpu['redis']:.0f} µs | {cpu['wrk']:.0f} µs |"
        )
    print()

    targets: dict[str, dict[str, Any]] = {}
    rows: list[list[str]] = []
    ack_ceiling = paired_ratio(results, "tribes-ack", CEILING)
    if ack_ceiling is not None:
        ok = ack_ceiling >= TARGET_ACK_VS_CEILING
        targets["ack_vs_ceiling"] = {"value": ack_ceiling, "target": TARGET_ACK_VS_CEILING, "pass": ok}
        rows.append(
            [
                "tribes `ack` (2 peers) / in-memory ceiling (`dict`)",
                f"{ack_ceiling:.2f}x",
                f"≥ {TARGET_ACK_VS_CEILING:.2f}x",
                verdict(ok),
                f"Tomcat DeltaManager {TOMCAT_DELTA_RATIO:.2f}x",
            ]
        )
    ack_redis = paired_ratio(results, "tribes-ack", "redis")
    if ack_redis is not None:
        ok = ack_redis >= TARGET_ACK_VS_REDIS
        targets["ack_vs_redis"] = {"value": ack_redis, "target": TARGET_ACK_VS_REDIS, "pass": ok}
        rows.append(
            [
                "tribes `ack` (2 peers) / `redis`",
                f"{ack_redis:.2f}x",
                f"≥ {TARGET_ACK_VS_REDIS:.1f}x",
                verdict(ok),
                "",
            ]
        )
    for a, b, what in (
        ("tribes-async", CEILING, "tribes `async` (2 peers) / in-memory ceiling (`dict`)"),
        ("tribes-async", "redis", "tribes `async` (2 peers) / `redis`"),
        ("tribes-alone-async", CEILING, "tribes alone `async` / `dict`: the session layer without network"),
        (
            "tribes-alone-ack",
            "tribes-alone-async",
            "tribes alone `ack` / alone `async`: ack mode with no member to wait for",
        ),
        (
            "tribes-ack",
            "tribes-alone-ack",
            "tribes `ack` 2 peers / alone `ack`: sending and waiting for acks",
        ),
        ("tribes-async", "tribes-alone-async", "tribes `async` 2 peers / alone `async`: sending"),
        ("tribes-ack", "tribes-alone-async", "tribes `ack` 2 peers / alone `async` (tribes' own ceiling)"),
        ("dict", "none", "`dict` / `none`: a minimal session middleware"),
        ("redis", CEILING, "`redis` / `dict`"),
    ):
        r = paired_ratio(results, a, b)
        if r is not None:
            tomcat = (
                f"Tomcat DeltaManager {TOMCAT_DELTA_RATIO:.2f}x"
                if a == "tribes-async" and b == CEILING
                else ""
            )
            rows.append([what, f"{r:.2f}x", "", "", tomcat])
    for key, d in doc.get("delay", {}).items():
        if not d:
            continue
        rows.append(
            [
                f"`{key}`: written through A, in B's session table: median from A's application starting "
                f"its response (commit, send, apply on B; p99 {d['table_p99_ms']:.2f} ms; relative to A's "
                f"response reaching the client {d['table_after_response_ms']:+.2f} ms)",
                f"{d['table_ms']:.2f} ms",
                "",
                "",
                f"Tomcat {TOMCAT_DELAY_MS:.2f} ms",
            ]
        )
        rows.append(
            [
                f"`{key}`: written through A, readable through B over HTTP: median from A's application "
                f"starting its response to B's answer (from A's response {d['http_after_response_ms']:.2f} "
                f"ms; B's first read had it {d['first_read_hit']:.0%}; one read {d['read_ms']:.2f} ms; A's "
                f"response start to client {d['commit_to_client_ms']:.2f} ms; {d['samples']} writes)",
                f"{d['http_ms']:.2f} ms",
                "",
                "",
                f"Tomcat {TOMCAT_DELAY_MS:.2f} ms",
            ]
        )
    print("| measure | value | target | result | for scale |")
    print("|---|---:|---:|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()

    m = meta["machine"]
    others = [r["other_cores"] for rs in results.values() for r in rs]
    steal = [r["steal_cores"] for rs in results.values() for r in rs]
    rounds = len(next(iter(results.values()), []))
    work = f"{st['work_us']} µs of CPU work, then " if st.get("work_us") else ""
    notes = [
        f"req/s: medians over {rounds} round(s) of {st['seconds']} s per variant (after {st['warmup_s']} s",
        "of warm-up each), variants interleaved in a rotating order; ratios are medians of the per-round",
        f"ratios. Load: `wrk` {meta['wrk_version']}, {st['connections']} connections with one thread and one",
        f"session each; latency as wrk reports it. Endpoint: {work}read `user`, increment `counter`.",
        f"Server: uvicorn {meta['uvicorn_version']} ({', '.join(meta['server_impl'])}), 1 worker;",
        f"redis-server {meta.get('redis_version', '-')}, redis-py {meta.get('redis_py_version', '-')}.",
        "CPU/req: CPU time (user + system, every thread) of each process per request served; the server's",
        "split into its event-loop thread, its other Python threads (ack-mode commits run in the loop's",
        "default executor) and tribes' Rust threads.",
    ]
    print(" ".join(notes))
    print(
        f"Machine: nproc={m['nproc']}, CPU {m['cpu']}, Linux {m['kernel']}; Python {m['python']}; "
        f"tribes {meta['tribes_version']}; elapsed {meta['elapsed_s']:.0f} s; other processes kept "
        f"{_median(others):.2f} cores busy during the rounds (median; max {max(others, default=0):.2f}), "
        f"and the hypervisor took {_median(steal):.2f} cores from this machine (steal; max "
        f"{max(steal, default=0):.2f})."
    )
    checks = [
        f"`{k}` {c['sessions_identical_on_every_member']}"
        for k, c in doc.get("checks", {}).items()
        if "sessions_identical_on_every_member" in c
    ]
    if checks:
        print(
            "After the load, sessions holding the same counter on the server and on both peers: "
            + ", ".join(checks)
            + "."
        )
    if targets:
        print(
            "Targets: "
            + "; ".join(
                f"{k} {t['value']:.2f} (target {t['target']:.2f}) → {verdict(t['pass'])}"
                for k, t in targets.items()
            )
            + "."
        )
    if _median(others) + _median(steal) > BUSY_CORES:
        print(
            "WARNING: the machine was not quiet (other processes, or the hypervisor, took CPU meanwhile): "
            "figures are low and noisy; rerun on an idle machine."
        )
    for a in doc.get("anomalies", []):
        print(f"ANOMALY: {a}")
    doc["targets"] = targets


def tool_version(cmd: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else "?"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s, 16 connections (~25 s)")
    p.add_argument("--rounds", type=int, help="rounds (default 5); medians are shown")
    p.add_argument("--seconds", type=int, help="whole seconds per variant per round (default 3)")
    p.add_argument("--warmup", type=int, help="whole seconds of warm-up per variant (default 2)")
    p.add_argument("--connections", type=int, help="wrk connections, one session each (default 32)")
    p.add_argument("--delay-samples", type=int, help="writes timed for the replication delay (default 300)")
    p.add_argument(
        "--work-us",
        type=int,
        help="µs of CPU work the endpoint does per request besides the session (default 0)",
    )
    p.add_argument("--only", metavar="VARIANTS", help="comma-separated: " + ", ".join(v[0] for v in VARIANTS))
    p.add_argument("--json", metavar="FILE", help="also save every figure as JSON")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve_main()

    s = QUICK if args.quick else FULL
    over: dict[str, Any] = {}
    if args.rounds is not None:
        over["rounds"] = max(1, min(args.rounds, 30))
    if args.seconds is not None:
        over["seconds"] = max(1, min(args.seconds, 60))
    if args.warmup is not None:
        over["warmup_s"] = max(1, min(args.warmup, 30))
    if args.connections is not None:
        over["connections"] = max(1, min(args.connections, 256))
    if args.delay_samples is not None:
        over["delay_samples"] = max(1, min(args.delay_samples, 10_000))
    if args.work_us is not None:
        over["work_us"] = max(0, min(args.work_us, 100_000))
    if over:
        s = Settings(**{**asdict(s), **over})
    variants = [v[0] for v in VARIANTS]
    if args.only:
        chosen = [x.strip() for x in args.only.split(",") if x.strip()]
        if not chosen or not set(chosen) <= set(variants):
            raise SystemExit(f"--only takes a comma-separated list of {', '.join(variants)}")
        variants = [v for v in variants if v in chosen]

    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    redis_bin = shutil.which("redis-server")
    if "redis" in variants and redis_bin is None:
        raise SystemExit(
            "redis-server not found: apt-get install redis-server (or leave out the redis variant)"
        )
    import uvicorn

    import tribes

    budget = (
        40 + len(variants) * (s.warmup_s + 0.5 + s.rounds * (s.seconds + 0.5)) + 2 * s.delay_samples * 0.02
    )
    hard_limit = int(budget * 1.5) + 60

    def overrun(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the benchmark exceeded its hard time limit ({hard_limit} s)")

    # Every loop is bounded by count and time; this catches a call that never returns.
    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(hard_limit)
    t_start = time.monotonic()
    deadline = t_start + budget * 1.3
    doc: dict[str, Any] = {}
    bench = Bench(s, variants, wrk, redis_bin)
    try:
        log(f"starting {len(variants)} server(s), their peers and redis-server")
        bench.start()
        doc["rounds"] = bench.run(deadline)
        doc["delay"] = {}
        for key in variants:
            if bench.peers.get(key):
                log(f"replication delay: {key}")
                doc["delay"][key] = bench.delay(key, deadline + 30)
        doc["checks"] = {key: bench.verify(key) for key in variants if key != "none"}
    finally:
        bench.close()
        signal.alarm(0)
    redis_py = "-"
    with contextlib.suppress(ImportError):
        import redis

        hiredis = getattr(getattr(redis, "utils", None), "HIREDIS_AVAILABLE", False)
        redis_py = redis.__version__ + (" with hiredis" if hiredis else "")
    bench.meta.update(
        {
            "machine": machine(),
            "tribes_version": tribes.__version__,
            "uvicorn_version": uvicorn.__version__,
            "redis_py_version": redis_py,
            "wrk_version": tool_version([wrk, "-v"], r"wrk (\S+)"),
            "settings": asdict(s),
            "elapsed_s": time.monotonic() - t_start,
        }
    )
    doc["meta"] = bench.meta
    doc["anomalies"] = bench.anomalies
    report(doc)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
