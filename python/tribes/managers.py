"""Session managers: `DeltaManager` (every member holds every session) and `BackupManager` (a primary
and one backup per session), Tomcat's two cluster managers.

Get one with ``cluster.manager(name)``; its settings come from ``ClusterConfig.managers[name]`` (or the
``"*"`` template, or the defaults: a DeltaManager). The sessions live in the Rust core; the manager is
the Python face of it. Changes from other members are applied in Rust without the GIL; listeners hear
about them on the cluster's dispatcher thread.

Listeners are objects with any of these methods (Tomcat's session and attribute listeners)::

    on_created(session_id)                              on_destroyed(session_id)
    on_attribute_added(session_id, name, value)         on_attribute_removed(session_id, name, old)
    on_attribute_replaced(session_id, name, old, new)

They run for local changes on the thread that makes them (``create``, ``session[name] = …``, ``del``,
``invalidate``) and, with ``notify_listeners_on_replication`` (the default), for changes that arrive
from other members, on the dispatcher thread.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import re
import struct
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from . import _core
from .errors import NotStartedError, ProtocolError
from .manager_config import ManagerConfig
from .session import Session

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["BackupManager", "DeltaManager", "SessionManager"]

_log = logging.getLogger("tribes.session")

_LISTENER_METHODS = (
    "on_created",
    "on_destroyed",
    "on_attribute_added",
    "on_attribute_replaced",
    "on_attribute_removed",
)

# Pickled values travel as a msgpack ext of this type; only a manager configured with
# serializer="pickle" (which needs a cluster secret) ever unpickles them.
_PICKLE_EXT = 0x70


def _pickle_ext(data: bytes) -> bytes:
    n = len(data)
    if n < 256:
        head = struct.pack(">BBb", 0xC7, n, _PICKLE_EXT)
    elif n < 65536:
        head = struct.pack(">BHb", 0xC8, n, _PICKLE_EXT)
    else:
        head = struct.pack(">BIb", 0xC9, n, _PICKLE_EXT)
    return head + data


def _unpickle_ext(raw: bytes) -> bytes | None:
    """The pickle inside a pickle ext, or None if ``raw`` is not one."""
    sizes = {0xC7: 1, 0xC8: 2, 0xC9: 4}
    size = sizes.get(raw[0]) if raw else None
    if size is None or len(raw) < 2 + size or raw[1 + size] != _PICKLE_EXT:
        return None
    n = int.from_bytes(raw[1 : 1 + size], "big")
    body = raw[2 + size :]
    return body if len(body) == n else None


_commit_tokens = itertools.count(1)


class _BackgroundCommits:
    """Commits awaited on one asyncio loop: the core runs each on one of its own threads and, when
    the acknowledgements are in, makes a socket readable that the loop watches. No Python thread
    waits, and the GIL is taken only on the loop, once per batch of finished commits."""

    def __init__(self, core: _core.CoreManager, loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self.loop = loop
        self.pending: dict[int, asyncio.Future[bool]] = {}
        self.fd = core.completion_fd()
        loop.add_reader(self.fd, self._collect)

    def submit(self, sid: str, writes: list[Any], meta: list[Any]) -> asyncio.Future[bool]:
        # Tokens are unique in the process: a commit still in flight when its loop closed must not
        # complete a later loop's commit that reused its number.
        token = next(_commit_tokens)
        future: asyncio.Future[bool] = self.loop.create_future()
        self.pending[token] = future
        try:
            self.core.commit_background(token, sid, writes, meta)
        except BaseException:
            del self.pending[token]
            raise
        return future

    def _collect(self) -> None:
        for token, outcome in self.core.take_completed():
            future = self.pending.pop(token, None)
            if future is None or future.done():
                continue  # its request was cancelled; the commit itself went through
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.remove_reader(self.fd)


class SessionManager:
    """What both managers share. Use :class:`DeltaManager` or :class:`BackupManager`."""

    kind: ClassVar[str] = ""

    def __init__(self, cluster: Cluster, name: str, config: ManagerConfig) -> None:
        """Internal: made by ``Cluster.manager(name)``."""
        self._cluster = cluster
        self._name = name
        self._config = config
        self._core: _core.CoreManager | None = None
        self._listeners: list[Any] = []
        self._has_listeners = False
        self._filter = None if config.attribute_filter is None else re.compile(config.attribute_filter)
        self._transfer = "not_started"
        self._background: _BackgroundCommits | None = None
        self._background_lock = threading.Lock()

    # -- settings -----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name sessions replicate under (several applications can share one cluster)."""
        return self._name

    @property
    def config(self) -> ManagerConfig:
        """The settings."""
        return self._config

    @property
    def send_mode(self) -> str:
        """``async``, ``ack`` (default: commit returns once every target received the change) or ``sync``."""
        return self._config.send_mode

    @property
    def max_inactive(self) -> int:
        """Default seconds of inactivity before a session expires (1800)."""
        return self._config.max_inactive

    @property
    def max_active(self) -> int:
        """Most sessions a member holds (-1: unlimited)."""
        return self._config.max_active

    @property
    def attribute_filter(self) -> str | None:
        """Regex of attribute names that replicate; None = all."""
        return self._config.attribute_filter

    @property
    def notify_listeners_on_replication(self) -> bool:
        """Whether listeners hear about changes made on other members."""
        return self._config.notify_listeners_on_replication

    @property
    def state_transfer(self) -> str:
        """How this member's start went: ``complete``, ``timed_out``, ``not_needed`` (it was alone),
        ``running``, or ``not_started``."""
        core = self._core
        return str(core.transfer_state) if core is not None else self._transfer

    # -- lifecycle (driven by the cluster) ------------------------------------------------------------

    def _attach(self, channel: _core.CoreChannel, transfer: bool = True) -> None:
        c = self._config
        self._core = channel.manager(
            self._name,
            self.kind,
            c.send_options,
            c.max_inactive,
            c.max_active,
            c.state_transfer_batch,
            int(c.state_transfer_timeout * 1000),
            int(c.rpc_timeout * 1000),
            self._cluster.config.route,
            transfer,
        )
        self._update_listening()

    def _begin_transfer(self) -> None:
        self._require().begin_transfer()

    def _wait_transfer(self) -> str:
        core = self._require()
        self._transfer = str(core.wait_transfer())
        return self._transfer

    def _detach(self) -> None:
        if self._core is not None:
            self._transfer = self._core.transfer_state
        self._core = None

    def _require(self) -> _core.CoreManager:
        core = self._core
        if core is None:
            raise NotStartedError(f"manager {self._name!r}: the cluster is not started")
        return core

    # -- values -------------------------------------------------------------------------------------

    def _encode(self, value: Any, name: str) -> bytes:
        try:
            return _core.encode_value(value, name)
        except TypeError:
            if self._config.serializer != "pickle":
                raise
            return _pickle_ext(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def _decode(self, raw: bytes, name: str) -> Any:
        if self._config.serializer == "pickle":
            body = _unpickle_ext(raw)
            if body is not None:
                return pickle.loads(body)
        try:
            return _core.decode_value(raw)
        except ProtocolError as exc:
            raise ProtocolError(f"session attribute {name!r}: {exc}") from None

    def _replicates(self, name: str) -> bool:
        return self._filter is None or self._filter.fullmatch(name) is not None

    # -- sessions -----------------------------------------------------------------------------------

    def create(self) -> Session:
        """A new session, with this member as its primary; the other members hear of it.

        Raises :class:`~tribes.errors.TooManySessionsError` beyond ``max_active``.
        """
        session = Session(self, self._require().create())
        self._fire("on_created", session.id)
        return session

    def get(self, session_id: str) -> Session | None:
        """The session with this id, or None (unknown, ended or expired).

        On a BackupManager this member becomes the session's primary (fetching it from its backup if
        this member held only a proxy), as Tomcat's BackupManager does for the member serving a request.
        """
        if not isinstance(session_id, str):
            return None
        state = self._require().get(session_id)
        return None if state is None else Session(self, state)

    def peek(self, session_id: str) -> Session | None:
        """The session as this member holds it, with no side effect: no fetch, no change of owner, no
        expiry check (for inspection and tests; a proxy entry of a BackupManager gives None)."""
        found = self._require().peek(session_id) if isinstance(session_id, str) else None
        if found is None or found[1] == "proxy":
            return None
        return Session(self, found[0])

    def commit(self, session: Session) -> bool:
        """End the request on ``session``: replicate what changed as one delta.

        With nothing changed, an "accessed" message goes out when Tomcat's rule says so (this member was
        not the last to serve it, or it was not replicated for ``max_inactive``). With ``send_mode="ack"``
        this returns once every target member has received the change; a failure for some members raises
        :class:`~tribes.errors.ChannelError` naming them (the others have it, and so does this member).
        Returns True when the application had changed the session (a delta went out).
        """
        if not self._check_committable(session):
            return False
        core = self._require()
        writes, new_raw = session._changes()
        meta = list(session._meta.items()) if session._meta else []
        try:
            alive = core.commit(session._id, writes, meta)
        finally:
            session._committed(new_raw)
        return self._after_commit(session, writes, meta, alive)

    async def commit_async(self, session: Session) -> bool:
        """:meth:`commit` for asyncio code: the same effect and result, awaited without blocking the
        event loop and without a thread per waiting commit (the core waits for the acknowledgements
        and wakes the loop). Used by the ASGI middleware for ``ack`` and ``sync`` commits.

        A manager serves one event loop this way (the first that calls it while it runs); a commit
        awaited on another loop runs in that loop's default executor instead.
        """
        if not self._check_committable(session):
            return False
        core = self._require()
        writes, new_raw = session._changes()
        meta = list(session._meta.items())
        loop = asyncio.get_running_loop()
        background = self._background_on(core, loop)
        try:
            if background is None:
                alive = await loop.run_in_executor(None, core.commit, session.id, writes, meta)
            else:
                alive = await background.submit(session.id, writes, meta)
        finally:
            session._committed(new_raw)
        return self._after_commit(session, writes, meta, alive)

    def _check_committable(self, session: Session) -> bool:
        if session._manager is not self:
            raise ValueError(f"session {session.id} belongs to manager {session.manager.name!r}")
        return session._valid

    @staticmethod
    def _after_commit(session: Session, writes: list[Any], meta: list[Any], alive: bool) -> bool:
        if not alive:
            session._valid = False
            return False
        return bool(writes) or any(k != "is_new" for k, _ in meta)

    def _background_on(
        self, core: _core.CoreManager, loop: asyncio.AbstractEventLoop
    ) -> _BackgroundCommits | None:
        """The background-commit dispatcher of ``loop``, made on first use; None when another live
        loop already has this manager's (two loops must not share one wake-up socket)."""
        background = self._background
        if background is not None and background.core is core and background.loop is loop:
            return background
        with self._background_lock:
            background = self._background
            if background is not None and background.core is core and background.loop is loop:
                return background
            if background is not None:
                if background.core is core and not background.loop.is_closed():
                    return None
                background.close()
            self._background = _BackgroundCommits(core, loop)
            return self._background

    def invalidate(self, session: Session | str) -> bool:
        """End a session on every member. Returns False when it did not exist here."""
        sid = session.id if isinstance(session, Session) else session
        if isinstance(session, Session):
            session._valid = False
        ended = bool(self._require().invalidate(sid))
        if ended:
            self._fire("on_destroyed", sid)
        return ended

    def change_id(self, session: Session, route: str | None = None) -> str:
        """Give ``session`` a new id (keeping its data) on every member; returns the new id.

        ``route`` replaces the member's route in the new id (the JvmRouteBinder rewrite); None keeps
        ``ClusterConfig.route``.
        """
        if session.modified:
            self.commit(session)
        new_id = self._require().change_id(session.id, route)
        session._id = new_id
        return new_id

    def __len__(self) -> int:
        """Sessions held here with their data (BackupManager: primaries and backups, not proxies)."""
        return len(self._require())

    def __iter__(self) -> Iterator[str]:
        """The ids of the sessions held here with their data."""
        return iter(self._require().ids())

    def __contains__(self, session_id: object) -> bool:
        if not isinstance(session_id, str):
            return False
        found = self._require().peek(session_id)
        return found is not None and found[1] != "proxy"

    def process_expires(self, now: float | None = None) -> list[str]:
        """Expire the sessions idle past their limit as of ``now`` (default: now); returns their ids.

        The cluster runs this every 5 seconds by itself; calling it is for tests and operations. A session
        expires at ``max_inactive`` where it was last used (and the others are told), and copies expire
        by themselves at twice that.
        """
        when = time.time() if now is None else now
        return self._require().process_expires(int(when * 1000))

    def stats(self) -> dict[str, int]:
        """Counters: sessions by role, messages sent and received by kind, stale writes ignored, state
        transfer figures, sessions lost (both copies gone), …"""
        core = self._core
        return dict(core.stats()) if core is not None else {}

    # -- listeners ----------------------------------------------------------------------------------

    def add_listener(self, listener: Any) -> None:
        """Add a session/attribute listener (an object with any of the ``on_*`` methods)."""
        if not any(callable(getattr(listener, m, None)) for m in _LISTENER_METHODS):
            raise TypeError(f"a listener needs at least one of {', '.join(_LISTENER_METHODS)}")
        self._listeners.append(listener)
        self._update_listening()

    def remove_listener(self, listener: Any) -> None:
        """Remove a listener added with :meth:`add_listener`."""
        self._listeners.remove(listener)
        self._update_listening()

    def _update_listening(self) -> None:
        self._has_listeners = bool(self._listeners)
        if self._core is not None:
            self._core.set_listening(self._has_listeners and self._config.notify_listeners_on_replication)

    def _fire(self, method: str, *args: Any) -> None:
        if not self._has_listeners:
            return
        for listener in list(self._listeners):
            callback = getattr(listener, method, None)
            if callback is None:
                continue
            try:
                callback(*args)
            except Exception:
                _log.exception("session listener %r.%s failed", listener, method)

    def _on_replicated(
        self, kind: str, sid: str, name: str | None, old: bytes | None, new: bytes | None
    ) -> None:
        """A change from another member (on the dispatcher thread)."""
        if kind == "created":
            self._fire("on_created", sid)
        elif kind == "destroyed":
            self._fire("on_destroyed", sid)
        elif name is not None:
            try:
                old_value = None if old is None else self._decode(old, name)
                new_value = None if new is None else self._decode(new, name)
            except Exception:
                _log.exception("session listener: attribute %r of %s does not decode", name, sid)
                return
            if kind == "added":
                self._fire("on_attribute_added", sid, name, new_value)
            elif kind == "replaced":
                self._fire("on_attribute_replaced", sid, name, old_value, new_value)
            else:
                self._fire("on_attribute_removed", sid, name, old_value)

    def __repr__(self) -> str:
        return f"<tribes.{type(self).__name__} {self._name!r}>"


class DeltaManager(SessionManager):
    """Every member holds every session (Tomcat ``DeltaManager``): simple, and any member can serve any
    request; memory and traffic grow with the number of members."""

    kind = "delta"


class BackupManager(SessionManager):
    """Each session lives on its primary (the member that serves it) and one backup member, chosen
    round-robin; the other members hold a proxy entry naming both (Tomcat ``BackupManager``). When a
    member leaves, the survivors restore two copies of every session it held."""

    kind = "backup"

    def locations(self) -> dict[str, tuple[str, bytes, bytes]]:
        """``{id: (role, primary_uid, backup_uid)}`` of every entry here, proxies included; ``role`` is
        ``primary``, ``copy`` (this member is the backup) or ``proxy``."""
        return {sid: (role, p, b) for sid, role, p, b in self._require().entries()}


def manager_class(kind: str) -> type[SessionManager]:
    """The manager class for a ``ManagerConfig.kind``."""
    return BackupManager if kind == "backup" else DeltaManager
