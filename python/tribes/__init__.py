"""tribes: Tomcat-style cluster session replication for Python web applications.

Members find each other by multicast heartbeats (or a static list), and exchange messages over TCP
through a Rust core that speaks Apache Tribes' wire format. Quick start::

    import tribes
    with tribes.Cluster(tribes.ClusterConfig.local()) as cluster:
        cluster.add_message_listener(lambda member, data: print(member, data))
        cluster.send(b"hello")          # to every other member, waiting for their acks
        shop = cluster.manager("shop")  # a DeltaManager: every member holds every session
        s = shop.create()
        s["cart"] = ["apple"]
        shop.commit(s)                  # replicated to every member before this returns
"""

from __future__ import annotations

import logging

from . import errors
from ._core import __version__
from .cluster import Cluster, Member
from .config import (
    ClusterConfig,
    InterceptorConfig,
    MembershipConfig,
    ReceiverConfig,
    SenderConfig,
    StaticMember,
)
from .errors import (
    ChannelError,
    ConfigError,
    NotStartedError,
    ProtocolError,
    SessionError,
    TooManySessionsError,
    TribesError,
)
from .manager_config import ManagerConfig
from .managers import BackupManager, DeltaManager, SessionManager
from .session import Session

logging.getLogger("tribes").addHandler(logging.NullHandler())

__all__ = [
    "BackupManager",
    "ChannelError",
    "Cluster",
    "ClusterConfig",
    "ConfigError",
    "DeltaManager",
    "InterceptorConfig",
    "ManagerConfig",
    "Member",
    "MembershipConfig",
    "NotStartedError",
    "ProtocolError",
    "ReceiverConfig",
    "SenderConfig",
    "Session",
    "SessionError",
    "SessionManager",
    "StaticMember",
    "TooManySessionsError",
    "TribesError",
    "__version__",
    "errors",
]
