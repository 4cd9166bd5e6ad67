"""A child process driven through a line protocol, and the session's port pickers.

Shared by tests/conftest.py (``MemberProcess``: tests/support/member_proc.py) and
tests/interop/conftest.py (``JavaPeer``: java/TribesPeer.java). Both speak the same kind of protocol:
one command per line on the child's stdin, one event per line on its stdout (``WORD [fields…]``),
``QUIT`` to stop. :class:`LineProcess` starts the child with piped stdin/stdout/stderr, collects its
output on reader threads and offers the bounded waits on it; the subclasses add their own commands.

Imported as ``support.lineproc``: tests/conftest.py makes sure the tests directory is on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"

# --------------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------------

# One record for the whole session: the callers pick from ranges of their own, so these only keep a
# picker from handing out the same port twice.
_used_udp_ports: set[int] = set()
_used_tcp_ports: set[int] = set()
_rng = random.Random()


def _udp_port_free(port: int) -> bool:
    # No SO_REUSEADDR: this bind collides with a cluster's multicast socket bound to (group, port),
    # so a port another test's cluster uses is rejected. Bound to the group, never to a wildcard
    # address (tests bind nothing beyond loopback and the test group); nothing is sent.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("228.0.0.4", port))
        except OSError:
            return False
    return True


def _tcp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _pick_port(
    lo: int, hi: int, attempts: int, used: set[int], is_free: Callable[[int], bool], what: str
) -> int:
    for _ in range(attempts):
        port = _rng.randint(lo, hi)
        if port not in used and is_free(port):
            used.add(port)
            return port
    raise RuntimeError(f"no free {what} port in {lo}-{hi}")


def free_mcast_port(lo: int, hi: int, attempts: int = 500) -> int:
    """A multicast (UDP) port in [lo, hi] not handed out before in this session and not bound now."""
    return _pick_port(lo, hi, attempts, _used_udp_ports, _udp_port_free, "multicast")


def free_tcp_port(lo: int, hi: int, attempts: int = 500) -> int:
    """A loopback TCP port in [lo, hi] not handed out before in this session and free now."""
    return _pick_port(lo, hi, attempts, _used_tcp_ports, _tcp_port_free, "TCP")


# --------------------------------------------------------------------------------------------------
# Line-protocol processes
# --------------------------------------------------------------------------------------------------


def line_matches(line: str, prefix: str, predicate: Callable[[str], bool] | None = None) -> bool:
    """True when ``line`` is ``prefix`` or starts with ``prefix + " "``, and satisfies ``predicate``."""
    if not (line == prefix or line.startswith(prefix + " ")):
        return False
    return predicate is None or predicate(line)


class LineProcess:
    """A running child process: commands to its stdin, stdout lines collected by a reader thread.

    Every wait is bounded; its default deadline is the class's :attr:`event_timeout`.
    """

    #: Default deadline (s) of :meth:`wait_line`, :meth:`wait_line_timed` and :meth:`request`.
    event_timeout = 10.0
    #: How many lines of each stream :meth:`dump` shows.
    dump_tail = 40
    #: Longer stdout lines are cut to this many characters in :meth:`dump` (None: shown whole).
    dump_line_chars: int | None = 300

    def __init__(self, cmd: list[str], name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._lines: list[tuple[float, str]] = []  # (time.monotonic() when read, line)
        self._stderr: list[str] = []
        self._eof = False
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
        self._out_thread = threading.Thread(target=self._read_stdout, name=f"{name}-stdout", daemon=True)
        self._err_thread = threading.Thread(target=self._read_stderr, name=f"{name}-stderr", daemon=True)
        self._out_thread.start()
        self._err_thread.start()

    # -- reader threads (never raise) --

    def _read_stdout(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        try:
            for raw in stream:
                now = time.monotonic()
                with self._cond:
                    self._lines.append((now, raw.rstrip("\r\n")))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        try:
            for raw in stream:
                with self._cond:
                    self._stderr.append(raw.rstrip("\r\n"))
                    if len(self._stderr) > 2000:
                        del self._stderr[:1000]
        except (OSError, ValueError):
            pass

    # -- output --

    def lines(self, since: int = 0) -> list[str]:
        with self._cond:
            return [line for _, line in self._lines[since:]]

    def mark(self) -> int:
        """Index to pass as ``since`` to look only at lines printed from now on."""
        with self._cond:
            return len(self._lines)

    def stderr_text(self) -> str:
        with self._cond:
            return "\n".join(self._stderr)

    def describe(self) -> str:
        """What :meth:`dump` says about the process between its name and its return code."""
        return f"pid={self.pid}"

    def dump(self, tail: int | None = None) -> str:
        """The process's state and the tail of its output, for assertion messages."""
        if tail is None:
            tail = self.dump_tail
        cut = self.dump_line_chars
        with self._cond:
            out = [
                line if cut is None or len(line) < cut else line[:cut] + "…"
                for _, line in self._lines[-tail:]
            ]
            err = list(self._stderr[-tail:])
        return (
            f"--- {self.name} {self.describe()} returncode={self.proc.poll()}\n"
            "--- stdout (tail):\n" + "\n".join(out) + "\n--- stderr (tail):\n" + "\n".join(err)
        )

    def _wait_match(
        self, match: Callable[[str], bool], timeout: float, since: int
    ) -> tuple[float, str] | None:
        """The first line at index >= ``since`` that ``match`` accepts, as (time read, line); None when
        the deadline passes or stdout closes first."""
        deadline = time.monotonic() + timeout
        pos = since
        with self._cond:
            while True:
                while pos < len(self._lines):
                    ts, line = self._lines[pos]
                    pos += 1
                    if match(line):
                        return ts, line
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def wait_line_timed(
        self,
        prefix: str,
        predicate: Callable[[str], bool] | None = None,
        timeout: float | None = None,
        since: int = 0,
    ) -> tuple[float, str]:
        """Wait for the first line at index >= ``since`` that is ``prefix`` or starts with
        ``prefix + " "`` and satisfies ``predicate``; return (time.monotonic() it was read, line).

        Raises AssertionError with the process's output at the deadline or when its stdout closes.
        """
        if timeout is None:
            timeout = self.event_timeout
        found = self._wait_match(lambda line: line_matches(line, prefix, predicate), timeout, since)
        if found is not None:
            return found
        why = "its stdout closed" if self._eof else f"no match within {timeout:.2f} s"
        raise AssertionError(f"{self.name}: waiting for a {prefix!r} line: {why}\n{self.dump()}")

    def wait_line(
        self,
        prefix: str,
        predicate: Callable[[str], bool] | None = None,
        timeout: float | None = None,
        since: int = 0,
    ) -> str:
        """Like :meth:`wait_line_timed`, returning only the line."""
        return self.wait_line_timed(prefix, predicate, timeout, since)[1]

    def has_line(self, prefix: str, predicate: Callable[[str], bool] | None = None, since: int = 0) -> bool:
        return any(line_matches(line, prefix, predicate) for line in self.lines(since))

    # -- commands --

    def command(self, text: str) -> None:
        """Write one command line to the process."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(text + "\n")
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise AssertionError(f"{self.name}: cannot write {text[:60]!r}: {exc}\n{self.dump()}") from exc

    def request(self, text: str, *reply_prefixes: str, timeout: float | None = None) -> str:
        """Send a command; return the first later line starting with one of ``reply_prefixes``."""
        if timeout is None:
            timeout = self.event_timeout
        since = self.mark()
        self.command(text)
        found = self._wait_match(
            lambda line: any(line_matches(line, p) for p in reply_prefixes), timeout, since
        )
        if found is not None:
            return found[1]
        raise AssertionError(
            f"{self.name}: no {reply_prefixes} reply to {text[:60]!r} within {timeout:.2f} s\n{self.dump()}"
        )

    # -- lifecycle --

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit (after QUIT); returns its exit status, kills it at the deadline."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name}: did not exit within {timeout} s of QUIT\n{self.dump()}"
            ) from None

    def stop(self, timeout: float = 10.0) -> int:
        """QUIT, then wait for the process to exit; returns its exit status."""
        self.command("QUIT")
        return self.wait_exit(timeout)

    def _shutdown(self) -> None:
        """Ask the (still running) process to exit; :meth:`close` kills it afterwards in any case."""
        with contextlib.suppress(AssertionError):
            self.stop(timeout=5.0)

    def close(self) -> None:
        """Stop politely if still running, kill if that fails; release pipes and threads."""
        if self.proc.poll() is None:
            self._shutdown()
        self.kill()
        self._out_thread.join(timeout=5)
        self._err_thread.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
