"""Django session engine: ``SESSION_ENGINE = "tribes.django"`` (``tribes[django]``).

Settings::

    SESSION_ENGINE = "tribes.django"
    TRIBES_CLUSTER = {"membership": {"port": 45564}, "route": "node1"}  # ClusterConfig.from_dict
    TRIBES_MANAGER = "django"                                           # the manager's name (default)

``TRIBES_CLUSTER`` may also be a :class:`tribes.ClusterConfig` or the path of a TOML (or Tomcat XML)
file; unset, it is ``ClusterConfig()`` (loopback only). The cluster member is started once per
process, on first use of a session (never at import, so a pre-fork server's workers each start their
own after the fork), or earlier by :func:`start` (in gunicorn's ``post_fork`` hook:
``tribes.django.start(worker=worker.age)``, so that each worker has a route of its own). It leaves
the cluster when the process exits.

Each key of ``request.session`` is a tribes attribute, so a save sends only the keys that changed,
and values changed in place (``request.session["cart"].append(item)``) count as changes without
``request.session.modified = True``. Session keys are tribes ids (32 hex digits and ``.<route>``);
any other key, and a key no member knows, starts a new session. ``cycle_key()`` (called by
``login()``) renames the session on every member; ``flush()`` (``logout()``) invalidates it on every
member. A session lives for its Django expiry age (``SESSION_COOKIE_AGE`` or ``set_expiry()``),
counted from its last save or use. Values go through tribes' codec (JSON-able values and more; an
unsupported value raises ``TypeError`` when the session is saved).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings  # type: ignore[import-untyped, import-not-found, unused-ignore]
from django.contrib.sessions.backends.base import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    CreateError,
    SessionBase,
    UpdateError,
)
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped, import-not-found, unused-ignore]

from .cluster import Cluster
from .config import ClusterConfig
from .managers import SessionManager
from .session import Session
from .web import _ID

__all__ = ["SessionStore", "get_cluster", "get_manager", "is_started", "start"]

_log = logging.getLogger("tribes.django")

DEFAULT_MANAGER = "django"
_MAX_INACTIVE = 2**31 - 1


# --------------------------------------------------------------------------------------------------
# The process's cluster member
# --------------------------------------------------------------------------------------------------


class _Process:
    """The cluster and manager of this process (reset in a forked child)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cluster: Cluster | None = None
        self.manager: SessionManager | None = None


_state = _Process()


def _after_fork() -> None:
    # The parent's member (its threads, its sockets' owner) does not exist in the child: start anew.
    global _state
    _state = _Process()


os.register_at_fork(after_in_child=_after_fork)


def _config() -> ClusterConfig:
    value = getattr(settings, "TRIBES_CLUSTER", None)
    if value is None:
        return ClusterConfig()
    if isinstance(value, ClusterConfig):
        return value
    if isinstance(value, Mapping):
        return ClusterConfig.from_dict(value)
    if isinstance(value, str | PurePath):
        return ClusterConfig.from_file(value)
    raise ImproperlyConfigured(
        f"TRIBES_CLUSTER must be a dict, a tribes.ClusterConfig or a file path, got {type(value).__name__}"
    )


def _manager_name() -> str:
    name = getattr(settings, "TRIBES_MANAGER", None) or DEFAULT_MANAGER
    if not isinstance(name, str):
        raise ImproperlyConfigured(f"TRIBES_MANAGER must be a str, got {type(name).__name__}")
    return name


def _stop(cluster: Cluster, pid: int) -> None:
    if os.getpid() == pid:
        cluster.stop()


def start(worker: int | str | None = None) -> Cluster:
    """Start this process's cluster member from the Django settings, if it is not running yet, and
    return it. Sessions call this on first use; call it yourself to start earlier, e.g. in gunicorn's
    ``post_fork`` hook, where ``worker`` (``worker.age``) gives the member the route
    ``<route>-w<worker>``, as :mod:`tribes.prefork` does (members of one host need routes of their own).
    """
    state = _state
    with state.lock:
        if state.cluster is None:
            config = _config()
            if worker is not None:
                route = f"{config.route}-w{worker}" if config.route else f"w{worker}"
                config = config.with_overrides(route=route)
            name = _manager_name()
            cluster = Cluster(config)
            cluster.start()
            try:
                manager = cluster.manager(name)
            except BaseException:
                cluster.stop()
                raise
            atexit.register(_stop, cluster, os.getpid())
            state.manager = manager
            state.cluster = cluster
            _log.info("started %r for Django sessions (manager %r)", cluster, name)
        return state.cluster


def get_manager() -> SessionManager:
    """The session manager of this process, starting the cluster member if it is not running yet."""
    manager = _state.manager
    if manager is None:
        start()
        manager = _state.manager
        assert manager is not None
    return manager


def get_cluster() -> Cluster:
    """This process's cluster member, started (from the Django settings) if it is not running yet."""
    return start()


def is_started() -> bool:
    """True once this process has started its cluster member (nothing starts at import)."""
    return _state.manager is not None


# --------------------------------------------------------------------------------------------------
# The session engine
# --------------------------------------------------------------------------------------------------


class SessionStore(SessionBase):  # type: ignore[misc, unused-ignore]
    """Django's ``request.session``, kept in a tribes session manager and replicated to the cluster."""

    # SessionBase's validating property (declared here for the type checker only).
    _session_key: str | None

    def __init__(self, session_key: str | None = None) -> None:
        """The session named by ``session_key`` (a cookie's value; anything malformed is no key)."""
        self._tribes: Session | None = None  # the tribes session behind the key, once loaded
        self._created_here = False
        self._modified = False
        super().__init__(session_key)

    # -- keys ---------------------------------------------------------------------------------------

    def _validate_session_key(self, key: object) -> bool:
        """Only tribes ids: 32 hex digits from the OS CSPRNG, then an optional ``.<route>``."""
        return isinstance(key, str) and _ID.fullmatch(key) is not None

    def _get_new_session_key(self) -> str:
        raise NotImplementedError("tribes issues session ids itself: call create()")

    async def _aget_new_session_key(self) -> str:
        raise NotImplementedError("tribes issues session ids itself: call acreate()")

    def _get_or_create_session_key(self) -> str:
        if self.session_key is None:
            self.create()
        key: str = self.session_key
        return key

    async def _aget_or_create_session_key(self) -> str:
        key: str = await sync_to_async(self._get_or_create_session_key)()
        return key

    # -- modified: Django's flag, or a value changed in place -----------------------------------------

    @property
    def modified(self) -> bool:  # type: ignore[override, unused-ignore]
        """True when the session was changed: set by Django on writes, and found by tribes for values
        changed in place (so the middleware saves them)."""
        if self._modified:
            return True
        session = self._tribes
        return (
            session is not None
            and session.valid
            and "_session_cache" in self.__dict__
            and session.id == self.session_key
            and session.modified
        )

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = bool(value)

    # -- storage ------------------------------------------------------------------------------------

    def _current(self) -> Session | None:
        """The tribes session of the current key (None: no member knows it)."""
        key = self.session_key
        if key is None:
            return None
        session = self._tribes
        if session is None or not session.valid or session.id != key:
            session = get_manager().get(key)
            self._tribes = session
            self._created_here = False
        return session

    def _write(self, session: Session, data: Mapping[str, Any]) -> None:
        """Make ``session``'s attributes those of ``data``; the commit sends only real changes."""
        for name in [name for name in session if name not in data]:
            del session[name]
        for name, value in data.items():
            if not isinstance(name, str):
                raise TypeError(f"session keys must be str, got {type(name).__name__}")
            # A value read from the session is the same object: changed in place or not, the commit
            # compares its encoding with what was loaded.
            if name not in session or session[name] is not value:
                session[name] = value
        age = self.get_expiry_age()
        age = max(1, min(int(age), _MAX_INACTIVE))
        if session.max_inactive != age:
            session.max_inactive = age

    def load(self) -> dict[str, Any]:
        """The session's data; an unknown key is dropped (a new session starts when it is saved)."""
        session = self._current()
        if session is None:
            self._session_key = None
            self._tribes = None
            return {}
        return {name: session[name] for name in session}

    def exists(self, session_key: str | None) -> bool:
        """True when a member holds a session with this key (as far as this member knows)."""
        if not self._validate_session_key(session_key):
            return False
        manager = get_manager()
        # The core's peek: no side effect, and it also sees a BackupManager's proxy entries.
        return manager._require().peek(str(session_key)) is not None

    def create(self) -> None:
        """Start a new session (a new tribes id) holding the current data, on every member."""
        session = get_manager().create()
        self._tribes = session
        self._created_here = True
        self._session_key = session.id
        self._write(session, self._get_session(no_load=True))
        session.manager.commit(session)
        self.modified = True

    def save(self, must_create: bool = False) -> None:
        """Commit the session's changes to every member (``must_create``: only a session this store has
        just created; tribes never adopts an id chosen elsewhere, so anything else is a CreateError).

        Raises ``UpdateError`` when the session ended meanwhile (Django answers SessionInterrupted).
        """
        data = self._get_session(no_load=must_create)
        if self.session_key is None:
            self.create()
            return
        session = self._current()
        if must_create and (session is None or not self._created_here):
            raise CreateError
        if session is None:
            raise UpdateError
        self._write(session, data)
        session.manager.commit(session)
        if not session.valid:
            raise UpdateError

    def delete(self, session_key: str | None = None) -> None:
        """End the session (default: this one) on every member."""
        if session_key is None:
            session_key = self.session_key
            if session_key is None:
                return
        if not self._validate_session_key(session_key):
            return
        session = self._tribes
        manager = get_manager()
        if session is not None and session.id == session_key and session.valid:
            manager.invalidate(session)
        else:
            manager.invalidate(session_key)
        if session is not None and session.id == session_key:
            self._tribes = None
            self._created_here = False

    def cycle_key(self) -> None:
        """Give the session a new key, keeping its data (after login): one rename on every member."""
        data = self._get_session()
        session = self._current()
        if session is None:
            self.create()
            self._session_cache = data
            return
        self._write(session, data)
        self._session_key = session.cycle_id()
        self.modified = True

    async def acycle_key(self) -> None:
        """:meth:`cycle_key` in a worker thread."""
        await sync_to_async(self.cycle_key)()

    @classmethod
    def clear_expired(cls) -> None:
        """Expire idle sessions now. tribes does this by itself every 5 seconds in each member, so this
        only runs the check in this process's member if it is running (it never starts one)."""
        manager = _state.manager
        if manager is not None:
            manager.process_expires()
