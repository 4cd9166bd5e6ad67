"""The replication middleware with real servers in their own processes and httpx as the client: a
threaded stdlib WSGI server, uvicorn (ASGI) and gunicorn with two workers, all on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
from hypothesis import strategies as st

from support import lineproc
from support.waiting import wait_for
from tribes.web import DEFAULT_FILTER, _default_filter_matches

SUPPORT = Path(__file__).parent / "support"
WEB_APP = SUPPORT / "web_app.py"
READY_TIMEOUT = 30.0
ID = re.compile(r"[0-9A-F]{32}\.(\S+)")


class WebApp(lineproc.LineProcess):
    """tests/support/web_app.py: a member serving the test app."""

    def __init__(self, server: str, mcast_port: int, route: str, **opts: str) -> None:
        cmd = [sys.executable, str(WEB_APP), "--server", server, "--mcast-port", str(mcast_port)]
        cmd += ["--route", route]
        for key, value in opts.items():
            cmd += [f"--{key.replace('_', '-')}", value]
        super().__init__(cmd, f"{server}-{route}")
        line = self.wait_line("READY", timeout=READY_TIMEOUT)
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        self.route = route

    def _shutdown(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # the app exits at EOF
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)


@pytest.fixture
def apps() -> Iterator[Callable[..., WebApp]]:
    started: list[WebApp] = []

    def start(server: str, mcast_port: int, route: str, **opts: str) -> WebApp:
        app = WebApp(server, mcast_port, route, **opts)
        started.append(app)
        return app

    yield start
    for app in started:
        app.close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def call(
    c: httpx.Client, app: WebApp, path: str, sid: str | None = None
) -> tuple[dict[str, Any], str | None]:
    """GET ``path`` on ``app`` with the session cookie ``sid``; the JSON answer and the new cookie."""
    headers = {"Cookie": f"JSESSIONID={sid}"} if sid else {}
    r = c.get(app.url + path, headers=headers)
    assert r.status_code == 200, r.text
    new = r.cookies.get("JSESSIONID")
    return r.json(), new


def _peers(c: httpx.Client, app: WebApp) -> int:
    stats, _ = call(c, app, "/_stats")
    return int(stats.get("peers", 0))


@pytest.mark.parametrize("server", ["stdlib", "uvicorn"])
def test_written_on_a_read_on_b(server: str, apps: Callable[..., WebApp], client: httpx.Client) -> None:
    port = lineproc.free_mcast_port(47000, 48999)
    a, b = apps(server, port, "node1"), apps(server, port, "node2")
    wait_for(lambda: _peers(client, a) == 1 and _peers(client, b) == 1, 15, "the two members to meet")

    # A request that touches nothing creates nothing and sets no cookie.
    body, cookie = call(client, a, "/whoami")
    assert cookie is None and body["route"] == "node1"
    assert call(client, a, "/_stats")[0]["sessions"] == 0

    _, sid = call(client, a, "/set?k=user&v=alice")
    assert sid is not None and sid.endswith(".node1")
    call(client, a, "/append?k=cart&v=apple", sid)
    call(client, a, "/append?k=cart&v=pear", sid)  # in place
    body, cookie = call(client, b, "/get?k=cart", sid)
    assert body["value"] == ["apple", "pear"] and body["route"] == "node2"
    assert cookie is None  # node1 is alive: no re-binding
    assert call(client, b, "/get?k=user", sid)[0]["value"] == "alice"

    # A static path does not replicate (Tomcat's filter), and is counted.
    before = call(client, a, "/_stats")[0]["web"]
    call(client, a, "/static/app.css", sid)
    after = call(client, a, "/_stats")[0]["web"]
    assert after["filtered"] == before["filtered"] + 1
    assert after["replicated"] == before["replicated"]


def test_unknown_or_malformed_ids_are_never_adopted(
    apps: Callable[..., WebApp], client: httpx.Client
) -> None:
    port = lineproc.free_mcast_port(47000, 48999)
    a = apps("stdlib", port, "node1")
    for given in ["garbage", "0" * 32 + ".node1", "A" * 32, "A" * 31 + "g.node1", "x" * 5000]:
        body, sid = call(client, a, "/set?k=x&v=1", given)
        assert sid is not None and sid != given and ID.fullmatch(sid), (given, sid)
        assert body["id"] == sid


def test_cycle_id_and_logout(apps: Callable[..., WebApp], client: httpx.Client) -> None:
    port = lineproc.free_mcast_port(47000, 48999)
    a, b = apps("stdlib", port, "node1"), apps("stdlib", port, "node2")
    wait_for(lambda: _peers(client, a) == 1 and _peers(client, b) == 1, 15, "the two members to meet")
    _, sid = call(client, a, "/set?k=user&v=alice")
    assert sid is not None
    _, new = call(client, a, "/cycle", sid)
    assert new is not None and new != sid
    assert call(client, b, "/get?k=user", new)[0]["value"] == "alice"
    assert call(client, b, "/get?k=user", sid)[0]["value"] is None  # the old id is dead everywhere
    r = client.get(a.url + "/logout", headers={"Cookie": f"JSESSIONID={new}"})
    assert 'JSESSIONID=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    assert call(client, b, "/get?k=user", new)[0]["value"] is None


@pytest.mark.parametrize("server", ["stdlib", "uvicorn"])
def test_failover_rewrites_the_route_and_keeps_the_data(
    server: str, apps: Callable[..., WebApp], client: httpx.Client
) -> None:
    port = lineproc.free_mcast_port(47000, 48999)
    a, b = apps(server, port, "node1"), apps(server, port, "node2")
    wait_for(lambda: _peers(client, a) == 1 and _peers(client, b) == 1, 15, "the two members to meet")
    _, sid = call(client, a, "/set?k=cart&v=apple")
    assert sid is not None and sid.endswith(".node1")
    a.kill()
    wait_for(lambda: _peers(client, b) == 0, 15, "node2 to notice that node1 is gone")
    body, new = call(client, b, "/get?k=cart", sid)
    assert body["value"] == "apple"
    assert new is not None and new.endswith(".node2") and new.split(".")[0] != sid.split(".")[0]
    stats = call(client, b, "/_stats")[0]["web"]
    assert stats["rebound"] == 1
    assert call(client, b, "/get?k=cart", new)[0]["value"] == "apple"


def test_gunicorn_two_workers_share_sessions(client: httpx.Client, tmp_path: Path) -> None:
    """Each gunicorn worker is its own member (started by tribes.prefork's post_fork hook): a session
    written through one worker is read through the other."""
    port = lineproc.free_mcast_port(47000, 48999)
    http_port = lineproc.free_tcp_port(20000, 29999)
    env = dict(os.environ, TRIBES_TEST_MCAST_PORT=str(port), TRIBES_TEST_ROUTE="node1")
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(SUPPORT / "gunicorn_conf.py")]
    cmd += ["-b", f"127.0.0.1:{http_port}", "web_app:wsgi_app"]
    log = (tmp_path / "gunicorn.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:

        def routes_seen() -> set[str]:
            seen = set()
            for _ in range(20):
                with httpx.Client(timeout=5.0) as fresh:  # a new connection: either worker may take it
                    try:
                        seen.add(fresh.get(url + "/whoami").json()["route"])
                    except httpx.TransportError:
                        return set()
            return seen

        wait_for(lambda: routes_seen() == {"node1-w1", "node1-w2"}, 60, "both workers to serve")

        def stats_peers() -> bool:
            with httpx.Client(timeout=5.0) as fresh:
                return int(fresh.get(url + "/_stats").json().get("peers", 0)) == 1

        wait_for(stats_peers, 30, "the workers to see each other")
        with httpx.Client(timeout=5.0) as fresh:
            r = fresh.get(url + "/set?k=user&v=alice")
        sid = r.cookies["JSESSIONID"]
        writer = r.json()["route"]

        def read_by_the_other() -> Any:
            with httpx.Client(timeout=5.0) as fresh:
                body = fresh.get(url + "/get?k=user", headers={"Cookie": f"JSESSIONID={sid}"}).json()
            return body if body["route"] != writer else None

        body = wait_for(read_by_the_other, 30, "a request served by the other worker")
        assert body["value"] == "alice", (tmp_path / "gunicorn.log").read_text()
    finally:
        log.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


_ENDINGS = ["", ".gif", ".js", ".woff", ".woff2", ".woff3", ".HTML", ".", "\n"]


@hypothesis.given(st.text(alphabet="ab./\n\u00e9gijsptxcmlhofwGIF2e", max_size=12), st.sampled_from(_ENDINGS))
def test_the_default_filter_without_regex_agrees_with_the_regex(head: str, ending: str) -> None:
    """The replicator checks Tomcat's default static filter without the regex engine; it must answer
    exactly as ``re.fullmatch(DEFAULT_FILTER, path)``."""
    path = head + ending
    assert _default_filter_matches(path) == (re.fullmatch(DEFAULT_FILTER, path) is not None)
