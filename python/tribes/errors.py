"""The exception hierarchy of tribes.

Every exception raised on purpose by tribes, in Python or in the Rust core, is a :class:`TribesError`.
Where a standard exception fits, the class also derives from it, so existing ``except ValueError`` /
``except RuntimeError`` handlers keep working:

- :class:`ConfigError` (also a :class:`ValueError`): an invalid configuration value; ``field`` names it.
- :class:`ChannelError`: a send failed for some members; ``faulty`` lists them, each with its cause.
- :class:`ProtocolError`: bytes from the network that do not follow the wire format.
- :class:`NotStartedError` (also a :class:`RuntimeError`): the cluster is not running.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ChannelError",
    "ConfigError",
    "FaultyMember",
    "NotStartedError",
    "ProtocolError",
    "SessionError",
    "TooManySessionsError",
    "TribesError",
]


class TribesError(Exception):
    """Base class of every exception raised on purpose by tribes."""


class ConfigError(TribesError, ValueError):
    """An invalid configuration value, file or document.

    ``str(err)`` starts with the dotted name of the field when one is known, e.g.
    ``"membership.port: must be 1..65535, got 70000"``.
    """

    field: str | None
    """Dotted name of the offending field (``"receiver.port"``), or None when no single field is at fault."""

    reason: str
    """The message without the ``"field: "`` prefix."""

    def __init__(self, message: str, field: str | None = None) -> None:
        """Make the error; with ``field``, the message becomes ``"<field>: <message>"``."""
        message = str(message)
        if field is not None and not message.startswith(f"{field}: "):
            message = f"{field}: {message}"
        super().__init__(message)
        self.field = field
        self.reason = message[len(field) + 2 :] if field is not None else message


class ProtocolError(TribesError):
    """Bytes received from the network that do not follow the wire format (bad magic, length, field)."""


class NotStartedError(TribesError, RuntimeError):
    """An operation that needs a running cluster was called before ``start()`` or after ``stop()``."""


class SessionError(TribesError):
    """A session operation that cannot be done (for example changing the id of a session that ended)."""


class TooManySessionsError(SessionError):
    """``create()`` was refused: the manager already holds ``max_active`` sessions."""


@dataclass(frozen=True)
class FaultyMember:
    """One member a send failed for, and why (Tomcat's ``ChannelException.FaultyMember``)."""

    member: Any
    """The member (a ``tribes.Member`` when raised by the core; any object is accepted)."""

    cause: str
    """Why the send to this member failed, e.g. ``"connection refused"`` or ``"ack timeout"``."""

    def __str__(self) -> str:
        """``tcp://host:port (cause)``."""
        return f"{member_label(self.member)} ({self.cause})"


class ChannelError(TribesError):
    """A send failed for one or more members; the others got the message.

    ``ChannelError(message, faulty)`` accepts :class:`FaultyMember` objects or ``(member, cause)``
    tuples (the form the Rust core passes) and normalises them to :class:`FaultyMember`.
    ``str(err)`` is ``"<message>; Faulty members: tcp://h:p (cause), …"``.
    """

    message: str
    """The message without the list of faulty members."""

    faulty: tuple[FaultyMember, ...]
    """The members the send failed for, each with its cause, in the order reported."""

    def __init__(self, message: str, faulty: Iterable[FaultyMember | tuple[Any, Any]] | None = ()) -> None:
        """Make the error from a message and the faulty members."""
        normalised = tuple(_faulty_member(item) for item in (faulty or ()))
        super().__init__(str(message), normalised)
        self.message = str(message)
        self.faulty = normalised

    @property
    def members(self) -> tuple[Any, ...]:
        """The faulty members alone, without causes."""
        return tuple(item.member for item in self.faulty)

    def __str__(self) -> str:
        """The message followed by the faulty members and their causes."""
        if not self.faulty or "Faulty members:" in self.message:
            return self.message
        listing = ", ".join(str(item) for item in self.faulty)
        return f"{self.message}; Faulty members: {listing}"


def _faulty_member(item: FaultyMember | tuple[Any, Any]) -> FaultyMember:
    """Normalise one faulty-member entry."""
    if isinstance(item, FaultyMember):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        member, cause = item
        return FaultyMember(member, cause if isinstance(cause, str) else str(cause))
    raise TypeError(f"faulty members must be FaultyMember or (member, cause) tuples, got {item!r}")


def member_label(member: object) -> str:
    """A member as ``tcp://host:port`` (``tcp://[v6]:port`` for IPv6), as Tomcat names members.

    Uses the member's ``host`` and ``port`` attributes (``host`` may be text or 4/16 raw bytes) or a
    ``(host, port)`` tuple; anything else is shown with ``str()``.
    """
    if isinstance(member, tuple) and len(member) == 2:
        host, port = member
    else:
        host, port = getattr(member, "host", None), getattr(member, "port", None)
    if isinstance(host, bytes | bytearray) and len(host) in (4, 16):
        host = str(ipaddress.ip_address(bytes(host)))
    if isinstance(host, str) and isinstance(port, int) and not isinstance(port, bool):
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"tcp://{host}:{port}"
    return str(member)
