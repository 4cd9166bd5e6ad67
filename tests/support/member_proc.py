#!/usr/bin/env python3
"""A tribes member in its own process, driven through stdin/stdout like the Java interop peer.

Started by the ``member_process`` fixture (tests/conftest.py). Everything stays on loopback: the
configuration is ``tribes.ClusterConfig.local`` (multicast on 127.0.0.1 with TTL 0, receiver on
127.0.0.1) with the given multicast port. ``--secret`` / ``--secondary-secret`` (repeatable) set the
cluster's key ring; without ``--secret`` the config reads ``TRIBES_SECRET`` / ``TRIBES_SECONDARY_SECRETS``
from the inherited environment. ``--log-level`` sets the stderr log level (default WARNING).

Lines printed (one event per line, flushed at once; ``<member>`` is ``<host>:<port> <unique id hex>``)::

    READY <member>                 the cluster started (this process's own member)
    ADDED <member>                 a member joined
    GONE <member>                  a member left
    MSG <host>:<port> <hex>        a message from that member (printed by the listener, *before* it
                                   returns, so before a ``sync`` ack goes out; empty payload: no hex)
    SENT                           the last SEND succeeded
    SENDFAIL <json>                it failed: {"error": class, "message": ..., "faulty": [[h:p, cause]]}
    MEMBERS <json>                 ["<host>:<port> <uid hex>", ...]
    STATS <json>                   cluster.stats()
    OK <command>                   LISTENER / RELEASE done
    ERROR <text>                   a command that could not be understood
    BYE                            after QUIT (or end of input): the cluster is stopped
    TIMEOUT                        --max-seconds elapsed; the process exits with status 3

Commands read from stdin::

    SEND <hex> [options] [to=<host>:<port>,...]   options as tribes names ("use_ack,sync") or "-"
    MEMBERS | STATS | QUIT
    LISTENER ok|raise|hold   ok: print MSG; raise: print MSG then raise; hold: print MSG then block
                             until RELEASE (at most 10 s) — for checking when acks go out
    RELEASE                  let one held listener call return

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

#: How long a held listener waits for RELEASE before giving up (keeps every wait bounded).
HOLD_LIMIT_S = 10.0

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


class Member:
    """The process's cluster and its listeners."""

    def __init__(self, cluster: tribes.Cluster) -> None:
        self.cluster = cluster
        self.mode = "ok"
        self.release = threading.Semaphore(0)
        cluster.add_message_listener(self.on_message)
        cluster.add_membership_listener(
            lambda m: emit(f"ADDED {member_text(m)}"), lambda m: emit(f"GONE {member_text(m)}")
        )

    def on_message(self, member: Any, data: bytes) -> None:
        emit(f"MSG {member.host}:{member.port} {bytes(data).hex()}")
        if self.mode == "raise":
            raise RuntimeError("listener failure requested by the test")
        if self.mode == "hold" and not self.release.acquire(timeout=HOLD_LIMIT_S):
            emit("ERROR held listener was not released")

    # -- commands ---------------------------------------------------------------------------------

    def send(self, parts: list[str]) -> None:
        if not parts:
            emit("ERROR SEND needs <hex>")
            return
        try:
            data = bytes.fromhex(parts[0])
        except ValueError:
            emit("ERROR SEND: bad hex")
            return
        options: str | None = None
        to: list[Any] | None = None
        for part in parts[1:]:
            if part.startswith("to="):
                wanted = part[3:].split(",")
                by_addr = {f"{m.host}:{m.port}": m for m in self.cluster.members}
                missing = [w for w in wanted if w not in by_addr]
                if missing:
                    emit(f"ERROR SEND: not members: {','.join(missing)}")
                    return
                to = [by_addr[w] for w in wanted]
            elif part != "-":
                options = part
        try:
            self.cluster.send(data, to=to, options=options)
        except tribes.ChannelError as exc:
            faulty = [[f"{f.member.host}:{f.member.port}", f.cause] for f in exc.faulty]
            emit(
                "SENDFAIL " + json.dumps({"error": "ChannelError", "message": exc.message, "faulty": faulty})
            )
        except Exception as exc:
            emit("SENDFAIL " + json.dumps({"error": type(exc).__name__, "message": str(exc), "faulty": []}))
        else:
            emit("SENT")

    def handle(self, line: str) -> bool:
        """Run one command; False when the process should stop."""
        parts = line.split()
        if not parts:
            return True
        cmd, rest = parts[0].upper(), parts[1:]
        if cmd == "QUIT":
            return False
        if cmd == "SEND":
            self.send(rest)
        elif cmd == "MEMBERS":
            emit("MEMBERS " + json.dumps([member_text(m) for m in self.cluster.members]))
        elif cmd == "STATS":
            emit("STATS " + json.dumps(self.cluster.stats()))
        elif cmd == "LISTENER" and len(rest) == 1 and rest[0] in ("ok", "raise", "hold"):
            self.mode = rest[0]
            emit(f"OK LISTENER {self.mode}")
        elif cmd == "RELEASE":
            self.release.release()
            emit("OK RELEASE")
        else:
            emit(f"ERROR unknown command {line.strip()!r}")
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mcast-port", type=int, required=True)
    parser.add_argument("--name", default="member-proc")
    parser.add_argument("--receiver-port", type=int, default=None, help="first port to try (auto-bind)")
    parser.add_argument(
        "--config-json", default=None, help="more ClusterConfig.local overrides, as a JSON object"
    )
    parser.add_argument("--max-seconds", type=float, default=120.0, help="hard limit on the process's life")
    parser.add_argument(
        "--secret", default=None, help="the cluster secret (else TRIBES_SECRET from the environment, if set)"
    )
    parser.add_argument(
        "--secondary-secret",
        action="append",
        default=[],
        help="an older secret still accepted (repeatable; needs --secret)",
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="level of the stderr log (DEBUG, INFO, WARNING, ...)"
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(name)s: %(message)s")
    # The hard limit: whatever happens (a test that never sends QUIT or closes stdin), exit.
    limit = threading.Timer(args.max_seconds, lambda: (emit("TIMEOUT"), os._exit(3)))
    limit.daemon = True
    limit.start()

    overrides: dict[str, Any] = json.loads(args.config_json) if args.config_json else {}
    membership = {"port": args.mcast_port, **overrides.pop("membership", {})}
    receiver = dict(overrides.pop("receiver", {}))
    if args.receiver_port is not None:
        receiver["port"] = args.receiver_port
    if args.secret is not None:
        overrides["secret"] = args.secret
    if args.secondary_secret:
        overrides["secondary_secrets"] = args.secondary_secret
    config = tribes.ClusterConfig.local(name=args.name, membership=membership, receiver=receiver, **overrides)
    cluster = tribes.Cluster(config)
    member = Member(cluster)
    cluster.start()
    emit(f"READY {member_text(cluster.local_member)}")
    try:
        for _ in range(10_000_000):  # bounded; the real bound is --max-seconds
            line = sys.stdin.readline()
            if not line or not member.handle(line):
                break
    finally:
        member.release.release()  # never leave a held listener blocking stop()
        cluster.stop()
        emit("BYE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
