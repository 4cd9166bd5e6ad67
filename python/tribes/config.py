"""Cluster configuration: frozen, typed dataclasses with Apache Tomcat's defaults.

A :class:`ClusterConfig` holds five parts, named as in Tomcat's ``<Cluster>`` element:

- :class:`MembershipConfig` — multicast heartbeats (Tomcat ``McastService``) or a fixed list of
  :class:`StaticMember` peers (``StaticMembershipService``);
- :class:`ReceiverConfig` — the TCP listener (``NioReceiver``);
- :class:`SenderConfig` — the connection pool that writes to the other members (``PooledParallelSender``);
- ``interceptors`` — an ordered tuple of :class:`InterceptorConfig` (first = closest to the application);
- ``send_options`` — Tomcat's send-option bits or their names (``"use_ack"``, ``"async"``,
  ``"use_ack,sync"``).

Sources: ``ClusterConfig(...)``, :meth:`ClusterConfig.local` (the loopback preset),
:meth:`ClusterConfig.from_dict`, :meth:`ClusterConfig.from_file` (TOML) and
:meth:`ClusterConfig.from_tomcat_xml` (a Tomcat ``<Cluster>`` element). Invalid values raise
:class:`~tribes.errors.ConfigError` naming the field, e.g. ``"membership.port: must be 1..65535, got 70000"``.

Security: with a shared ``secret`` (the field, or the ``TRIBES_SECRET`` environment variable when the field
is unset) the core encrypts and authenticates every channel message and tags every membership packet; older
``secondary_secrets`` stay accepted while a secret rotates. Secrets never appear in ``repr``/``str``, in log
messages, in error messages, or in :meth:`ClusterConfig.to_dict`/:meth:`ClusterConfig.to_toml` (unless
``include_secrets=True``). Without a secret, traffic is not encrypted: unless ``bind`` names an interface,
multicast goes out on the loopback interface only, the receiver listens on 127.0.0.1 by default (Tomcat:
``auto``), and :meth:`ClusterConfig.check_security` (also run by :meth:`ClusterConfig.to_core_json`) refuses
any non-loopback address unless ``insecure=True``, and then logs a warning.

Every field carries a one-line description in ``dataclasses.fields(...)[i].metadata["doc"]``;
:func:`config_reference` renders them all as Markdown.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import logging
import math
import os
import re
import socket
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from ._checks import MAX_INT as _MAX_INT
from ._checks import check_bool as _check_bool
from ._checks import check_int as _check_int
from ._checks import check_str as _check_str
from ._checks import doc as _doc
from ._checks import show as _show
from .errors import ConfigError
from .manager_config import ManagerConfig

__all__ = [
    "SEND_OPTION_ASYNCHRONOUS",
    "SEND_OPTION_BYTE_MESSAGE",
    "SEND_OPTION_MULTICAST",
    "SEND_OPTION_SECURE",
    "SEND_OPTION_SYNCHRONIZED_ACK",
    "SEND_OPTION_UDP",
    "SEND_OPTION_USE_ACK",
    "ClusterConfig",
    "InterceptorConfig",
    "MembershipConfig",
    "ReceiverConfig",
    "SenderConfig",
    "StaticMember",
    "config_reference",
    "send_options_bits",
    "send_options_to_string",
]

_log = logging.getLogger("tribes.config")

_MAX_BYTES_FIELD = 4096  # domain / payload limit: keeps a membership packet far below 65535 bytes
_AUTO = "auto"

_ENV_SECRET = "TRIBES_SECRET"  # the secret, used when ClusterConfig.secret is None
_ENV_SECONDARY_SECRETS = "TRIBES_SECONDARY_SECRETS"  # comma-separated older secrets, with TRIBES_SECRET
_MIN_SECRET_BYTES = 16
_HIDDEN = "<hidden>"  # what repr shows instead of a secret interceptor option
_TOMCAT_GCM = "AES/GCM/NoPadding"  # the only EncryptInterceptor algorithm tomcat_encrypt speaks
_TOMCAT_DEFAULT_ALGORITHM = "AES/CBC/PKCS5Padding"  # EncryptInterceptor's default encryptionAlgorithm


# --------------------------------------------------------------------------------------------------------
# Send options (Tomcat's tribes/Channel.java)

SEND_OPTION_BYTE_MESSAGE = 0x01
"""Payload is raw bytes (Tomcat ``SEND_OPTIONS_BYTE_MESSAGE``)."""
SEND_OPTION_USE_ACK = 0x02
"""The receiver acknowledges each message; the sender waits for it (``SEND_OPTIONS_USE_ACK``)."""
SEND_OPTION_SYNCHRONIZED_ACK = 0x04
"""With USE_ACK: acknowledge only after the message was processed (``SEND_OPTIONS_SYNCHRONIZED_ACK``)."""
SEND_OPTION_ASYNCHRONOUS = 0x08
"""Queue the message and return at once; the dispatch interceptor sends it (``SEND_OPTIONS_ASYNCHRONOUS``)."""
SEND_OPTION_SECURE = 0x10
"""Tomcat ``SEND_OPTIONS_SECURE`` (not implemented by Tomcat either)."""
SEND_OPTION_UDP = 0x20
"""Send over UDP to the member's UDP port (``SEND_OPTIONS_UDP``)."""
SEND_OPTION_MULTICAST = 0x40
"""Send through the membership multicast socket (``SEND_OPTIONS_MULTICAST``)."""

_SEND_OPTION_MASK = 0x7F
_SEND_OPTION_NAMES: dict[str, int] = {
    "async": SEND_OPTION_ASYNCHRONOUS,
    "asynchronous": SEND_OPTION_ASYNCHRONOUS,
    "use_ack": SEND_OPTION_USE_ACK,
    # "sync" alone implies use_ack: a synchronized ack is still an ack.
    "sync": SEND_OPTION_SYNCHRONIZED_ACK | SEND_OPTION_USE_ACK,
    "synchronized_ack": SEND_OPTION_SYNCHRONIZED_ACK | SEND_OPTION_USE_ACK,
    "byte": SEND_OPTION_BYTE_MESSAGE,
    "byte_message": SEND_OPTION_BYTE_MESSAGE,
    "multicast": SEND_OPTION_MULTICAST,
    "secure": SEND_OPTION_SECURE,
    "udp": SEND_OPTION_UDP,
}
# Order of Tomcat's Channel.getSendOptionsAsString.
_SEND_OPTION_DISPLAY = (
    (SEND_OPTION_ASYNCHRONOUS, "async"),
    (SEND_OPTION_SYNCHRONIZED_ACK, "sync"),
    (SEND_OPTION_USE_ACK, "use_ack"),
    (SEND_OPTION_BYTE_MESSAGE, "byte"),
    (SEND_OPTION_MULTICAST, "multicast"),
    (SEND_OPTION_SECURE, "secure"),
    (SEND_OPTION_UDP, "udp"),
)


def send_options_bits(value: str | int, field: str = "send_options") -> int:
    """Tomcat send-option bits from an integer, an integer string or names.

    Names (case-insensitive, comma separated, spaces allowed): ``async``/``asynchronous`` = 8,
    ``use_ack`` = 2, ``sync``/``synchronized_ack`` = 4 plus use_ack (so ``"sync"`` = 6), ``byte``/
    ``byte_message`` = 1, ``multicast`` = 64, ``secure`` = 16, ``udp`` = 32. Integers (and integer
    tokens, decimal or ``0x`` hex) are taken literally. Only bits 0x01..0x40 are allowed: higher bits are
    reserved for interceptors. Raises :class:`ConfigError` naming ``field``.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(
            f"must be an integer or option names like 'use_ack,sync', got {_show(value)}", field
        )
    if isinstance(value, int):
        bits = value
    else:
        if not value.strip():
            raise ConfigError(
                "must not be empty (use 'use_ack', 'async', 'use_ack,sync' or an integer)", field
            )
        bits = 0
        for raw in value.split(","):
            token = raw.strip().lower()
            if token in _SEND_OPTION_NAMES:
                bits |= _SEND_OPTION_NAMES[token]
            elif token.isdigit():
                bits |= int(token)
            elif token.startswith("0x") and len(token) > 2:
                try:
                    bits |= int(token, 16)
                except ValueError:
                    raise ConfigError(f"invalid hexadecimal send option {raw.strip()!r}", field) from None
            else:
                known = ", ".join(sorted(_SEND_OPTION_NAMES))
                what = repr(raw.strip()) if token else "empty name"
                raise ConfigError(f"unknown send option {what} in {value!r} (known: {known})", field)
    if bits < 0 or bits & ~_SEND_OPTION_MASK:
        raise ConfigError(
            f"unsupported send option bits {bits:#x} (allowed: {_SEND_OPTION_MASK:#x}; "
            "higher bits are reserved for interceptors)",
            field,
        )
    return bits


def send_options_to_string(bits: int) -> str:
    """Names for send-option bits, like Tomcat's ``getSendOptionsAsString``.

    ``send_options_to_string(15) == "async, sync, use_ack, byte"``.
    """
    return ", ".join(name for bit, name in _SEND_OPTION_DISPLAY if bits & bit)


# --------------------------------------------------------------------------------------------------------
# Value checks (every one raises ConfigError naming the field)


_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _check_ip(value: object, fld: str, what: str = "an IP address") -> _IPAddress:
    text = _check_str(value, fld)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"must be {what}, got {text!r}", fld) from None


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$")


def _check_host(value: object, fld: str) -> str:
    text = _check_str(value, fld)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not _HOSTNAME.match(text):
            raise ConfigError(f"must be an IP address or a host name, got {text!r}", fld) from None
    return text


def _check_secret(value: object, fld: str, origin: str = "") -> str:
    """A shared secret: text of at least 16 bytes of UTF-8. Error messages never show the value."""
    if not isinstance(value, str):
        raise ConfigError(f"{origin}must be a string, got a value of type {type(value).__name__}", fld)
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ConfigError(f"{origin}must be valid Unicode text (no lone surrogates)", fld) from None
    if size < _MIN_SECRET_BYTES:
        raise ConfigError(
            f"{origin}must be at least {_MIN_SECRET_BYTES} bytes of UTF-8, got {size} "
            "(use a long random string, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
            fld,
        )
    return value


def _check_key_ring(secret: str | None, secondary: object, origin: str = "") -> tuple[str, ...]:
    """``secret`` and ``secondary`` checked together; returns the secondary secrets as a tuple.

    ``origin`` prefixes the messages (``"from TRIBES_SECRET: "``) for secrets taken from the environment.
    """
    if isinstance(secondary, str | bytes | Mapping) or not isinstance(secondary, Iterable):
        raise ConfigError(
            f"{origin}must be a list of strings, got a value of type {type(secondary).__name__}",
            "secondary_secrets",
        )
    items = tuple(secondary)
    if secret is None:
        if items:
            raise ConfigError(
                f"{origin}secondary (older, still accepted) secrets need a sending secret; "
                f"set `secret` (or {_ENV_SECRET})",
                "secondary_secrets",
            )
        return ()
    _check_secret(secret, "secret", origin)
    seen = [secret]
    for i, item in enumerate(items):
        fld = f"secondary_secrets[{i}]"
        _check_secret(item, fld, origin)
        if item in seen:
            what = "secret" if item == secret else f"secondary_secrets[{seen.index(item) - 1}]"
            raise ConfigError(f"{origin}duplicate secret (the same as {what})", fld)
        seen.append(item)
    return items


def _check_hex_key(value: object, fld: str) -> str:
    """A Tomcat EncryptInterceptor key: 32, 48 or 64 hex digits, lower-cased. Errors never show the value."""
    if not isinstance(value, str):
        raise ConfigError(f"must be a hex string, got a value of type {type(value).__name__}", fld)
    text = value.strip()
    if not re.fullmatch(r"[0-9A-Fa-f]*", text):
        raise ConfigError("must be hex digits only (0-9, a-f)", fld)
    if len(text) not in (32, 48, 64):
        raise ConfigError(
            f"must be 32, 48 or 64 hex digits (AES-128, AES-192 or AES-256), got {len(text)} digits", fld
        )
    return text.lower()


def _parse_bytes(value: object, fld: str, max_len: int = _MAX_BYTES_FIELD) -> bytes:
    """Bytes from bytes, a list of ints, Tomcat's ``{1,2,3}`` syntax or a string (ISO-8859-1)."""
    if isinstance(value, bytes | bytearray | memoryview):
        result = bytes(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            if not text.endswith("}"):
                raise ConfigError(f"byte array {value!r} must end with '}}'", fld)
            inner = text[1:-1].strip()
            numbers: list[int] = []
            for token in inner.split(",") if inner else []:
                try:
                    numbers.append(int(token.strip()))
                except ValueError:
                    raise ConfigError(
                        f"byte array {value!r}: {token.strip()!r} is not an integer", fld
                    ) from None
            result = _bytes_from_ints(numbers, fld)
        else:
            try:
                result = value.encode("latin-1")
            except UnicodeEncodeError:
                raise ConfigError(
                    f"text {value!r} is not representable in ISO-8859-1; give bytes or a list of integers",
                    fld,
                ) from None
    elif isinstance(value, list | tuple):
        result = _bytes_from_ints(value, fld)
    else:
        raise ConfigError(f"must be bytes, a string or a list of integers, got {_show(value)}", fld)
    if len(result) > max_len:
        raise ConfigError(f"must be at most {max_len} bytes, got {len(result)}", fld)
    return result


def _bytes_from_ints(values: Iterable[object], fld: str) -> bytes:
    out = bytearray()
    for item in values:
        if isinstance(item, bool) or not isinstance(item, int) or not -128 <= item <= 255:
            raise ConfigError(f"byte values must be integers in -128..255, got {_show(item)}", fld)
        out.append(item & 0xFF)
    return bytes(out)


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _init_names(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


_set = object.__setattr__


# --------------------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class StaticMember:
    """A fixed peer for static membership (Tomcat ``<Member className="…StaticMember">``)."""

    host: str = field(
        metadata=_doc("Peer host name or IP address; names are resolved when the cluster starts.")
    )
    port: int = field(metadata=_doc("The peer's receiver TCP port."))
    unique_id: bytes | None = field(
        default=None,
        metadata=_doc(
            "The peer's 16-byte unique id (Tomcat ``uniqueId``, ``{1,2,…}`` accepted); "
            "None = derived from host:port, so every node names the peer alike."
        ),
    )
    domain: bytes = field(
        default=b"", metadata=_doc("The peer's membership domain (str → ISO-8859-1 bytes).")
    )

    _FIELD = "membership.static_members"

    def __post_init__(self) -> None:
        prefix = self._FIELD
        _check_host(self.host, f"{prefix}.host")
        _check_int(self.port, f"{prefix}.port", 1, 65535)
        if self.unique_id is not None:
            uid = _parse_unique_id(self.unique_id, f"{prefix}.unique_id")
            _set(self, "unique_id", uid)
        _set(self, "domain", _parse_bytes(self.domain, f"{prefix}.domain"))

    @classmethod
    def parse(cls, text: str) -> StaticMember:
        """A member from ``"host:port"`` (``"[v6]:port"`` for IPv6)."""
        fld = cls._FIELD
        host, sep, port = _check_str(text, fld).strip().rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"expected 'host:port', got {text!r}", fld)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return cls(host, int(port))


def _parse_unique_id(value: object, fld: str) -> bytes:
    if isinstance(value, str) and re.fullmatch(r"[0-9A-Fa-f]{32}", value.strip()):
        uid = bytes.fromhex(value.strip())
    elif isinstance(value, str) and not value.strip().startswith("{"):
        raise ConfigError(
            f"must be 16 bytes: {{1,2,…}}, 32 hex digits or a list of integers, got {value!r}", fld
        )
    else:
        uid = _parse_bytes(value, fld)
    if len(uid) != 16:
        raise ConfigError(f"must be exactly 16 bytes, got {len(uid)}", fld)
    return uid


def _static_member(item: object, index: int) -> StaticMember:
    """A StaticMember from a StaticMember, a mapping, ``"host:port"`` or ``(host, port)``."""
    fld = f"membership.static_members[{index}]"
    try:
        if isinstance(item, StaticMember):
            return item
        if isinstance(item, str):
            return StaticMember.parse(item)
        if isinstance(item, tuple) and len(item) == 2:
            return StaticMember(*item)
        if isinstance(item, Mapping):
            known = _init_names(StaticMember)
            for key in item:
                if key not in known:
                    raise ConfigError(f"unknown field{_suggest(str(key), known)}", f"{fld}.{key}")
            missing = [name for name in ("host", "port") if name not in item]
            if missing:
                raise ConfigError("missing (each static member needs host and port)", f"{fld}.{missing[0]}")
            return StaticMember(**item)
    except ConfigError as err:
        if err.field is not None and err.field.startswith(StaticMember._FIELD + "."):
            raise ConfigError(err.reason, fld + err.field[len(StaticMember._FIELD) :]) from None
        if err.field == StaticMember._FIELD:
            raise ConfigError(err.reason, fld) from None
        raise
    except TypeError as err:
        raise ConfigError(str(err), fld) from None
    raise ConfigError(
        f"must be a StaticMember, a table with host and port, or 'host:port', got {_show(item)}", fld
    )


@dataclass(frozen=True, kw_only=True)
class MembershipConfig:
    """How members find each other: multicast heartbeats (Tomcat ``McastService``) or static peers.

    With a non-empty ``static_members``, membership is static (Tomcat ``StaticMembershipService``) and no
    multicast is sent. Unless ``bind`` names an interface, multicast uses the loopback interface only
    (Tomcat: the system default interface). With a cluster secret every membership packet carries an
    authentication tag; packets without a valid one are dropped and never create a member.
    """

    address: str = field(default="228.0.0.4", metadata=_doc("Multicast group address (IPv4 or IPv6)."))
    port: int = field(
        default=45564, metadata=_doc("Multicast port; address and port together define the cluster.")
    )
    frequency_ms: int = field(
        default=500, metadata=_doc("Heartbeat send interval in ms (Tomcat ``frequency``).")
    )
    drop_time_ms: int = field(
        default=3000, metadata=_doc("Silence in ms after which a member expires (Tomcat ``dropTime``).")
    )
    bind: str | None = field(
        default=None,
        metadata=_doc(
            "IP address of the interface for multicast; None = loopback (127.0.0.1, or ::1 for IPv6)."
        ),
    )
    ttl: int | None = field(default=None, metadata=_doc("Multicast TTL 0..255; None = system default."))
    domain: bytes = field(
        default=b"",
        metadata=_doc("Membership domain (str → ISO-8859-1, or Tomcat ``{1,2,3}``); ≤ 4096 bytes."),
    )
    payload: bytes = field(
        default=b"", metadata=_doc("Application bytes sent with every heartbeat; ≤ 4096 bytes.")
    )
    local_loopback_disabled: bool = field(
        default=False,
        metadata=_doc("Disable IP_MULTICAST_LOOP (members on this host no longer see each other)."),
    )
    static_members: tuple[StaticMember, ...] = field(
        default=(), metadata=_doc("Fixed peers; non-empty = static membership, no multicast.")
    )
    max_members: int = field(
        default=1024,
        metadata=_doc("Most members tracked (1..65536); packets of further members are ignored and counted."),
    )

    def __post_init__(self) -> None:
        group = _check_ip(self.address, "membership.address", "a multicast IP address")
        if not group.is_multicast:
            raise ConfigError(
                f"must be a multicast address (224.0.0.0/4 or ff00::/8), got {self.address!r}",
                "membership.address",
            )
        _check_int(self.port, "membership.port", 1, 65535)
        _check_int(self.frequency_ms, "membership.frequency_ms", 10)
        _check_int(self.drop_time_ms, "membership.drop_time_ms", 1)
        if self.drop_time_ms <= self.frequency_ms:
            raise ConfigError(
                f"must be greater than membership.frequency_ms ({self.frequency_ms}), "
                f"got {self.drop_time_ms}",
                "membership.drop_time_ms",
            )
        if self.ttl is not None:
            _check_int(self.ttl, "membership.ttl", 0, 255)
        _set(self, "domain", _parse_bytes(self.domain, "membership.domain"))
        _set(self, "payload", _parse_bytes(self.payload, "membership.payload"))
        _check_bool(self.local_loopback_disabled, "membership.local_loopback_disabled")
        items: object = self.static_members
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
            raise ConfigError(
                f"must be a list of static members, got {_show(items)}", "membership.static_members"
            )
        members = tuple(_static_member(item, i) for i, item in enumerate(items))
        seen: set[tuple[str, int]] = set()
        for i, member in enumerate(members):
            if (member.host, member.port) in seen:
                raise ConfigError(
                    f"duplicate member {member.host}:{member.port}", f"membership.static_members[{i}]"
                )
            seen.add((member.host, member.port))
        _set(self, "static_members", members)
        _check_int(self.max_members, "membership.max_members", 1, 65536)
        if len(members) > self.max_members:
            raise ConfigError(
                f"{len(members)} static members exceed membership.max_members ({self.max_members})",
                "membership.static_members",
            )
        if self.bind is not None:
            bind = _check_ip(self.bind, "membership.bind", "an interface IP address or None")
            if bind.is_multicast:
                raise ConfigError(
                    f"must be an interface address, not a multicast group: {self.bind!r}", "membership.bind"
                )
            if not members and bind.version != group.version:
                raise ConfigError(
                    f"must be an IPv{group.version} address for the multicast group {self.address}, "
                    f"got {self.bind!r}",
                    "membership.bind",
                )

    @property
    def is_static(self) -> bool:
        """True when membership is static (``static_members`` is not empty)."""
        return bool(self.static_members)

    def effective_bind(self) -> str:
        """The interface multicast uses: ``bind``, or loopback for the group's IP version."""
        if self.bind is not None:
            return str(ipaddress.ip_address(self.bind))
        return "::1" if ipaddress.ip_address(self.address).version == 6 else "127.0.0.1"


@dataclass(frozen=True, kw_only=True)
class ReceiverConfig:
    """The TCP listener that other members send to (Tomcat ``NioReceiver``).

    Deliberate deviation from Tomcat: ``address`` defaults to 127.0.0.1, not ``"auto"`` (secure by default:
    without a cluster secret, traffic is not encrypted). ``"auto"`` is accepted and resolved, when the
    cluster starts, to ``socket.gethostbyname(socket.gethostname())`` (127.0.0.1 if that fails), like Tomcat's
    ``getLocalHost()``. ``auto_bind`` must be ≥ 1 here (Tomcat silently turns ≤ 0 into 1; so does
    :meth:`ClusterConfig.from_tomcat_xml`).
    """

    address: str = field(
        default="127.0.0.1",
        metadata=_doc(
            "IP address to listen on and advertise, or ``auto`` (Tomcat's default; ours: 127.0.0.1)."
        ),
    )
    port: int = field(default=4000, metadata=_doc("First TCP port to try; 0 = a free port picked by the OS."))
    auto_bind: int = field(
        default=100, metadata=_doc("Number of ports to try: port … port+auto_bind-1 (Tomcat ``autoBind``).")
    )
    max_frame: int = field(
        default=16 * 1024 * 1024, metadata=_doc("Largest accepted message frame in bytes (1 KiB..1 GiB).")
    )
    max_connections: int = field(default=1024, metadata=_doc("Most simultaneous inbound connections."))
    idle_timeout_ms: int = field(
        default=60_000,
        metadata=_doc(
            "Inbound connections idle this long in ms are closed; ≥ 20000, because senders ping their idle "
            "connections every 15 s."
        ),
    )

    def __post_init__(self) -> None:
        address = _check_str(self.address, "receiver.address")
        if address.strip().lower() == _AUTO:
            _set(self, "address", _AUTO)
        else:
            ip = _check_ip(address, "receiver.address", "an IP address or 'auto'")
            if ip.is_multicast or ip.is_unspecified:
                raise ConfigError(
                    "must be a unicast address of this host or 'auto' (it is advertised to peers), "
                    f"got {address!r}",
                    "receiver.address",
                )
        _check_int(self.port, "receiver.port", 0, 65535)
        _check_int(self.auto_bind, "receiver.auto_bind", 1, 65535)
        if self.port + self.auto_bind - 1 > 65535:
            raise ConfigError(
                f"port {self.port} + auto_bind {self.auto_bind} - 1 exceeds 65535; "
                f"lower auto_bind to at most {65536 - self.port}",
                "receiver.auto_bind",
            )
        _check_int(self.max_frame, "receiver.max_frame", 1024, 1024**3)
        _check_int(self.max_connections, "receiver.max_connections", 1)
        _check_int(self.idle_timeout_ms, "receiver.idle_timeout_ms", 20_000)


@dataclass(frozen=True, kw_only=True)
class SenderConfig:
    """How messages are written to other members (Tomcat ``ReplicationTransmitter`` with its
    ``PooledParallelSender`` transport)."""

    timeout_ms: int = field(
        default=3000,
        metadata=_doc("Time budget in ms for one send to all its destinations (Tomcat ``timeout``)."),
    )
    connect_timeout_ms: int = field(default=1000, metadata=_doc("TCP connect timeout in ms."))
    max_retries: int = field(
        default=1,
        metadata=_doc("Extra attempts per destination after a failure (Tomcat ``maxRetryAttempts``)."),
    )
    keepalive: bool = field(
        default=True,
        metadata=_doc("TCP keepalive probes on idle member connections (which stay open between sends)."),
    )

    def __post_init__(self) -> None:
        _check_int(self.timeout_ms, "sender.timeout_ms", 1)
        _check_int(self.connect_timeout_ms, "sender.connect_timeout_ms", 1)
        _check_int(self.max_retries, "sender.max_retries", 0, 100)
        _check_bool(self.keepalive, "sender.keepalive")


# --------------------------------------------------------------------------------------------------------
# Interceptors


@dataclass(frozen=True)
class _Option:
    """Specification of one interceptor option."""

    default: Any
    doc: str
    lo: int = 0
    hi: int = _MAX_INT
    choices: tuple[str, ...] = ()
    kind: str = "int"  # "int", "choice", "bytes" or "hexkey"
    required: bool = False
    secret: bool = False  # hidden from repr, to_dict and to_toml (unless include_secrets)


@dataclass(frozen=True)
class _InterceptorSpec:
    doc: str
    options: dict[str, _Option]


# The names and options of docs/internals.md. To add an interceptor: one entry here (and, for Tomcat XML,
# one entry in _XML_INTERCEPTORS below).
_INTERCEPTORS: dict[str, _InterceptorSpec] = {
    "dispatch": _InterceptorSpec(
        "Asynchronous send queue for messages sent with ``async`` (Tomcat MessageDispatchInterceptor).",
        {
            "max_queue_bytes": _Option(
                64 * 1024 * 1024,
                "Most bytes waiting in the async send queue (Tomcat ``maxQueueSize``).",
                lo=1,
            )
        },
    ),
    "failure_detector": _InterceptorSpec(
        "Confirms a member's departure by a TCP probe before reporting it (Tomcat TcpFailureDetector).",
        {
            "connect_timeout_ms": _Option(1000, "Probe connect timeout in ms.", lo=1),
            "remove_suspects_timeout_ms": _Option(
                300_000, "How long in ms a suspect that still answers probes is kept.", lo=0
            ),
        },
    ),
    "order": _InterceptorSpec(
        "Delivers each sender's messages in send order (Tomcat OrderInterceptor).",
        {
            "expire_ms": _Option(3000, "How long in ms to wait for a missing message.", lo=1),
            "max_queue": _Option(10_000, "Most messages held back per sender.", lo=1),
        },
    ),
    "fragmentation": _InterceptorSpec(
        "Splits large messages into pieces (Tomcat FragmentationInterceptor).",
        {
            "max_size": _Option(102_400, "Largest piece in bytes.", lo=1),
            "expire_ms": _Option(60_000, "How long in ms an incomplete message is kept.", lo=1),
            "max_in_flight": _Option(1024, "Most incomplete messages held at once.", lo=1),
        },
    ),
    "compression": _InterceptorSpec(
        "Compresses message payloads (Tomcat GzipInterceptor; lz4 is a tribes extension).",
        {
            "codec": _Option("gzip", "Compression codec.", kind="choice", choices=("gzip", "lz4")),
            "min_size": _Option(0, "Smallest payload in bytes that is compressed.", lo=0),
        },
    ),
    "throughput": _InterceptorSpec(
        "Logs traffic volume and rates (Tomcat ThroughputInterceptor).",
        {"interval": _Option(10_000, "Messages between two log lines.", lo=1)},
    ),
    "domain_filter": _InterceptorSpec(
        "Ignores members and messages of other domains (Tomcat DomainFilterInterceptor).",
        {"domain": _Option(None, "Domain bytes to accept; default: the membership domain.", kind="bytes")},
    ),
    "tomcat_encrypt": _InterceptorSpec(
        "Encrypts message payloads like Tomcat's EncryptInterceptor with ``AES/GCM/NoPadding``, to talk to "
        "Tomcat channels that use it (tribes members use the cluster ``secret`` instead).",
        {
            "key": _Option(
                None,
                "Required. The shared key as 32, 48 or 64 hex digits (AES-128/192/256; Tomcat "
                "``encryptionKey``); never shown in repr, logs or to_toml.",
                kind="hexkey",
                required=True,
                secret=True,
            ),
            "replay_window_ms": _Option(
                10_000, "Accepted clock difference in ms for a message's timestamp.", lo=1, hi=3_600_000
            ),
            "replay_window_count": _Option(
                8192, "Recent messages remembered to reject replays.", lo=1, hi=10_000_000
            ),
            "format": _Option(
                "timestamped",
                "``timestamped`` (Tomcat 10.1.56 and later: an 8-byte timestamp inside each message, "
                "for replay protection) or ``plain`` (earlier 10.1.x releases).",
                kind="choice",
                choices=("timestamped", "plain"),
            ),
        },
    ),
}
_SECRET_OPTIONS = frozenset(k for spec in _INTERCEPTORS.values() for k, o in spec.options.items() if o.secret)


class _FrozenOptions(dict[str, Any]):
    """A read-only dict of normalised interceptor options (hashable, picklable, ``asdict``-friendly)."""

    __slots__ = ()

    def _readonly(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("interceptor options are read-only; use InterceptorConfig.of(name, **options)")

    __setitem__ = _readonly
    __delitem__ = _readonly
    __ior__ = _readonly
    clear = _readonly
    pop = _readonly
    popitem = _readonly
    setdefault = _readonly
    update = _readonly

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __repr__(self) -> str:
        shown = {k: _HIDDEN if k in _SECRET_OPTIONS else v for k, v in self.items()}
        return repr(shown)

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))


def _normalise_options(name: str, options: object) -> _FrozenOptions:
    spec = _INTERCEPTORS[name]
    prefix = f"interceptors.{name}"
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"options must be a mapping, got {_show(options)}", prefix)
    for key in options:
        if key not in spec.options:
            known = ", ".join(spec.options)
            raise ConfigError(
                f"unknown option{_suggest(str(key), spec.options)} (known: {known})", f"{prefix}.{key}"
            )
    result: dict[str, Any] = {}
    for key, opt in spec.options.items():
        fld = f"{prefix}.{key}"
        if key not in options:
            if opt.required:
                raise ConfigError(f"required (the {name} interceptor needs it)", fld)
            if opt.default is not None:
                result[key] = opt.default
            continue
        value = options[key]
        if opt.kind == "int":
            result[key] = _check_int(value, fld, opt.lo, opt.hi)
        elif opt.kind == "choice":
            text = _check_str(value, fld).strip().lower()
            if text not in opt.choices:
                raise ConfigError(f"must be one of {', '.join(opt.choices)}, got {value!r}", fld)
            result[key] = text
        elif opt.kind == "hexkey":
            result[key] = _check_hex_key(value, fld)
        else:
            result[key] = _parse_bytes(value, fld)
    return _FrozenOptions(result)


@dataclass(frozen=True)
class InterceptorConfig:
    """One interceptor of the channel stack, by name, with its options.

    Names and options (defaults are filled in, unknown names and options raise ConfigError):
    ``dispatch`` (max_queue_bytes), ``failure_detector`` (connect_timeout_ms, remove_suspects_timeout_ms),
    ``order`` (expire_ms, max_queue), ``fragmentation`` (max_size, expire_ms, max_in_flight),
    ``compression`` (codec "gzip"|"lz4", min_size), ``throughput`` (interval), ``domain_filter`` (domain),
    ``tomcat_encrypt`` (key — required, hidden from ``repr`` —, replay_window_ms, replay_window_count).
    """

    name: str = field(metadata=_doc("Interceptor name: " + ", ".join(_INTERCEPTORS) + "."))
    options: Mapping[str, Any] = field(
        default_factory=_FrozenOptions, metadata=_doc("Options, normalised: defaults filled, read-only.")
    )

    def __post_init__(self) -> None:
        name = _check_str(self.name, "interceptors")
        if name not in _INTERCEPTORS:
            known = ", ".join(_INTERCEPTORS)
            raise ConfigError(
                f"unknown interceptor {name!r}{_suggest(name, _INTERCEPTORS)} (known: {known})",
                "interceptors",
            )
        _set(self, "options", _normalise_options(name, self.options))

    @classmethod
    def of(cls, name: str, /, **options: Any) -> InterceptorConfig:
        """``InterceptorConfig.of("order", expire_ms=5000)``."""
        return cls(name, options)


def _interceptor(item: object) -> InterceptorConfig:
    """An InterceptorConfig from a name, ``(name, options)``, ``{"name": …, **options}`` or itself."""
    if isinstance(item, InterceptorConfig):
        return item
    if isinstance(item, str):
        return InterceptorConfig(item)
    if isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str):
        return InterceptorConfig(item[0], item[1])
    if isinstance(item, Mapping):
        if "name" not in item:
            raise ConfigError("each interceptor table needs a name", "interceptors")
        options = {k: v for k, v in item.items() if k != "name"}
        if set(options) == {"options"} and isinstance(options["options"], Mapping):
            options = dict(options["options"])
        return InterceptorConfig(item["name"], options)
    raise ConfigError(
        f"each interceptor must be a name, (name, options), a table with a name or an InterceptorConfig, "
        f"got {_show(item)}",
        "interceptors",
    )


# --------------------------------------------------------------------------------------------------------
# ClusterConfig

_SectionT = TypeVar("_SectionT", MembershipConfig, ReceiverConfig, SenderConfig)
_SECTIONS: dict[str, type[Any]] = {
    "membership": MembershipConfig,
    "receiver": ReceiverConfig,
    "sender": SenderConfig,
}


def _section(cls: type[_SectionT], value: object, base: _SectionT, name: str) -> _SectionT:
    """A section from an instance, or a mapping merged over ``base``."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = _init_names(cls)
        for key in value:
            if key not in known:
                raise ConfigError(f"unknown field{_suggest(str(key), known)}", f"{name}.{key}")
        return dataclasses.replace(base, **value)
    raise ConfigError(f"must be a {cls.__name__} or a mapping, got {_show(value)}", name)


def _default_interceptors() -> tuple[InterceptorConfig, ...]:
    return (InterceptorConfig("dispatch"), InterceptorConfig("failure_detector"))


@dataclass(frozen=True)
class _Resolved:
    """Addresses as the core gets them: 'auto', unset bind and host names resolved."""

    bind: str
    receiver: str
    static_hosts: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """The whole configuration of one cluster member (Tomcat ``<Cluster>`` with its ``<Channel>``).

    Frozen: derive variants with ``dataclasses.replace`` or :meth:`with_overrides`. Sections may be
    given as dicts, merged over the section's defaults (``ClusterConfig(membership={"port": 45600})``);
    interceptors as names, ``(name, options)`` pairs, ``{"name": …, **options}`` dicts or
    :class:`InterceptorConfig`.
    """

    name: str = field(
        default="tribes", metadata=_doc("Cluster (channel) name, used in logs and thread names.")
    )
    membership: MembershipConfig = field(
        default_factory=MembershipConfig, metadata=_doc("Membership: multicast heartbeats or static members.")
    )
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig, metadata=_doc("The TCP listener."))
    sender: SenderConfig = field(default_factory=SenderConfig, metadata=_doc("The outgoing connection pool."))
    interceptors: tuple[InterceptorConfig, ...] = field(
        default_factory=_default_interceptors,
        metadata=_doc(
            "Interceptor stack, first = closest to the application (default: dispatch, failure_detector)."
        ),
    )
    send_options: str | int = field(
        default="use_ack",
        metadata=_doc(
            "Default send options: names (``async``, ``use_ack``, ``sync``, combinable) or Tomcat bits."
        ),
    )
    insecure: bool = field(
        default=False,
        metadata=_doc(
            "Without a secret: allow unencrypted traffic on non-loopback addresses (logs a warning); "
            "trusted networks only. Not needed with a secret."
        ),
    )
    secret: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "Shared cluster secret (≥ 16 bytes of UTF-8): encrypts and authenticates all traffic. "
            "None = the ``TRIBES_SECRET`` environment variable, if set (better than a secret in a file). "
            "Never shown in repr, logs or to_toml."
        ),
    )
    secondary_secrets: tuple[str, ...] = field(
        default=(),
        repr=False,
        metadata=_doc(
            "Older secrets still accepted (never used to send), for rotation without downtime; need "
            "``secret``. With ``secret`` unset: ``TRIBES_SECONDARY_SECRETS`` (comma-separated)."
        ),
    )
    replay_window_ms: int = field(
        default=10_000,
        metadata=_doc(
            "With a secret: messages whose timestamp is further than this from now (ms) are rejected as "
            "replays (1..3600000)."
        ),
    )
    replay_cache: int = field(
        default=16384,
        metadata=_doc(
            "With a secret: recent messages remembered per sender to reject replays (1024..10000000, "
            "rounded up to a power of two; one bit each); a message further behind the sender's newest "
            "is refused."
        ),
    )
    worker_threads: int = field(default=2, metadata=_doc("Threads of the core's I/O runtime (1..256)."))
    event_queue_size: int = field(
        default=65536, metadata=_doc("Capacity of the queue of events (membership, messages) to Python.")
    )
    route: str | None = field(
        default=None,
        metadata=_doc(
            "This member's route (Tomcat's ``jvmRoute``): new session ids end in ``.<route>`` so a load "
            "balancer can keep a user on one member. None: no route."
        ),
    )
    managers: Mapping[str, ManagerConfig] = field(
        default_factory=lambda: _FrozenOptions(),
        metadata=_doc(
            'Session managers by name (``[managers.<name>]`` tables, see ManagerConfig); ``"*"`` is the '
            "template for names not listed. Default: every name gets a DeltaManager with defaults."
        ),
    )
    unsupported: tuple[str, ...] = field(
        default=(),
        compare=False,
        metadata=_doc("Items of an imported Tomcat configuration that were ignored (``Element@attribute``)."),
    )

    def __post_init__(self) -> None:
        name = _check_str(self.name, "name")
        if not name.strip() or len(name) > 255 or not name.isprintable():
            raise ConfigError(f"must be 1..255 printable characters, got {name!r}", "name")
        _set(
            self, "membership", _section(MembershipConfig, self.membership, MembershipConfig(), "membership")
        )
        _set(self, "receiver", _section(ReceiverConfig, self.receiver, ReceiverConfig(), "receiver"))
        _set(self, "sender", _section(SenderConfig, self.sender, SenderConfig(), "sender"))
        items: object = self.interceptors
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
            raise ConfigError(f"must be a list of interceptors, got {_show(items)}", "interceptors")
        interceptors = tuple(_interceptor(item) for item in items)
        names = [i.name for i in interceptors]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise ConfigError(f"interceptor {n!r} appears twice", "interceptors")
        _set(self, "interceptors", interceptors)
        send_options_bits(self.send_options)
        if isinstance(self.send_options, str):
            _set(self, "send_options", self.send_options.strip())
        _check_bool(self.insecure, "insecure")
        if self.secret is not None:
            _check_secret(self.secret, "secret")
        _set(self, "secondary_secrets", _check_key_ring(self.secret, self.secondary_secrets))
        _check_int(self.replay_window_ms, "replay_window_ms", 1, 3_600_000)
        _check_int(self.replay_cache, "replay_cache", 1024, 10_000_000)
        _check_int(self.worker_threads, "worker_threads", 1, 256)
        _check_int(self.event_queue_size, "event_queue_size", 1)
        if self.route is not None:
            route = _check_str(self.route, "route")
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", route):
                raise ConfigError(f"must be 1..64 letters, digits, '-' or '_', got {route!r}", "route")
        managers: object = self.managers
        if not isinstance(managers, Mapping):
            raise ConfigError(
                f"must be a mapping of manager names to settings, got {_show(managers)}", "managers"
            )
        for key in managers:
            if not isinstance(key, str) or not 1 <= len(key.encode()) <= 255:
                raise ConfigError(f"manager names must be 1..255 bytes of text, got {key!r}", "managers")
        _set(
            self,
            "managers",
            _FrozenOptions({k: ManagerConfig.of(v, k) for k, v in managers.items()}),
        )
        unsupported: object = self.unsupported
        if isinstance(unsupported, str) or not isinstance(unsupported, Iterable):
            raise ConfigError(f"must be a list of strings, got {_show(unsupported)}", "unsupported")
        _set(self, "unsupported", tuple(str(item) for item in unsupported))
        for interceptor in interceptors:
            if (
                interceptor.name == "fragmentation"
                and interceptor.options["max_size"] >= self.receiver.max_frame
            ):
                raise ConfigError(
                    f"must be smaller than receiver.max_frame ({self.receiver.max_frame}), "
                    f"got {interceptor.options['max_size']}",
                    "interceptors.fragmentation.max_size",
                )

    # -- derived values -----------------------------------------------------------------------------------

    @property
    def send_option_bits(self) -> int:
        """``send_options`` as Tomcat's integer bits (``"use_ack,sync"`` → 6)."""
        return send_options_bits(self.send_options)

    def manager_config(self, name: str) -> ManagerConfig:
        """The settings of manager ``name``: its entry, else the ``"*"`` template, else the defaults."""
        return self.managers.get(name) or self.managers.get("*") or ManagerConfig()

    def interceptor(self, name: str) -> InterceptorConfig | None:
        """The interceptor called ``name``, or None."""
        return next((i for i in self.interceptors if i.name == name), None)

    def effective_secrets(self) -> tuple[str, ...]:
        """The key ring the core gets: the sending secret first, then the older, still accepted ones.

        ``secret`` and ``secondary_secrets`` when ``secret`` is set; otherwise the environment variables
        ``TRIBES_SECRET`` and ``TRIBES_SECONDARY_SECRETS`` (comma-separated; spaces around each secret and
        empty items are dropped; an empty ``TRIBES_SECRET`` counts as unset), read at each call and checked
        like the fields (:class:`ConfigError` naming ``secret`` or ``secondary_secrets[i]``, never showing a
        secret). Empty: no secret, no encryption.
        """
        if self.secret is not None:
            return (self.secret, *self.secondary_secrets)
        env_secret = os.environ.get(_ENV_SECRET) or None
        env_secondary = [s.strip() for s in os.environ.get(_ENV_SECONDARY_SECRETS, "").split(",")]
        if env_secret is not None:
            _check_secret(env_secret, "secret", f"from {_ENV_SECRET}: ")
        secondary = _check_key_ring(
            env_secret, [s for s in env_secondary if s], f"from {_ENV_SECONDARY_SECRETS}: "
        )
        return () if env_secret is None else (env_secret, *secondary)

    @property
    def secured(self) -> bool:
        """True when a secret is configured or set in ``TRIBES_SECRET``: traffic is encrypted."""
        return bool(self.effective_secrets())

    # -- constructors ---------------------------------------------------------------------------------------

    def with_overrides(self, **overrides: Any) -> ClusterConfig:
        """A copy with top-level fields replaced; a dict for a section merges over *this* config's section."""
        known = [n for n in _init_names(ClusterConfig) if n != "unsupported"]
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                raise ConfigError(f"unknown field{_suggest(key, known)}", key)
            if key in _SECTIONS and isinstance(value, Mapping):
                value = _section(_SECTIONS[key], value, getattr(self, key), key)
            changes[key] = value
        return dataclasses.replace(self, **changes)

    @classmethod
    def local(cls, **overrides: Any) -> ClusterConfig:
        """The loopback preset, for one machine: multicast bound to 127.0.0.1 with TTL 0, receiver on
        127.0.0.1, heartbeats every 100 ms, members dropped after 1000 ms of silence.

        ``overrides`` take the top-level fields; a dict for a section merges over the preset's section,
        so ``local(membership={"port": 45600})`` keeps the loopback bind, TTL and intervals.
        """
        preset = cls(
            membership=MembershipConfig(bind="127.0.0.1", ttl=0, frequency_ms=100, drop_time_ms=1000),
            receiver=ReceiverConfig(address="127.0.0.1"),
        )
        return preset.with_overrides(**overrides)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterConfig:
        """A config from a mapping shaped like the TOML file (see :meth:`from_file`); unknown keys raise."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"configuration must be a mapping, got {_show(data)}")
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(f"keys must be strings, got {_show(key)}")
        return cls().with_overrides(**data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> ClusterConfig:
        """A config from a TOML file (or a Tomcat XML file, if the name ends in ``.xml``).

        TOML layout: top-level keys are the top-level fields (``name``, ``send_options``, ``insecure``,
        ``secret``, ``secondary_secrets``, ``replay_window_ms``, ``replay_cache``, ``worker_threads``,
        ``event_queue_size``); tables ``[membership]``, ``[receiver]``, ``[sender]``;
        ``[[membership.static_members]]`` with ``host``, ``port``, ``unique_id``, ``domain``;
        ``[[interceptors]]`` with ``name = "…"`` and the options. ``overrides`` as in :meth:`with_overrides`.

        ``secret = "…"`` and ``secondary_secrets = ["…"]`` are accepted, but a secret is better kept out of
        files: leave ``secret`` unset and give it in the ``TRIBES_SECRET`` environment variable (older ones in
        ``TRIBES_SECONDARY_SECRETS``), or pass ``secret=…`` as an override. A file that holds a secret (or a
        ``tomcat_encrypt`` key) should be readable by the service user only.
        """
        path = Path(path)
        if path.suffix.lower() == ".xml":
            return cls.from_tomcat_xml(path, **overrides)
        raw = path.read_bytes()
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        return cls.from_dict(data).with_overrides(**overrides)

    @classmethod
    def from_tomcat_xml(cls, source: str | bytes | os.PathLike[str], **overrides: Any) -> ClusterConfig:
        """A config from Tomcat's ``<Cluster>`` element, given as a file path or as the XML itself (text
        starting with ``<``).

        The element may be the root or nested (``<Server><Service><Engine><Cluster>`` …). Every element and
        attribute is either mapped or listed in ``config.unsupported`` (``"Element@attribute"``, or
        ``"Element(className)"`` for a whole element; for ``<Interceptor>`` the element is named by its
        class's simple name) and logged once as a warning. Absent attributes keep tribes' defaults, except
        ``channelSendOptions``: Tomcat's default 8 (async). A Channel without any ``<Interceptor>`` gets
        Tomcat's defaults (dispatch, failure_detector). ``overrides`` (e.g. ``insecure=True``) apply last.
        XML given as ``bytes`` is parsed as a document; a missing file raises ``OSError``.

        An ``EncryptInterceptor`` with ``encryptionAlgorithm="AES/GCM/NoPadding"`` becomes ``tomcat_encrypt``
        (``encryptionKey`` → ``key``, ``replayWindowSize``/``replayWindowMessageCount`` →
        ``replay_window_count``, ``replayWindowTime`` → ``replay_window_ms``; ``providerName`` is reported).
        With any other algorithm — also when the attribute is absent: Tomcat then uses
        ``AES/CBC/PKCS5Padding`` — the interceptor is reported, skipped and a warning says why.
        """
        root = _parse_xml(source)
        clusters = [el for el in root.iter() if _local(el.tag) == "Cluster"]
        if not clusters:
            raise ConfigError("no <Cluster> element found", "Cluster")
        if len(clusters) > 1:
            raise ConfigError(
                f"found {len(clusters)} <Cluster> elements; give a document with exactly one", "Cluster"
            )
        reader = _TomcatXmlReader()
        data = reader.read_cluster(clusters[0])
        config = cls.from_dict(data)
        if reader.unsupported:
            config = dataclasses.replace(config, unsupported=tuple(reader.unsupported))
            _log.warning(
                "Tomcat cluster configuration: %d unsupported item(s) ignored: %s",
                len(reader.unsupported),
                ", ".join(reader.unsupported),
            )
        return config.with_overrides(**overrides)

    # -- security and the core ------------------------------------------------------------------------------

    def _resolve(self) -> _Resolved:
        address = self.receiver.address
        receiver = _resolve_auto_address() if address == _AUTO else str(ipaddress.ip_address(address))
        hosts = tuple(
            _resolve_host(m.host, m.port, f"membership.static_members[{i}].host")
            for i, m in enumerate(self.membership.static_members)
        )
        return _Resolved(bind=self.membership.effective_bind(), receiver=receiver, static_hosts=hosts)

    def check_security(self) -> None:
        """Without a secret, refuse non-loopback addresses unless ``insecure`` is set.

        With a secret (``secret``, or ``TRIBES_SECRET``; see :meth:`effective_secrets`) traffic is encrypted
        and authenticated, and any address is allowed, silently (``insecure`` is then irrelevant). Without
        one, checked are: the multicast interface (``membership.bind``; unset = loopback), the receiver
        address (``"auto"`` resolved first) and the static members' hosts; raises :class:`ConfigError`
        naming the first offending field, or, with ``insecure=True``, logs one warning instead. Secrets never
        appear in the messages.
        """
        self._check_security(self._resolve(), warn=True, secured=self.secured)

    def _check_security(self, resolved: _Resolved, warn: bool, secured: bool) -> None:
        for name, manager in self.managers.items():
            if manager.serializer == "pickle" and not secured:
                raise ConfigError(
                    "pickle is refused without a cluster secret: unpickling runs code chosen by whoever can "
                    f"send to the cluster. Set a secret ({_ENV_SECRET} or `secret`), or use the default "
                    "msgpack serializer",
                    f"managers.{name}.serializer",
                )
        if secured:
            return
        exposed: list[tuple[str, str]] = []
        if not self.membership.is_static and not _is_loopback(resolved.bind):
            exposed.append(("membership.bind", resolved.bind))
        if not _is_loopback(resolved.receiver):
            shown = resolved.receiver
            if self.receiver.address == _AUTO:
                shown = f"{resolved.receiver} (from 'auto')"
            exposed.append(("receiver.address", shown))
        for i, host in enumerate(resolved.static_hosts):
            if not _is_loopback(host):
                exposed.append((f"membership.static_members[{i}].host", host))
        if not exposed:
            return
        listing = ", ".join(f"{fld}={addr}" for fld, addr in exposed)
        if not self.insecure:
            raise ConfigError(
                f"{exposed[0][1]} is not a loopback address ({listing}). Without a shared secret, cluster "
                f"traffic is not encrypted: set one (the {_ENV_SECRET} environment variable, or `secret` in "
                "the configuration; at least 16 bytes, the same on every member), or, only on a trusted "
                "network (LAN, VPN, IPsec), allow unencrypted traffic with `insecure = true` "
                "(ClusterConfig(insecure=True)).",
                exposed[0][0],
            )
        if not warn:
            return
        if self.interceptor("tomcat_encrypt") is not None:
            _log.warning(
                "insecure = true without a cluster secret on non-loopback addresses (%s): membership is "
                "unauthenticated (anyone on that network can join) and messages are protected by "
                "tomcat_encrypt only",
                listing,
            )
        else:
            _log.warning(
                "insecure = true: unencrypted cluster traffic on non-loopback addresses (%s); anyone on that "
                "network can read and inject session data (set %s to encrypt and authenticate it)",
                listing,
                _ENV_SECRET,
            )

    def to_core_json(self, *, check: bool = True) -> str:
        """The JSON the Rust core takes (``tribes._core.CoreChannel``), shaped as in docs/internals.md.

        Every field is present; ``membership.bind`` and ``receiver.address`` are resolved IP literals,
        static members' host names are resolved, send options are an int, bytes are lists of ints and
        interceptor options have their defaults filled in; ``security.secrets`` is
        :meth:`effective_secrets` (the environment is read now). With ``check`` (the default) it refuses,
        like :meth:`check_security`, non-loopback addresses without a secret or ``insecure`` (on the same
        resolved addresses), but does not log the warning again: callers run :meth:`check_security` once
        for that. The result holds the secrets in clear: hand it to the core, never log it.
        """
        resolved = self._resolve()
        secrets = self.effective_secrets()
        if check:
            self._check_security(resolved, warn=False, secured=bool(secrets))
        m = self.membership
        doc: dict[str, Any] = {
            "name": self.name,
            "send_options": self.send_option_bits,
            "insecure": self.insecure,
            "security": {
                "secrets": list(secrets),
                "replay_window_ms": self.replay_window_ms,
                "replay_cache": self.replay_cache,
            },
            "worker_threads": self.worker_threads,
            "event_queue_size": self.event_queue_size,
            "membership": {
                "address": str(ipaddress.ip_address(m.address)),
                "port": m.port,
                "frequency_ms": m.frequency_ms,
                "drop_time_ms": m.drop_time_ms,
                "bind": resolved.bind,
                "ttl": m.ttl,
                "domain": list(m.domain),
                "payload": list(m.payload),
                "local_loopback_disabled": m.local_loopback_disabled,
                "static_members": [
                    {
                        "host": host,
                        "port": s.port,
                        "unique_id": None if s.unique_id is None else list(s.unique_id),
                        "domain": list(s.domain),
                    }
                    for s, host in zip(m.static_members, resolved.static_hosts, strict=True)
                ],
                "max_members": m.max_members,
            },
            "receiver": {
                "address": resolved.receiver,
                "port": self.receiver.port,
                "auto_bind": self.receiver.auto_bind,
                "max_frame": self.receiver.max_frame,
                "max_connections": self.receiver.max_connections,
                "idle_timeout_ms": self.receiver.idle_timeout_ms,
            },
            "sender": {
                "timeout_ms": self.sender.timeout_ms,
                "connect_timeout_ms": self.sender.connect_timeout_ms,
                "max_retries": self.sender.max_retries,
                "keepalive": self.sender.keepalive,
            },
            "interceptors": [{"name": i.name, "options": self._core_options(i)} for i in self.interceptors],
        }
        return json.dumps(doc)

    def _core_options(self, interceptor: InterceptorConfig) -> dict[str, Any]:
        options = dict(interceptor.options)
        if interceptor.name == "domain_filter" and "domain" not in options:
            options["domain"] = self.membership.domain
        return {k: list(v) if isinstance(v, bytes) else v for k, v in options.items()}

    # -- export ---------------------------------------------------------------------------------------------

    def to_dict(self, *, include_secrets: bool = False) -> dict[str, Any]:
        """The configuration as plain data, shaped like the TOML file.

        Secrets are left out unless ``include_secrets=True``: ``secret``, ``secondary_secrets`` and the
        ``key`` of a ``tomcat_encrypt`` interceptor. So ``from_dict(c.to_dict(include_secrets=True)) == c``
        always, and ``from_dict(c.to_dict()) == c`` for a config without secrets; without them, a config
        that had a ``secret`` reads back as one that takes it from ``TRIBES_SECRET``, and one with
        ``tomcat_encrypt`` needs its key added back before it loads.
        """

        def plain(obj: object) -> dict[str, Any]:
            return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}  # type: ignore[arg-type]

        membership = plain(self.membership)
        membership["static_members"] = [plain(s) for s in self.membership.static_members]
        data: dict[str, Any] = {
            "name": self.name,
            "send_options": self.send_options,
            "insecure": self.insecure,
        }
        if include_secrets:
            data["secret"] = self.secret
            data["secondary_secrets"] = list(self.secondary_secrets)
        data |= {
            "replay_window_ms": self.replay_window_ms,
            "replay_cache": self.replay_cache,
            "worker_threads": self.worker_threads,
            "event_queue_size": self.event_queue_size,
            "route": self.route,
            "membership": membership,
            "receiver": plain(self.receiver),
            "sender": plain(self.sender),
            "managers": {name: m.to_dict() for name, m in self.managers.items()},
            "interceptors": [
                {
                    "name": i.name,
                    **{k: v for k, v in i.options.items() if include_secrets or k not in _SECRET_OPTIONS},
                }
                for i in self.interceptors
            ],
        }
        return data

    def to_toml(self, *, include_secrets: bool = False) -> str:
        """The configuration as a TOML document that :meth:`from_file` reads back to an equal config.

        Like :meth:`to_dict`, it leaves secrets out unless ``include_secrets=True`` (then the document holds
        them in clear: keep the file private).
        """
        data = self.to_dict(include_secrets=include_secrets)
        lines: list[str] = []
        sections = ("membership", "receiver", "sender", "interceptors", "managers")
        for key, value in data.items():
            if key not in sections and value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        if not data["interceptors"]:
            lines.append("interceptors = []")
        for key in ("membership", "receiver", "sender"):
            lines += ["", f"[{key}]"]
            for name, value in data[key].items():
                if name != "static_members" and value is not None:
                    lines.append(f"{name} = {_toml_value(value)}")
        for member in data["membership"]["static_members"]:
            lines += ["", "[[membership.static_members]]"]
            lines += [
                f"{n} = {_toml_value(v, text=n != 'unique_id')}" for n, v in member.items() if v is not None
            ]
        for name, manager in data["managers"].items():
            lines += ["", f"[managers.{_toml_string(name)}]"]
            lines += [f"{n} = {_toml_value(v)}" for n, v in manager.items() if v is not None]
        for interceptor in data["interceptors"]:
            lines += ["", "[[interceptors]]"]
            lines += [f"{n} = {_toml_value(v)}" for n, v in interceptor.items()]
        return "\n".join(lines) + "\n"


def _resolve_auto_address() -> str:
    """Tomcat's ``auto``: this host's address by name, 127.0.0.1 when the name does not resolve."""
    try:
        return str(ipaddress.ip_address(socket.gethostbyname(socket.gethostname())))
    except (OSError, ValueError):
        return "127.0.0.1"


def _resolve_host(host: str, port: int, fld: str) -> str:
    """An IP literal for a static member's host (IPv4 preferred for names)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc}", fld) from None
    if not infos:
        raise ConfigError(f"cannot resolve {host!r}: no addresses", fld)
    ipv4 = [info for info in infos if info[0] == socket.AF_INET]
    return str(ipaddress.ip_address(str((ipv4 or infos)[0][4][0])))


def _toml_value(value: object, text: bool = True) -> str:
    """A TOML value; bytes as a string if they read back unchanged (and ``text``), else as a list of ints."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item, text) for item in value) + "]"
    if isinstance(value, bytes):
        decoded = value.decode("latin-1")
        if text and decoded.isascii() and decoded.isprintable() and not decoded.lstrip().startswith("{"):
            return _toml_string(decoded)
        return "[" + ", ".join(str(b) for b in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# --------------------------------------------------------------------------------------------------------
# Tomcat XML


def _parse_xml(source: str | bytes | os.PathLike[str]) -> ET.Element:
    try:
        if isinstance(source, bytes):
            return ET.fromstring(source)
        if isinstance(source, str) and source.lstrip("\ufeff \t\r\n").startswith("<"):
            return ET.fromstring(source)
        return ET.parse(os.fspath(source)).getroot()
    except ET.ParseError as exc:
        where = "XML" if isinstance(source, str | bytes) else os.fspath(source)
        raise ConfigError(f"{where}: invalid XML: {exc}") from None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class _Unsupported(Exception):
    """Raised by an XML converter for a value tribes cannot express; the attribute is then reported."""


def _x_str(text: str) -> str:
    return text.strip()


def _x_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _x_bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return value == "true"


def _x_ttl(text: str) -> int | None:
    value = _x_int(text)
    return None if value < 0 else value  # Tomcat: -1 = unset


def _x_auto_bind(text: str) -> int:
    return max(_x_int(text), 1)  # Tomcat turns autoBind <= 0 into 1


def _x_seconds_to_ms(text: str) -> int:
    value = _x_int(text)
    if value < 0:
        raise _Unsupported  # Tomcat: negative = never remove suspects
    return value * 1000


def _x_send_options(text: str) -> int | str:
    return text.strip()


_Converter = Callable[[str], Any]
_AttrMap = dict[str, tuple[str, _Converter]]

_HA = "org.apache.catalina.ha."
_TRIBES = "org.apache.catalina.tribes."
_TI = _TRIBES + "group.interceptors."

_XML_CLUSTER_CLASSES = {_HA + "tcp.SimpleTcpCluster"}
_XML_CLUSTER_ATTRS: _AttrMap = {
    "channelSendOptions": ("send_options", _x_send_options),
    "clusterName": ("name", _x_str),
}
_XML_CHANNEL_CLASSES = {_TRIBES + "group.GroupChannel"}
_XML_MANAGER_CLASSES = {_HA + "session.DeltaManager": "delta", _HA + "session.BackupManager": "backup"}
_XML_MANAGER_ATTRS: _AttrMap = {
    "maxInactiveInterval": ("max_inactive", _x_int),
    "maxActiveSessions": ("max_active", _x_int),
    "stateTransferTimeout": ("state_transfer_timeout", _x_int),
    "sendAllSessionsSize": ("state_transfer_batch", _x_int),
    "sessionAttributeNameFilter": ("attribute_filter", _x_str),
    "notifyListenersOnReplication": ("notify_listeners_on_replication", _x_bool),
    "rpcTimeout": ("rpc_timeout", lambda text: _x_int(text) / 1000.0),
    "mapSendOptions": ("send_options", _x_send_options),
}
_XML_MCAST_CLASSES = {_TRIBES + "membership.McastService"}
_XML_MCAST_ATTRS: _AttrMap = {
    "address": ("address", _x_str),
    "port": ("port", _x_int),
    "frequency": ("frequency_ms", _x_int),
    "dropTime": ("drop_time_ms", _x_int),
    "bind": ("bind", _x_str),
    "mcastBindAddress": ("bind", _x_str),
    "ttl": ("ttl", _x_ttl),
    "domain": ("domain", _x_str),
    "localLoopbackDisabled": ("local_loopback_disabled", _x_bool),
}
_XML_STATIC_MEMBERSHIP_CLASSES = {_TRIBES + "membership.StaticMembershipService"}
_XML_STATIC_MEMBER_CLASSES = {_TRIBES + "membership.StaticMember"}
_XML_MEMBER_ATTRS: _AttrMap = {
    "host": ("host", _x_str),
    "port": ("port", _x_int),
    "uniqueId": ("unique_id", _x_str),
    "domain": ("domain", _x_str),
}
_XML_RECEIVER_CLASSES = {_TRIBES + "transport.nio.NioReceiver"}
_XML_RECEIVER_ATTRS: _AttrMap = {
    "address": ("address", _x_str),
    "port": ("port", _x_int),
    "autoBind": ("auto_bind", _x_auto_bind),
}
_XML_SENDER_CLASSES = {_TRIBES + "transport.ReplicationTransmitter"}
_XML_TRANSPORT_CLASSES = {_TRIBES + "transport.nio.PooledParallelSender"}
_XML_SENDER_ATTRS: _AttrMap = {
    "timeout": ("timeout_ms", _x_int),
    "maxRetryAttempts": ("max_retries", _x_int),
}
_XML_STATIC_MEMBERSHIP_INTERCEPTOR = _TI + "StaticMembershipInterceptor"
_XML_ENCRYPT_INTERCEPTOR = _TI + "EncryptInterceptor"
# encryptionAlgorithm is checked separately (only AES/GCM/NoPadding maps); providerName is reported.
_XML_ENCRYPT_ATTRS: _AttrMap = {
    "encryptionKey": ("key", _x_str),
    "encryptionKeyString": ("key", _x_str),
    "replayWindowTime": ("replay_window_ms", _x_int),
    "replayWindowMessageCount": ("replay_window_count", _x_int),
    "replayWindowSize": ("replay_window_count", _x_int),
}
# Tomcat interceptor class → (tribes name, attribute → (option, converter)). Unlisted attributes are reported.
_XML_INTERCEPTORS: dict[str, tuple[str, _AttrMap]] = {
    _TI + "TcpFailureDetector": (
        "failure_detector",
        {
            "connectTimeout": ("connect_timeout_ms", _x_int),
            "removeSuspectsTimeout": ("remove_suspects_timeout_ms", _x_seconds_to_ms),
        },
    ),
    _TI + "MessageDispatchInterceptor": ("dispatch", {"maxQueueSize": ("max_queue_bytes", _x_int)}),
    _TI + "MessageDispatch15Interceptor": ("dispatch", {"maxQueueSize": ("max_queue_bytes", _x_int)}),
    _TI + "OrderInterceptor": (
        "order",
        {"expire": ("expire_ms", _x_int), "maxQueue": ("max_queue", _x_int)},
    ),
    _TI + "FragmentationInterceptor": (
        "fragmentation",
        {"maxSize": ("max_size", _x_int), "expire": ("expire_ms", _x_int)},
    ),
    _TI + "GzipInterceptor": ("compression", {"compressionMinSize": ("min_size", _x_int)}),
    _TI + "ThroughputInterceptor": ("throughput", {"interval": ("interval", _x_int)}),
    _TI + "DomainFilterInterceptor": ("domain_filter", {"domain": ("domain", _x_str)}),
}


class _TomcatXmlReader:
    """Walks a ``<Cluster>`` element into a ``from_dict`` mapping, collecting what it cannot map."""

    def __init__(self) -> None:
        self.unsupported: list[str] = []
        self.data: dict[str, Any] = {"send_options": 8}  # SimpleTcpCluster's default: async
        self.membership: dict[str, Any] = {}
        self.receiver: dict[str, Any] = {}
        self.sender: dict[str, Any] = {}
        self.static_members: list[dict[str, Any]] = []
        self.interceptors: list[dict[str, Any]] | None = None  # None = no <Interceptor> at all

    # reporting
    def report(self, item: str) -> None:
        if item not in self.unsupported:
            self.unsupported.append(item)

    def report_element(self, el: ET.Element) -> None:
        cls = el.get("className")
        self.report(f"{_local(el.tag)}({cls})" if cls else _local(el.tag))

    def attributes(
        self,
        el: ET.Element,
        label: str,
        mapping: _AttrMap,
        target: dict[str, Any],
        section: str,
        handled: Iterable[str] = (),
    ) -> None:
        """Map ``el``'s attributes through ``mapping`` into ``target``; report the others (except the
        ``handled`` ones, which the caller took care of)."""
        for attr, text in el.attrib.items():
            attr = _local(attr)
            if attr == "className" or attr in handled:
                continue
            if attr not in mapping:
                self.report(f"{label}@{attr}")
                continue
            key, convert = mapping[attr]
            try:
                target[key] = convert(text)
            except _Unsupported:
                self.report(f"{label}@{attr}")
            except ValueError as exc:
                fld = f"{section}.{key}" if section else key
                raise ConfigError(f"{exc} (from {label}@{attr})", fld) from None

    def read_manager(self, el: ET.Element) -> None:
        """``<Manager>`` inside ``<Cluster>``, Tomcat's template for every application: ``managers["*"]``."""
        cls = el.get("className")
        kind = _XML_MANAGER_CLASSES.get(cls or "")
        if kind is None:
            self.report_element(el)
            return
        manager: dict[str, Any] = {"kind": kind}
        # tribes' behaviour is Tomcat's default (replicas survive a member's shutdown).
        handled = ["expireSessionsOnShutdown"] if el.get("expireSessionsOnShutdown") == "false" else []
        self.attributes(el, "Manager", _XML_MANAGER_ATTRS, manager, 'managers."*"', handled)
        send_options = manager.pop("send_options", None)
        if send_options is not None:
            bits = send_options_bits(send_options, 'managers."*".send_mode')
            manager["send_mode"] = "async" if bits & 8 else ("sync" if bits & 4 else "ack")
        self.data["managers"] = {"*": manager}

    def known_class(self, el: ET.Element, classes: set[str], default: bool = True) -> bool:
        """True if the element's className is one tribes maps (a missing className means the default)."""
        cls = el.get("className")
        if (cls is None and default) or cls in classes:
            return True
        self.report_element(el)
        return False

    # elements
    def read_cluster(self, el: ET.Element) -> dict[str, Any]:
        self.known_class(
            el, _XML_CLUSTER_CLASSES
        )  # a custom Cluster class is reported; its channel still read
        self.attributes(el, "Cluster", _XML_CLUSTER_ATTRS, self.data, "")
        for child in el:
            if _local(child.tag) == "Channel":
                self.read_channel(child)
            elif _local(child.tag) == "Manager":
                self.read_manager(child)
            else:  # Valve, Deployer, ClusterListener, …: later issues
                self.report_element(child)
        if self.membership or self.static_members:
            self.data["membership"] = dict(self.membership)
            if self.static_members:
                self.data["membership"]["static_members"] = self.static_members
        if self.receiver:
            self.data["receiver"] = self.receiver
        if self.sender:
            self.data["sender"] = self.sender
        if self.interceptors is not None:
            self.data["interceptors"] = self.interceptors
        return self.data

    def read_channel(self, el: ET.Element) -> None:
        self.known_class(el, _XML_CHANNEL_CLASSES)
        self.attributes(el, "Channel", {}, {}, "")
        for child in el:
            tag = _local(child.tag)
            if tag == "Membership":
                self.read_membership(child)
            elif tag == "Receiver":
                if self.known_class(child, _XML_RECEIVER_CLASSES):
                    self.attributes(child, "Receiver", _XML_RECEIVER_ATTRS, self.receiver, "receiver")
                    self.report_children(child)
            elif tag == "Sender":
                self.read_sender(child)
            elif tag == "Interceptor":
                self.read_interceptor(child)
            else:
                self.report_element(child)

    def read_membership(self, el: ET.Element) -> None:
        cls = el.get("className")
        if cls is None or cls in _XML_MCAST_CLASSES:
            self.attributes(el, "Membership", _XML_MCAST_ATTRS, self.membership, "membership")
            self.report_children(el)
        elif cls in _XML_STATIC_MEMBERSHIP_CLASSES:
            self.attributes(el, "Membership", {}, {}, "membership")
            self.read_members(el)
        else:
            self.report_element(el)

    def read_members(self, el: ET.Element) -> None:
        for child in el:
            if _local(child.tag) == "Member" and self.known_class(child, _XML_STATIC_MEMBER_CLASSES):
                index = len(self.static_members)
                member: dict[str, Any] = {}
                self.attributes(
                    child, "Member", _XML_MEMBER_ATTRS, member, f"membership.static_members[{index}]"
                )
                self.static_members.append(member)
            elif _local(child.tag) != "Member":
                self.report_element(child)  # LocalMember, …

    def read_sender(self, el: ET.Element) -> None:
        if not self.known_class(el, _XML_SENDER_CLASSES):
            return
        self.attributes(el, "Sender", _XML_SENDER_ATTRS, self.sender, "sender")
        for child in el:
            if _local(child.tag) == "Transport" and self.known_class(child, _XML_TRANSPORT_CLASSES):
                self.attributes(child, "Transport", _XML_SENDER_ATTRS, self.sender, "sender")
                self.report_children(child)
            elif _local(child.tag) != "Transport":
                self.report_element(child)

    def read_interceptor(self, el: ET.Element) -> None:
        if self.interceptors is None:
            self.interceptors = []
        cls = el.get("className") or ""
        simple = cls.rsplit(".", 1)[-1] or "Interceptor"
        if cls == _XML_STATIC_MEMBERSHIP_INTERCEPTOR:
            self.attributes(el, simple, {}, {}, "")
            self.read_members(el)
            return
        if cls == _XML_ENCRYPT_INTERCEPTOR:
            encrypt = self.read_encrypt_interceptor(el, simple)
            if encrypt is not None:
                self.interceptors.append(encrypt)
            return
        if cls not in _XML_INTERCEPTORS:
            self.report_element(el)
            return
        name, mapping = _XML_INTERCEPTORS[cls]
        options: dict[str, Any] = {}
        self.attributes(el, simple, mapping, options, f"interceptors.{name}")
        self.report_children(el)
        self.interceptors.append({"name": name, **options})

    def read_encrypt_interceptor(self, el: ET.Element, simple: str) -> dict[str, Any] | None:
        """Tomcat's EncryptInterceptor → ``tomcat_encrypt``, if it uses AES/GCM/NoPadding.

        Any other algorithm — including an absent ``encryptionAlgorithm``, which in Tomcat means
        ``AES/CBC/PKCS5Padding`` — cannot be spoken: the whole interceptor is reported and skipped, with a
        warning. The key never appears in a report, warning or error.
        """
        given = el.get("encryptionAlgorithm")
        algorithm = _TOMCAT_DEFAULT_ALGORITHM if given is None else given.strip()
        if algorithm.upper() != _TOMCAT_GCM.upper():
            self.report_element(el)
            _log.warning(
                "Tomcat %s skipped: encryptionAlgorithm %r%s is not supported; tribes' tomcat_encrypt speaks "
                '%s only (set encryptionAlgorithm="%s" on the Tomcat members)',
                simple,
                algorithm,
                " (Tomcat's default when the attribute is absent)" if given is None else "",
                _TOMCAT_GCM,
                _TOMCAT_GCM,
            )
            return None
        options: dict[str, Any] = {}
        self.attributes(
            el, simple, _XML_ENCRYPT_ATTRS, options, "interceptors.tomcat_encrypt", ("encryptionAlgorithm",)
        )
        self.report_children(el)
        return {"name": "tomcat_encrypt", **options}

    def report_children(self, el: ET.Element) -> None:
        for child in el:
            self.report_element(child)


# --------------------------------------------------------------------------------------------------------
# Reference


def config_reference() -> str:
    """A Markdown reference of every configuration field and interceptor option, from their docstrings."""
    out: list[str] = []
    for title, cls in (
        ("ClusterConfig (top level)", ClusterConfig),
        ("[membership] — MembershipConfig", MembershipConfig),
        ("[[membership.static_members]] — StaticMember", StaticMember),
        ("[receiver] — ReceiverConfig", ReceiverConfig),
        ("[sender] — SenderConfig", SenderConfig),
        ("[managers.<name>] — ManagerConfig", ManagerConfig),
    ):
        out += [f"### {title}", "", "| Field | Default | Description |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            if f.name == "unsupported":
                continue
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.name == "managers":
                default = "{}"
            elif f.default_factory is not dataclasses.MISSING and f.name in ("interceptors",):
                default = ", ".join(i.name for i in _default_interceptors())
            elif f.default_factory is not dataclasses.MISSING:
                default = "(section)"
            else:
                default = "required"
            out.append(f"| `{f.name}` | `{default}` | {f.metadata.get('doc', '')} |")
        out.append("")
    out += ["### [[interceptors]]", "", "| Name | Option | Default | Description |", "|---|---|---|---|"]
    for name, spec in _INTERCEPTORS.items():
        out.append(f"| `{name}` | | | {spec.doc} |")
        for key, opt in spec.options.items():
            default = "required" if opt.required else repr(opt.default)
            out.append(f"| | `{key}` | `{default}` | {opt.doc} |")
    return "\n".join(out) + "\n"
