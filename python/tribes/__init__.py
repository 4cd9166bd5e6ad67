"""tribes: Tomcat-style cluster session replication for Python web applications.

Members find each other by multicast heartbeats (or a static list), and exchange messages over TCP
through a Rust core that speaks Apache Tribes' wire format. Quick start::

    import tribes
    with tribes.Cluster(tribes.ClusterConfig.local()) as cluster:
        cluster.add_message_listener(lambda member, data: print(member, data))
        cluster.send(b"hello")          # to every other member, waiting for their acks
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
from .errors import ChannelError, ConfigError, NotStartedError, ProtocolError, TribesError

logging.getLogger("tribes").addHandler(logging.NullHandler())

__all__ = [
    "ChannelError",
    "Cluster",
    "ClusterConfig",
    "ConfigError",
    "InterceptorConfig",
    "Member",
    "MembershipConfig",
    "NotStartedError",
    "ProtocolError",
    "ReceiverConfig",
    "SenderConfig",
    "StaticMember",
    "TribesError",
    "__version__",
    "errors",
]
