"""The ``tribes`` command: ``tribes members`` (join and watch the membership) and ``tribes demo`` (a
three-member cluster behind a load balancer on this machine: failover and state transfer)."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from .cluster import Cluster
from .config import ClusterConfig
from .errors import ConfigError, TribesError


def _member_line(event: str, member: Any) -> str:
    domain = member.domain.decode("latin-1") if member.domain else "-"
    return (
        f"{event:<8} {member.name:<28} id={member.unique_id.hex()} "
        f"alive={member.alive_ms / 1000:.1f}s domain={domain}"
    )


def _load_config(args: argparse.Namespace) -> ClusterConfig:
    overrides: dict[str, Any] = {}
    if args.mcast_port is not None:
        overrides["membership"] = {"port": args.mcast_port}
    if args.config:
        return ClusterConfig.from_file(args.config, **overrides)
    return ClusterConfig.local(**overrides)


def _cmd_members(args: argparse.Namespace) -> int:
    config = _load_config(args)
    lock = threading.Lock()

    def show(event: str, member: Any) -> None:
        with lock:
            print(_member_line(event, member), flush=True)

    cluster = Cluster(config)
    cluster.add_membership_listener(lambda m: show("joined", m), lambda m: show("left", m))
    with cluster:
        me = cluster.local_member
        print(f"local    {me.name:<28} id={me.unique_id.hex()} (watching for {args.seconds:g} s)", flush=True)
        deadline = time.monotonic() + args.seconds
        try:
            while time.monotonic() < deadline:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:
            pass
        members = cluster.members
    print(f"{len(members)} member(s) besides this one:")
    for m in members:
        print("  " + _member_line("member", m))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo  # the demo's modules (http.server, wsgiref, …) load only for this verb

    return demo.run(keep_running=args.keep_running, mcast_port=args.mcast_port)


def _cmd_status(args: argparse.Namespace) -> int:
    from .status import collect, render

    config = _load_config(args)
    me, answers = collect(config, args.seconds)
    print(render(me, answers))
    return 0 if len(answers) > 1 else 3


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(prog="tribes", description="Tomcat-style cluster for Python apps.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    members = sub.add_parser("members", help="join the cluster and print its members as they come and go")
    source = members.add_mutually_exclusive_group()
    source.add_argument(
        "--config", metavar="FILE", help="a TOML file, or a Tomcat server.xml / <Cluster> XML"
    )
    source.add_argument(
        "--local", action="store_true", help="the loopback preset (the default without --config)"
    )
    members.add_argument("--mcast-port", type=int, metavar="PORT", help="override the multicast port")
    members.add_argument("--seconds", type=float, default=10.0, help="how long to watch (default 10)")
    members.set_defaults(func=_cmd_members)

    status = sub.add_parser(
        "status", help="join briefly and print the members, and per manager session counts and counters"
    )
    status_source = status.add_mutually_exclusive_group()
    status_source.add_argument("--config", metavar="FILE", help="the cluster's TOML or Tomcat XML file")
    status_source.add_argument("--local", action="store_true", help="the loopback preset")
    status.add_argument("--mcast-port", type=int, metavar="PORT", help="override the multicast port")
    status.add_argument("--seconds", type=float, default=3.0, help="how long to wait for answers (default 3)")
    status.set_defaults(func=_cmd_status)

    demo = sub.add_parser(
        "demo",
        help="3 members and a load balancer on 127.0.0.1: a user journey, a crash, failover, state transfer",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the members and the load balancer up (URLs printed) until Ctrl-C",
    )
    demo.add_argument(
        "--mcast-port", type=int, metavar="PORT", help="multicast port (default: a free one in 49000-49999)"
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tribes`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "seconds", 1.0) <= 0:
        parser.error("--seconds must be positive")
    try:
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        print(f"tribes: configuration error: {exc}", file=sys.stderr)
        return 2
    except (TribesError, OSError) as exc:
        print(f"tribes: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
