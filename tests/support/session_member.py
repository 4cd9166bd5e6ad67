#!/usr/bin/env python3
"""A tribes member with one session manager, in its own process, driven through stdin/stdout lines.

Used by the session crash tests (tests/test_session_crash.py): the test can SIGKILL this process at a
chosen point, for example right after ``COMMITTED``, which it cannot do to a cluster in its own process.
Everything stays on loopback (``tribes.ClusterConfig.local`` with the given multicast port). The manager
(``--manager``, kind ``--kind``, send mode ``--send-mode``) is named in the configuration, so
``cluster.start()`` creates it and runs its state transfer before ``READY`` is printed.

Lines printed (one per line, flushed at once; ``<member>`` is ``<host>:<port> <unique id hex>``)::

    READY <member> <transfer>      started; <transfer> is the manager's state_transfer outcome
    ADDED <member> / GONE <member> a member joined / left the view
    CREATED <sid>                  CREATE made a session (held here until COMMIT)
    OK SET <sid>                   the attribute is set on the working copy (not sent yet)
    COMMITTED <sid>                printed only after ``manager.commit()`` returned
    COMMITFAIL <sid> <json>        commit raised: {"error": class, "message": text}
    SESSION <sid> <json>           GET: the attributes of the session, as a JSON object
    NOSESSION <sid>                GET / SET / COMMIT: no such session here
    STATS <json>                   {"cluster": cluster.stats(), "manager": manager.stats()}
    ERROR <text>                   a command that could not be understood
    BYE                            after QUIT (or end of input): the cluster is stopped
    TIMEOUT                        --max-seconds elapsed; the process exits with status 3

Commands read from stdin (values are JSON, so they may contain spaces)::

    CREATE | SET <sid> <name> <json value> | COMMIT <sid> | GET <sid> | STATS | QUIT

End of input acts like QUIT, so the process never outlives a test that forgot it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from typing import Any

import tribes

_out_lock = threading.Lock()


def emit(line: str) -> None:
    """Print one line and flush; exit at once if the test process went away."""
    with _out_lock:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, OSError, ValueError):
            os._exit(4)


def member_text(member: Any) -> str:
    return f"{member.host}:{member.port} {member.unique_id.hex()}"


class SessionMember:
    """The process's manager and the working copies of the sessions being changed."""

    def __init__(self, cluster: tribes.Cluster, manager: tribes.SessionManager) -> None:
        self.cluster = cluster
        self.manager = manager
        self.open: dict[str, tribes.Session] = {}  # sessions touched since their last COMMIT

    def session(self, sid: str) -> tribes.Session | None:
        session = self.open.get(sid)
        if session is None:
            session = self.manager.get(sid)
            if session is not None:
                self.open[sid] = session
        return session

    def handle(self, line: str) -> bool:
        """Run one command; False when the process should stop."""
        parts = line.split(maxsplit=3)
        if not parts:
            return True
        cmd, rest = parts[0].upper(), parts[1:]
        if cmd == "QUIT":
            return False
        if cmd == "CREATE" and not rest:
            session = self.manager.create()
            self.open[session.id] = session
            emit(f"CREATED {session.id}")
        elif cmd == "SET" and len(rest) == 3:
            sid, name, text = rest
            try:
                value = json.loads(text)
            except ValueError:
                emit(f"ERROR SET: bad JSON {text!r}")
                return True
            session = self.session(sid)
            if session is None:
                emit(f"NOSESSION {sid}")
                return True
            session[name] = value
            emit(f"OK SET {sid}")
        elif cmd == "COMMIT" and len(rest) == 1:
            sid = rest[0]
            session = self.session(sid)
            if session is None:
                emit(f"NOSESSION {sid}")
                return True
            try:
                self.manager.commit(session)
            except Exception as exc:
                emit(f"COMMITFAIL {sid} " + json.dumps({"error": type(exc).__name__, "message": str(exc)}))
            else:
                emit(f"COMMITTED {sid}")  # only now: the commit returned
            finally:
                self.open.pop(sid, None)
        elif cmd == "GET" and len(rest) == 1:
            session = self.manager.get(rest[0])
            if session is None:
                emit(f"NOSESSION {rest[0]}")
            else:
                emit(f"SESSION {rest[0]} " + json.dumps(dict(session), sort_keys=True))
        elif cmd == "STATS" and not rest:
            emit("STATS " + json.dumps({"cluster": self.cluster.stats(), "manager": self.manager.stats()}))
        else:
            emit(f"ERROR unknown command {line.strip()!r}")
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mcast-port", type=int, required=True)
    parser.add_argument("--name", default="session-member")
    parser.add_argument("--manager", default="shop", help="the manager's name")
    parser.add_argument("--kind", default="delta", choices=["delta", "backup"])
    parser.add_argument("--send-mode", default="ack", choices=["async", "ack", "sync"])
    parser.add_argument("--max-seconds", type=float, default=120.0, help="hard limit on the process's life")
    parser.add_argument("--log-level", default="WARNING", help="level of the stderr log")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(name)s: %(message)s")
    limit = threading.Timer(args.max_seconds, lambda: (emit("TIMEOUT"), os._exit(3)))
    limit.daemon = True
    limit.start()

    config = tribes.ClusterConfig.local(
        name=args.name,
        membership={"port": args.mcast_port},
        managers={args.manager: {"kind": args.kind, "send_mode": args.send_mode}},
    )
    cluster = tribes.Cluster(config)
    cluster.add_membership_listener(
        lambda m: emit(f"ADDED {member_text(m)}"), lambda m: emit(f"GONE {member_text(m)}")
    )
    cluster.start()  # creates the manager and runs its state transfer
    manager = cluster.manager(args.manager)
    member = SessionMember(cluster, manager)
    emit(f"READY {member_text(cluster.local_member)} {manager.state_transfer}")
    try:
        for _ in range(10_000_000):  # bounded; the real bound is --max-seconds
            line = sys.stdin.readline()
            if not line:
                break
            try:
                if not member.handle(line):
                    break
            except Exception as exc:
                emit(f"ERROR {type(exc).__name__}: {exc}")
    finally:
        cluster.stop()
        emit("BYE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
