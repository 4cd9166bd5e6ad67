"""`Session`: one HTTP session, a mutable mapping of attributes (Tomcat's ``DeltaSession``).

A Session is a working copy: the attributes live, encoded, in the Rust session table of its manager.
Reading an attribute decodes it once and caches it for the request; writing records the change. At
:meth:`SessionManager.commit <tribes.managers.SessionManager.commit>` the session sends what changed:
the attributes set or deleted, and every value read from the session that may have been changed in
place (lists, dicts, sets, …), re-encoded and compared with the bytes it was read from, so
``session["cart"].append(item)`` replicates without any call.
"""

from __future__ import annotations

import datetime
import decimal
import time
import uuid
from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from .errors import SessionError

if TYPE_CHECKING:
    from .managers import SessionManager

__all__ = ["Session"]

# Values of these exact types cannot change in place: their bytes from the write are final.
_IMMUTABLE = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        str,
        bytes,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        uuid.UUID,
        decimal.Decimal,
    }
)

_MISSING: Any = object()

# (id, created_ms, last_accessed_ms, max_inactive, is_new, principal, auth_type, attrs)
SessionState = tuple[str, int, int, int, bool, "str | None", "str | None", dict[str, bytes]]


class Session(MutableMapping[str, Any]):
    """One session: its attributes as a mapping, and its metadata.

    Obtained from a manager (``manager.create()``, ``manager.get(id)``), never built directly. Not
    thread-safe: one request uses it at a time, as in Tomcat.
    """

    __slots__ = (
        "_auth_type",
        "_created_ms",
        "_id",
        "_is_new",
        "_last_accessed_ms",
        "_manager",
        "_max_inactive",
        "_meta",
        "_principal",
        "_raw",
        "_removed",
        "_valid",
        "_values",
        "_written",
    )

    def __init__(self, manager: SessionManager, state: SessionState) -> None:
        """Internal: wrap a state tuple from the core."""
        self._manager = manager
        self._values: dict[str, Any] = {}
        self._written: dict[str, bytes] = {}
        self._removed: set[str] = set()
        self._meta: dict[str, Any] = {}
        self._valid = True
        self._load(state)

    def _load(self, state: SessionState) -> None:
        (
            self._id,
            self._created_ms,
            self._last_accessed_ms,
            self._max_inactive,
            self._is_new,
            self._principal,
            self._auth_type,
            self._raw,
        ) = state

    # -- metadata -----------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The session id (32 hex digits from the OS CSPRNG, then ``.<route>`` if the member has one)."""
        return self._id

    @property
    def created(self) -> float:
        """Creation time, seconds since the epoch."""
        return self._created_ms / 1000.0

    @property
    def last_accessed(self) -> float:
        """Last time a request used the session (as of when it was loaded), seconds since the epoch."""
        return self._last_accessed_ms / 1000.0

    @property
    def max_inactive(self) -> int:
        """Seconds of inactivity after which the session expires (≤ 0: never). Settable; replicates."""
        return int(self._meta.get("max_inactive", self._max_inactive))

    @max_inactive.setter
    def max_inactive(self, seconds: int) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not -(2**31) <= seconds < 2**31:
            raise ValueError(f"max_inactive must be an int of seconds, got {seconds!r}")
        self._meta["max_inactive"] = seconds

    @property
    def is_new(self) -> bool:
        """True until a request of the client that owns it has come back with its id (Tomcat ``isNew``)."""
        return bool(self._meta.get("is_new", self._is_new))

    @is_new.setter
    def is_new(self, value: bool) -> None:
        self._meta["is_new"] = bool(value)

    @property
    def principal(self) -> str | None:
        """The authenticated user's name, or None. Settable; replicates."""
        return self._meta.get("principal", self._principal)

    @principal.setter
    def principal(self, name: str | None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"principal must be a str or None, got {type(name).__name__}")
        self._meta["principal"] = name

    @property
    def auth_type(self) -> str | None:
        """How the user authenticated (``"FORM"``, ``"BASIC"``, …), or None. Settable; replicates."""
        return self._meta.get("auth_type", self._auth_type)

    @auth_type.setter
    def auth_type(self, value: str | None) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"auth_type must be a str or None, got {type(value).__name__}")
        self._meta["auth_type"] = value

    @property
    def valid(self) -> bool:
        """False after :meth:`invalidate`."""
        return self._valid

    @property
    def manager(self) -> SessionManager:
        """The manager this session belongs to."""
        return self._manager

    def invalidate(self) -> None:
        """End the session on every member (Tomcat ``invalidate()``)."""
        self._check_valid()
        self._manager.invalidate(self)

    def cycle_id(self) -> str:
        """Give the session a new id, keeping its data (fixation defence after login); returns it."""
        self._check_valid()
        return self._manager.change_id(self)

    def idle_seconds(self, now: float | None = None) -> float:
        """Seconds since the last access."""
        return (time.time() if now is None else now) - self.last_accessed

    # -- the mapping --------------------------------------------------------------------------------

    def _check_valid(self) -> None:
        if not self._valid:
            raise SessionError(f"session {self._id} has been invalidated")

    def __getitem__(self, name: str) -> Any:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        """The attribute ``name``, or ``default`` (without raising and catching a KeyError)."""
        value = self._values.get(name, _MISSING)
        if value is not _MISSING:
            return value
        raw = self._raw.get(name)
        if raw is None or name in self._removed:
            return default
        value = self._manager._decode(raw, name)
        self._values[name] = value
        return value

    def __setitem__(self, name: str, value: Any) -> None:
        self._check_valid()
        if not isinstance(name, str):
            raise TypeError(f"session attribute names are str, got {type(name).__name__}")
        manager = self._manager
        # Encoded now, so an unsupported value fails here, naming the attribute.
        data = manager._encode(value, name)
        if not manager._has_listeners:
            self._written[name] = data
            self._values[name] = value
            self._removed.discard(name)
            return
        old = self.get(name, _MISSING)
        self._written[name] = data
        self._values[name] = value
        self._removed.discard(name)
        if old is _MISSING:
            manager._fire("on_attribute_added", self._id, name, value)
        else:
            manager._fire("on_attribute_replaced", self._id, name, old, value)

    def __delitem__(self, name: str) -> None:
        self._check_valid()
        if name not in self:
            raise KeyError(name)
        old = self[name] if self._manager._has_listeners else None
        self._values.pop(name, None)
        self._written.pop(name, None)
        if name in self._raw:
            self._removed.add(name)
        self._manager._fire("on_attribute_removed", self._id, name, old)

    def __contains__(self, name: object) -> bool:
        if name in self._values:
            return True
        return name in self._raw and name not in self._removed

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for name in self._raw:
            if name not in self._removed:
                seen.add(name)
                yield name
        for name in list(self._values):
            if name not in seen:
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        state = "" if self._valid else " invalid"
        return f"<tribes.Session {self._id}{state} {len(self)} attribute(s)>"

    # -- commit support -----------------------------------------------------------------------------

    @property
    def modified(self) -> bool:
        """True when the application changed the session: a write, a delete, a metadata change (other
        than ``is_new``, which the web layer clears when the client comes back), or a value read and
        changed in place. A commit still sends a pending ``is_new`` change."""
        return bool(self._changes()[0] or any(k != "is_new" for k in self._meta))

    def _changes(self) -> tuple[list[tuple[str, bytes | None, bool]], dict[str, bytes | None]]:
        """The attribute writes to commit: ``[(name, bytes | None, local)]`` and the new raw bytes."""
        manager = self._manager
        replicates = manager._replicates
        written, raw = self._written, self._raw
        writes: list[tuple[str, bytes | None, bool]] = []
        new_raw: dict[str, bytes | None] = {}
        for name, value in self._values.items():
            data = written.get(name)
            immutable = type(value) in _IMMUTABLE
            if data is None:
                if immutable:
                    continue  # read, and cannot have changed
                data = manager._encode(value, name)
            elif not immutable:
                data = manager._encode(value, name)  # written, then maybe changed in place
            if raw.get(name) != data:
                writes.append((name, data, not replicates(name)))
                new_raw[name] = data
        for name in self._removed:
            writes.append((name, None, not replicates(name)))
            new_raw[name] = None
        return writes, new_raw

    def _committed(self, new_raw: dict[str, bytes | None]) -> None:
        raw = self._raw
        for name, data in new_raw.items():
            if data is None:
                raw.pop(name, None)
            else:
                raw[name] = data
        if self._removed:
            self._removed.clear()
        self._written.clear()
        if self._meta:
            for key, value in self._meta.items():
                setattr(self, f"_{key}", value)
            self._meta.clear()
        self._last_accessed_ms = time.time_ns() // 1_000_000
