"""The framework adapters end to end: Flask (``tribes.flask``), Django (``SESSION_ENGINE = "tribes.django"``)
and Starlette (``tribes.starlette``), each as two members in two server processes (threaded stdlib WSGI
server, uvicorn), with httpx as the client, all on 127.0.0.1 (tests/support/framework_app.py).

The client keeps the session cookie itself and sends what it got from one member to the other, as a
browser behind a load balancer would.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import lineproc
from support.waiting import wait_for

FRAMEWORK_APP = Path(__file__).parent / "support" / "framework_app.py"
READY_TIMEOUT = 30.0
#: Each framework's session cookie: Flask's and Django's defaults, tribes' for Starlette.
COOKIE = {"flask": "session", "django": "sessionid", "starlette": "JSESSIONID"}
ID = re.compile(r"[0-9A-F]{32}\.([A-Za-z0-9_-]+)")


class FrameworkApp(lineproc.LineProcess):
    """tests/support/framework_app.py: one member serving the test application."""

    def __init__(self, framework: str, mcast_port: int, route: str) -> None:
        cmd = [sys.executable, str(FRAMEWORK_APP), "--framework", framework]
        cmd += ["--mcast-port", str(mcast_port), "--route", route]
        super().__init__(cmd, f"{framework}-{route}")
        self.framework = framework
        self.route = route
        line = self.wait_line("READY", timeout=READY_TIMEOUT)
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def _shutdown(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # the app leaves the cluster and exits at EOF
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)


class Browser:
    """One user: keeps the session cookie and sends it to whichever member it talks to."""

    def __init__(self, framework: str) -> None:
        self.cookie_name = COOKIE[framework]
        self.sid: str | None = None
        self.set_cookie: str | None = None  # of the last response: the new id, "" (deleted) or None

    def get(self, app: FrameworkApp, path: str) -> dict[str, Any]:
        headers = {"Cookie": f"{self.cookie_name}={self.sid}"} if self.sid else {}
        r = httpx.get(app.url + path, headers=headers, timeout=10.0)
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:500]}\n{app.dump()}"
        self.set_cookie = None
        for header in r.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            morsel = jar.get(self.cookie_name)
            if morsel is None:
                continue
            deleted = morsel["max-age"] == "0" or not morsel.value
            self.set_cookie = "" if deleted else morsel.value
            self.sid = None if deleted else morsel.value
        body: dict[str, Any] = r.json()
        return body


def stats(app: FrameworkApp) -> dict[str, Any]:
    return Browser(app.framework).get(app, "/_stats")


def start_pair(framework: str) -> tuple[FrameworkApp, FrameworkApp]:
    port = lineproc.free_mcast_port(47000, 48999)
    a = FrameworkApp(framework, port, "nodeA")
    try:
        b = FrameworkApp(framework, port, "nodeB")
    except BaseException:
        a.close()
        raise
    return a, b


@pytest.fixture(scope="module", params=["flask", "django", "starlette"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[FrameworkApp, FrameworkApp]]:
    """Two members of one cluster serving the same application (shared by this module's tests)."""
    a, b = start_pair(request.param)
    try:
        # Django's members start on first use: /_stats is that use (so ask both each time).
        wait_for(
            lambda: [stats(a)["peers"], stats(b)["peers"]] == [1, 1],
            20,
            lambda: f"the two {request.param} members to meet\n{a.dump()}\n{b.dump()}",
        )
        yield a, b
    finally:
        a.close()
        b.close()


def test_written_on_a_read_on_b(pair: tuple[FrameworkApp, FrameworkApp]) -> None:
    a, b = pair
    user = Browser(a.framework)

    # Reading a session that does not exist creates nothing and sets no cookie.
    assert user.get(a, "/get?k=user")["value"] is None
    assert user.set_cookie is None

    body = user.get(a, "/set?k=user&v=alice")
    sid = user.set_cookie
    match = ID.fullmatch(sid or "")
    assert match and match.group(1) == "nodeA", sid
    if a.framework == "flask":
        assert body["new"] is True and body["modified"] is True

    body = user.get(b, "/get?k=user")
    assert body["value"] == "alice" and body["route"] == "nodeB"
    assert user.set_cookie is None  # nodeA is alive: no re-binding, no new cookie
    if a.framework == "flask":
        assert body["new"] is False and body["modified"] is False

    # A list created on A, changed in place on B (no assignment, no "modified" flag), read on A.
    user.get(a, "/append?k=cart&v=apple")
    user.get(b, "/append?k=cart&v=pear")
    body = user.get(a, "/get?k=cart")
    assert body["value"] == ["apple", "pear"]
    assert body["keys"] == ["cart", "user"]
    assert user.sid == sid and user.set_cookie is None


def test_logout_ends_the_session_on_every_member(pair: tuple[FrameworkApp, FrameworkApp]) -> None:
    a, b = pair
    user = Browser(a.framework)
    user.get(a, "/set?k=user&v=bob")
    old = user.sid
    assert old is not None and user.get(b, "/get?k=user")["value"] == "bob"

    user.get(b, "/logout")
    assert user.set_cookie == "", "the logout response deletes the cookie"

    # The old cookie, replayed on the other member: the session is gone there too.
    user.sid = old
    assert user.get(a, "/get?k=user")["value"] is None
    # ... and writing with it starts a new session: the old id is never adopted again.
    user.sid = old
    user.get(a, "/set?k=user&v=carol")
    assert user.set_cookie and user.set_cookie != old
    assert ID.fullmatch(user.set_cookie)
    assert user.get(b, "/get?k=user")["value"] == "carol"


def test_cycle_rotates_the_id_on_every_member(pair: tuple[FrameworkApp, FrameworkApp]) -> None:
    a, b = pair
    user = Browser(a.framework)
    user.get(a, "/set?k=user&v=dave")
    old = user.sid
    assert old is not None

    user.get(b, "/cycle")  # Django: request.session.cycle_key(), as login() does
    new = user.set_cookie
    assert new and new != old and ID.fullmatch(new), (old, new)
    assert new.endswith(".nodeB"), "the rotated id carries the route of the member that rotated it"

    assert user.get(a, "/get?k=user")["value"] == "dave"  # the new id, on the other member
    assert user.sid == new
    user.sid = old
    assert user.get(a, "/get?k=user")["value"] is None  # the old id is gone everywhere
    user.sid = old
    assert user.get(b, "/get?k=user")["value"] is None


@pytest.mark.parametrize(
    "given",
    ["garbage", "0" * 32 + ".nodeA", "0123456789abcdefghijklmnopqrstuv", "A" * 31 + "g.nodeA", "x" * 3000],
    ids=["garbage", "unknown", "django-style", "not-hex", "long"],
)
def test_unknown_or_malformed_ids_start_a_new_session(
    pair: tuple[FrameworkApp, FrameworkApp], given: str
) -> None:
    a, b = pair
    user = Browser(a.framework)
    user.sid = given
    user.get(a, "/set?k=x&v=1")
    assert user.set_cookie and user.set_cookie != given and ID.fullmatch(user.set_cookie), user.set_cookie
    assert user.get(b, "/get?k=x")["value"] == "1"


@pytest.mark.parametrize("pair", ["flask", "starlette"], indirect=True)
def test_static_paths_are_not_replicated(pair: tuple[FrameworkApp, FrameworkApp]) -> None:
    a, _ = pair
    user = Browser(a.framework)
    user.get(a, "/set?k=user&v=erin")
    user.get(a, "/get?k=user")  # the client comes back once: the session is no longer new (replicated)
    before = stats(a)["web"]
    assert user.get(a, "/assets/app.css")["value"] == "erin"
    after = stats(a)["web"]
    assert after["filtered"] == before["filtered"] + 1
    assert after["replicated"] == before["replicated"]


@pytest.mark.parametrize("pair", ["flask"], indirect=True)
def test_flask_modified_and_permanent(pair: tuple[FrameworkApp, FrameworkApp]) -> None:
    a, b = pair
    user = Browser("flask")
    user.get(a, "/set?k=user&v=gina")
    sid = user.sid
    assert user.get(a, "/get?k=user")["modified"] is False and user.set_cookie is None

    # session.modified = True asks for the cookie again (same id), as with Flask's own sessions.
    assert user.get(b, "/touch")["modified"] is True
    assert user.set_cookie == sid

    # A permanent session: a cookie with an expiry date, and Flask's lifetime (31 days) as the
    # session's idle timeout on every member.
    r = httpx.get(a.url + "/permanent", headers={"Cookie": f"session={sid}"}, timeout=10.0)
    assert r.status_code == 200
    header = next(h for h in r.headers.get_list("set-cookie") if h.startswith("session="))
    assert f"session={sid}" in header and "Expires=" in header, header
    assert user.get(b, "/get?k=user")["max_inactive"] == 31 * 24 * 3600


def test_django_starts_its_member_lazily_once_per_process() -> None:
    a, b = start_pair("django")
    try:
        for app in (a, b):
            assert stats_without_start(app)["started"] is False  # serving, but no member yet
        user = Browser("django")
        user.get(a, "/get?k=user")  # no session key: nothing to load, still no member
        assert stats_without_start(a)["started"] is False

        user.get(a, "/set?k=user&v=frank")  # the first save starts the member
        first = stats_without_start(a)
        assert first["started"] is True
        assert stats_without_start(b)["started"] is False
        wait_for(lambda: [stats(a)["peers"], stats(b)["peers"]] == [1, 1], 20, "the members to meet")
        again = stats(a)
        assert again["member"] == first["member"], "one member per process"
        assert user.get(b, "/get?k=user")["value"] == "frank"  # B's state transfer brought it
    finally:
        a.close()
        b.close()


def stats_without_start(app: FrameworkApp) -> dict[str, Any]:
    return Browser(app.framework).get(app, "/_stats?start=0")
