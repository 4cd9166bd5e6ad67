"""`Cluster`: one member of a tribes cluster (Tomcat's ``SimpleTcpCluster`` + ``GroupChannel``).

The Rust core does all networking on its own threads. Events for Python (members coming and going,
messages for listeners, failed asynchronous sends, the core's log records) are drained by one
dispatcher thread per cluster, which runs the callbacks: callbacks never run on a network thread,
and a slow callback slows only its own cluster's deliveries.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from . import _core
from .config import ClusterConfig
from .errors import NotStartedError
from .managers import SessionManager, manager_class

STATS_REQUEST = b"TRSQ\x01"  # answered by the Rust core of every member
STATS_REPLY = b"TRSR\x01"  # followed by JSON

ROUTE_PAYLOAD_PREFIX = b"tribes-route:"
"""A member with a route announces it in its heartbeat payload (when the payload is not set otherwise)."""

__all__ = ["Cluster", "Member"]

Member = _core.Member
"""A cluster member (host, port and 16-byte unique id; see ``tribes.Member``)."""

MessageListener = Callable[[Any, bytes], object]
MemberListener = Callable[[Any], object]
ErrorListener = Callable[[Any, str], object]

_log = logging.getLogger("tribes.cluster")

# Every Cluster made in this process, so that a pre-fork server's hook can start them in each worker.
_INSTANCES: weakref.WeakSet[Cluster] = weakref.WeakSet()

# How long the dispatcher waits for events before checking whether it should stop.
_POLL_MS = 200


class Cluster:
    """One member of a cluster: membership, a TCP channel to every other member, and listeners.

    Create it with a :class:`~tribes.ClusterConfig`, then :meth:`start` it (or use it as a context
    manager). Nothing starts at import or construction time, so it is safe to create before a
    pre-fork server forks and to start it in each worker.
    """

    def __init__(self, config: ClusterConfig | None = None) -> None:
        """Make a stopped cluster member; ``config`` defaults to ``ClusterConfig()`` (loopback only)."""
        self._config = config if config is not None else ClusterConfig()
        self._core: _core.CoreChannel | None = None
        self._dispatcher: threading.Thread | None = None
        self._lock = threading.RLock()
        self._message_listeners: list[MessageListener] = []
        self._membership_listeners: list[tuple[MemberListener | None, MemberListener | None]] = []
        self._error_listeners: list[ErrorListener] = []
        self._membership_changed = threading.Condition()
        self._managers: dict[str, SessionManager] = {}
        self._started_at = 0.0
        self._stats_collectors: list[MessageListener] = []
        _INSTANCES.add(self)

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def config(self) -> ClusterConfig:
        """The configuration this member runs with."""
        return self._config

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        core = self._core
        return core is not None and core.running

    def set_route(self, route: str | None) -> None:
        """Change this member's route (Tomcat's jvmRoute) before it starts; a pre-fork server gives each
        worker its own (``node1-w2``)."""
        with self._lock:
            if self.running:
                raise RuntimeError("the route can only change while the cluster is stopped")
            self._config = self._config.with_overrides(route=route)

    def start(self) -> None:
        """Bind the receiver, join the membership and start the dispatcher thread.

        Raises :class:`~tribes.errors.ConfigError` for a configuration the core refuses (for example a
        non-loopback address without ``insecure=True``) and ``OSError`` when a socket cannot be bound.
        Starting a running cluster does nothing.
        """
        with self._lock:
            if self.running:
                return
            self._config.check_security()
            config = self._config
            if config.route and not config.membership.payload:
                # Announce the route, so that others can tell when its member is gone (failover).
                payload = ROUTE_PAYLOAD_PREFIX + config.route.encode()
                config = config.with_overrides(membership={"payload": payload})
            core = _core.CoreChannel(config.to_core_json())
            _core.set_log_level(logging.getLogger("tribes").getEffectiveLevel())
            core.set_deliver_messages(bool(self._message_listeners))
            core.start()
            self._core = core
            thread = threading.Thread(
                target=self._dispatch_loop,
                args=(core,),
                name=f"tribes-dispatcher-{self._config.name}",
                daemon=True,
            )
            self._dispatcher = thread
            self._started_at = time.monotonic()
            thread.start()
            _log.info("cluster %s started as %s", self._config.name, core.local_member())
            for name in self._config.managers:
                if name != "*" and name not in self._managers:
                    self._managers[name] = self._new_manager(name)
            managers = list(self._managers.values())
            # Receiving at once (no message for them is lost), asking for sessions once the
            # membership has settled.
            for manager in managers:
                manager._attach(core, transfer=False)
        if managers:
            self._settle_membership()
            for manager in managers:
                manager._begin_transfer()
            for manager in managers:
                outcome = manager._wait_transfer()
                _log.info("manager %s: state transfer %s", manager.name, outcome.replace("_", " "))

    def stop(self) -> None:
        """Leave the cluster: send the shutdown heartbeat, close every socket, join every thread.

        Events already received are still dispatched before this returns (unless called from a
        listener, which cannot wait for its own thread). Stopping a stopped cluster does nothing.
        """
        with self._lock:
            core, thread = self._core, self._dispatcher
            if core is None:
                return
            core.stop()
            for manager in self._managers.values():
                manager._detach()
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=30)
                if thread.is_alive():  # pragma: no cover - a listener that never returns
                    _log.error("the dispatcher thread did not finish (a listener is blocked)")
            self._core = None
            self._dispatcher = None
            _forward_logs(_core.drain_logs())
            _log.info("cluster %s stopped", self._config.name)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<tribes.Cluster {self._config.name!r} {state}>"

    # -- members -------------------------------------------------------------------------------------

    def _require(self) -> _core.CoreChannel:
        core = self._core
        if core is None:
            raise NotStartedError(f"cluster {self._config.name!r} is not started")
        return core

    @property
    def members(self) -> list[Member]:
        """The other members, oldest-running first (empty when stopped)."""
        core = self._core
        return core.members() if core is not None else []

    @property
    def local_member(self) -> Member:
        """This process's member (its receiver address and unique id)."""
        member = self._require().local_member()
        if member is None:
            raise NotStartedError(f"cluster {self._config.name!r} is not started")
        return member

    def member_routes(self) -> set[str]:
        """The routes (Tomcat's jvmRoute) that the other members announce."""
        return {route for route in map(_route_of, self.members) if route is not None}

    def wait_for_members(self, count: int = 1, timeout: float = 10.0) -> list[Member]:
        """Block until at least ``count`` other members are in the view, and return them.

        Raises ``TimeoutError`` when they do not all arrive within ``timeout`` seconds.
        """
        self._require()
        with self._membership_changed:
            if not self._membership_changed.wait_for(lambda: len(self.members) >= count, timeout):
                raise TimeoutError(f"{len(self.members)} of {count} member(s) joined within {timeout:g} s")
        return self.members

    # -- session managers ----------------------------------------------------------------------------

    def manager(self, name: str) -> SessionManager:
        """The session manager ``name``: a :class:`~tribes.DeltaManager` or :class:`~tribes.BackupManager`
        as ``ClusterConfig.managers`` says (``"*"`` is the template for unlisted names; default: delta).

        Created on first use. On a running cluster that first use fetches the sessions the other members
        hold under this name (state transfer) before it returns; managers named in the configuration are
        created, and their transfer done, by :meth:`start`.
        """
        if not isinstance(name, str) or not 1 <= len(name.encode()) <= 255:
            raise ValueError(f"a manager name must be 1..255 bytes of text, got {name!r}")
        with self._lock:
            manager = self._managers.get(name)
            if manager is not None:
                return manager
            manager = self._new_manager(name)
            self._managers[name] = manager
            core = self._core
        if core is not None:
            self._settle_membership()
            manager._attach(core)
            manager._wait_transfer()
        return manager

    @property
    def managers(self) -> dict[str, SessionManager]:
        """The managers created so far, by name."""
        return dict(self._managers)

    def _new_manager(self, name: str) -> SessionManager:
        config = self._config.manager_config(name)
        return manager_class(config.kind)(self, name, config)

    def _settle_membership(self) -> None:
        # Tomcat's waitForMembers: give heartbeats two periods to find the others before asking them
        # for sessions, so a member that starts next to a running cluster does not start empty.
        wait = 2 * self._config.membership.frequency_ms / 1000.0 - (time.monotonic() - self._started_at)
        if wait > 0:
            time.sleep(wait)

    # -- messages ------------------------------------------------------------------------------------

    def send(
        self,
        data: bytes,
        to: Sequence[Member] | Member | None = None,
        options: str | int | None = None,
    ) -> None:
        """Send ``data`` to ``to`` (a member, a list of members, or None for every member).

        ``options`` are Tomcat's send options, as names (``"async"``, ``"use_ack"``, ``"sync"``,
        combinable: ``"use_ack,sync"``) or bits; the default is the configuration's ``send_options``
        (``"use_ack"``). ``use_ack`` returns once every target received the message; ``sync`` once
        every target processed it (its listeners ran); ``async`` returns at once.

        With no other member in the cluster (and ``to=None``) nothing is sent and nothing raised.
        Raises :class:`~tribes.errors.ChannelError` naming every member the message did not reach,
        each with its cause; the other members got it.
        """
        core = self._require()
        targets: list[Member] | None
        if to is None:
            targets = None
        elif isinstance(to, Member):
            targets = [to]
        else:
            targets = list(to)
        core.send(data, targets, options)

    def add_message_listener(self, listener: MessageListener) -> None:
        """Call ``listener(member, data)`` for every message received (on the dispatcher thread).

        An exception in a listener is logged; for a message sent with ``sync`` it makes the sender's
        send fail with a NACK.
        """
        with self._lock:
            self._message_listeners.append(listener)
            if self._core is not None:
                self._core.set_deliver_messages(True)

    def remove_message_listener(self, listener: MessageListener) -> None:
        """Stop calling ``listener``."""
        with self._lock:
            self._message_listeners.remove(listener)
            if self._core is not None and not self._message_listeners:
                self._core.set_deliver_messages(False)

    def add_membership_listener(
        self,
        on_added: MemberListener | None = None,
        on_disappeared: MemberListener | None = None,
    ) -> None:
        """Call ``on_added(member)`` when a member joins and ``on_disappeared(member)`` when one leaves."""
        with self._lock:
            self._membership_listeners.append((on_added, on_disappeared))

    def add_error_listener(self, listener: ErrorListener) -> None:
        """Call ``listener(member, cause)`` when an asynchronous send failed after ``send()`` returned."""
        with self._lock:
            self._error_listeners.append(listener)

    # -- operations ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters of the channel (traffic, acks, rejections by kind, probes, members added/removed)
        and of each session manager, as ``manager.<name>.<counter>`` (sessions by role, deltas sent and
        received, stale writes, state transfer figures, …)."""
        core = self._core
        if core is None:
            return {}
        counters = dict(core.stats())
        for name, manager in list(self._managers.items()):
            for key, value in manager.stats().items():
                counters[f"manager.{name}.{key}"] = value
        return counters

    def cluster_stats(self, timeout: float = 3.0) -> dict[str, dict[str, Any]]:
        """The counters of every member, this one included, by member name (``tcp://host:port``):
        ``{"channel": {...}, "managers": {name: {"kind": ..., "counters": {...}}}, "route": ...}``.

        Asks each member over the channel and waits up to ``timeout`` seconds for the answers; a member
        that does not answer in time is left out. Used by ``tribes status``.
        """
        core = self._require()
        replies: dict[str, dict[str, Any]] = {}
        done = threading.Condition()
        members = self.members
        routes = {m.name: _route_of(m) for m in members}

        def collect(member: Any, data: bytes) -> None:
            try:
                body = json.loads(data[len(STATS_REPLY) :])
            except ValueError:
                _log.warning("malformed stats answer from %s", member)
                return
            body["route"] = routes.get(member.name)
            with done:
                replies[member.name] = body
                done.notify_all()

        with self._lock:
            self._stats_collectors.append(collect)
            core.set_deliver_messages(True)
        try:
            if members:
                core.send(STATS_REQUEST, members, "use_ack")
            with done:
                done.wait_for(lambda: len(replies) >= len(members), timeout)
        finally:
            with self._lock:
                self._stats_collectors.remove(collect)
                core.set_deliver_messages(bool(self._message_listeners))
        local: dict[str, Any] = {
            "channel": dict(core.stats()),
            "managers": {n: {"kind": m.kind, "counters": m.stats()} for n, m in self._managers.items()},
            "route": self._config.route,
        }
        return {self.local_member.name: local, **replies}

    # -- the dispatcher ------------------------------------------------------------------------------

    def _dispatch_loop(self, core: _core.CoreChannel) -> None:
        while True:
            events, logs, closed = core.next_events(512, _POLL_MS)
            _forward_logs(logs)
            for event in events:
                self._dispatch(event)
            if closed and not events:
                return

    def _dispatch(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "message":
            _, member, data, token = event
            if data.startswith(STATS_REPLY):
                _call_all(self._stats_collectors, "stats", member, data)
                if token is not None:
                    token.complete(True)
                return
            ok = _call_all(self._message_listeners, "message", member, data)
            if token is not None:
                token.complete(ok)
        elif kind == "added":
            self._notify_membership_changed()
            _call_all([a for a, _ in self._membership_listeners if a is not None], "member-added", event[1])
        elif kind == "disappeared":
            self._notify_membership_changed()
            _call_all(
                [d for _, d in self._membership_listeners if d is not None], "member-disappeared", event[1]
            )
        elif kind == "session":
            _, manager_name, what, sid, name, old, new = event
            manager = self._managers.get(manager_name)
            if manager is not None:
                manager._on_replicated(what, sid, name, old, new)
        elif kind == "send_failed":
            _, member, cause = event
            _log.warning("asynchronous send to %s failed: %s", member, cause)
            _call_all(self._error_listeners, "send-error", member, cause)

    def _notify_membership_changed(self) -> None:
        with self._membership_changed:
            self._membership_changed.notify_all()


def _route_of(member: Any) -> str | None:
    payload: bytes = member.payload
    if payload.startswith(ROUTE_PAYLOAD_PREFIX):
        return payload[len(ROUTE_PAYLOAD_PREFIX) :].decode("utf-8", "replace")
    return None


def instances() -> list[Cluster]:
    """Every :class:`Cluster` object alive in this process."""
    return list(_INSTANCES)


def _call_all(listeners: Iterable[Callable[..., object]], what: str, *args: Any) -> bool:
    ok = True
    for listener in list(listeners):
        try:
            listener(*args)
        except Exception:
            ok = False
            _log.exception("%s listener %r failed", what, listener)
    return ok


def _forward_logs(records: Iterable[tuple[int, str, str]]) -> None:
    for level, name, message in records:
        logger = logging.getLogger(name)
        if logger.isEnabledFor(level):
            logger.log(level, "%s", message)
