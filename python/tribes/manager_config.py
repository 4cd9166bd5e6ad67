"""`ManagerConfig`: the settings of one session manager (Tomcat's ``<Manager>`` element).

``ClusterConfig.managers`` maps manager names to these; the entry ``"*"`` (if any) is the template for
names that are not listed, as Tomcat's ``<Manager>`` inside ``<Cluster>`` is for every web application.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._checks import check_bool, check_int, doc
from .errors import ConfigError

__all__ = ["MANAGER_KINDS", "SEND_MODES", "ManagerConfig"]

MANAGER_KINDS = ("delta", "backup")
"""``delta``: every member holds every session (Tomcat DeltaManager); ``backup``: a primary and one
backup, proxies elsewhere (Tomcat BackupManager)."""

SEND_MODES = {"async": 8, "ack": 2, "sync": 6}
"""Send mode → Tomcat channel send options: ``async`` (queue and return), ``ack`` (every target
received it), ``sync`` (every target applied it)."""

SERIALIZERS = ("msgpack", "pickle")


def _seconds(value: object, fld: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ConfigError(f"must be a number of seconds in {lo:g}..{hi:g}, got {value!r}", fld)
    return float(value)


def _choice(value: object, fld: str, choices: tuple[str, ...] | Mapping[str, Any]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise ConfigError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}", fld)
    return value.strip().lower()


@dataclass(frozen=True, kw_only=True)
class ManagerConfig:
    """How one session manager replicates (Tomcat ``DeltaManager`` / ``BackupManager`` attributes)."""

    kind: str = field(
        default="delta",
        metadata=doc("``delta`` (every member holds every session) or ``backup`` (primary + one backup)."),
    )
    send_mode: str = field(
        default="ack",
        metadata=doc(
            "``async`` (queue and return), ``ack`` (commit returns once every target received the change) "
            "or ``sync`` (… applied it). Tomcat's ``channelSendOptions``/``mapSendOptions``."
        ),
    )
    max_inactive: int = field(
        default=1800,
        metadata=doc("Seconds of inactivity after which a session expires (≤ 0: never); Tomcat's default."),
    )
    max_active: int = field(
        default=-1,
        metadata=doc("Most sessions held by a member (-1: unlimited); beyond it ``create()`` raises."),
    )
    attribute_filter: str | None = field(
        default=None,
        metadata=doc(
            "Regex of the attribute names that replicate (full match); others stay on the member that set "
            "them. None: all (Tomcat's ``sessionAttributeNameFilter``)."
        ),
    )
    notify_listeners_on_replication: bool = field(
        default=True,
        metadata=doc("Call session and attribute listeners for changes that arrive from other members."),
    )
    serializer: str = field(
        default="msgpack",
        metadata=doc(
            "``msgpack`` (the safe codec) or ``pickle`` for other values too; pickle needs a cluster secret, "
            "because unpickling runs code chosen by whoever can send to the cluster."
        ),
    )
    state_transfer_timeout: float = field(
        default=60.0,
        metadata=doc("Seconds a starting member waits for the sessions of the others (Tomcat's default)."),
    )
    state_transfer_batch: int = field(
        default=1000,
        metadata=doc("Sessions per state-transfer message (Tomcat ``sendAllSessionsSize``)."),
    )
    rpc_timeout: float = field(
        default=15.0,
        metadata=doc("BackupManager: seconds to wait when fetching a session from another member."),
    )

    def __post_init__(self) -> None:
        _set = object.__setattr__
        _set(self, "kind", _choice(self.kind, "kind", MANAGER_KINDS))
        _set(self, "send_mode", _choice(self.send_mode, "send_mode", SEND_MODES))
        check_int(self.max_inactive, "max_inactive", -(2**31), 2**31 - 1)
        check_int(self.max_active, "max_active", -1, 2**62)
        if self.attribute_filter is not None:
            if not isinstance(self.attribute_filter, str):
                raise ConfigError(
                    f"must be a regex string or None, got {self.attribute_filter!r}", "attribute_filter"
                )
            try:
                re.compile(self.attribute_filter)
            except re.error as exc:
                raise ConfigError(f"invalid regex: {exc}", "attribute_filter") from None
        check_bool(self.notify_listeners_on_replication, "notify_listeners_on_replication")
        _set(self, "serializer", _choice(self.serializer, "serializer", SERIALIZERS))
        _set(
            self,
            "state_transfer_timeout",
            _seconds(self.state_transfer_timeout, "state_transfer_timeout", 0, 86400),
        )
        check_int(self.state_transfer_batch, "state_transfer_batch", 1, 1_000_000)
        _set(self, "rpc_timeout", _seconds(self.rpc_timeout, "rpc_timeout", 0.001, 3600))

    @property
    def send_options(self) -> int:
        """The Tomcat send option bits of ``send_mode``."""
        return SEND_MODES[self.send_mode]

    def replicates(self, name: str) -> bool:
        """True when attribute ``name`` replicates under ``attribute_filter``."""
        return self.attribute_filter is None or re.fullmatch(self.attribute_filter, name) is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain data, shaped like a ``[managers.<name>]`` TOML table."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def of(cls, value: object, name: str) -> ManagerConfig:
        """A ManagerConfig from an instance or a mapping; errors name ``managers.<name>.<field>``."""
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"must be a ManagerConfig or a mapping, got {value!r}", f"managers.{name}")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in value:
            if key not in known:
                raise ConfigError(f"unknown field (known: {', '.join(known)})", f"managers.{name}.{key}")
        try:
            return cls(**value)
        except ConfigError as exc:
            raise ConfigError(exc.reason, f"managers.{name}.{exc.field}") from None
