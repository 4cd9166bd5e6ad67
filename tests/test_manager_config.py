"""`ClusterConfig.managers` and `ManagerConfig`: defaults, validation naming the field, TOML and Tomcat
XML."""

from __future__ import annotations

from pathlib import Path

import pytest

import tribes
from tribes import ManagerConfig


def test_defaults_are_tomcats() -> None:
    m = ManagerConfig()
    assert (m.kind, m.send_mode, m.max_inactive, m.max_active) == ("delta", "ack", 1800, -1)
    assert (m.state_transfer_timeout, m.state_transfer_batch, m.rpc_timeout) == (60.0, 1000, 15.0)
    assert m.notify_listeners_on_replication and m.attribute_filter is None and m.serializer == "msgpack"
    assert m.send_options == 2  # use_ack


def test_lookup_uses_the_template_then_the_defaults() -> None:
    cfg = tribes.ClusterConfig(managers={"*": {"kind": "backup"}, "shop": {"max_inactive": 60}})
    assert cfg.manager_config("shop").max_inactive == 60 and cfg.manager_config("shop").kind == "delta"
    assert cfg.manager_config("other").kind == "backup"
    assert tribes.ClusterConfig().manager_config("any") == ManagerConfig()


@pytest.mark.parametrize(
    ("managers", "field"),
    [
        ({"shop": {"kind": "replicated"}}, "managers.shop.kind"),
        ({"shop": {"send_mode": "fast"}}, "managers.shop.send_mode"),
        ({"shop": {"max_active": -2}}, "managers.shop.max_active"),
        ({"shop": {"attribute_filter": "("}}, "managers.shop.attribute_filter"),
        ({"shop": {"serializer": "json"}}, "managers.shop.serializer"),
        ({"shop": {"state_transfer_batch": 0}}, "managers.shop.state_transfer_batch"),
        ({"shop": {"state_transfer_timeout": -1}}, "managers.shop.state_transfer_timeout"),
        ({"shop": {"colour": "red"}}, "managers.shop.colour"),
        ({"shop": 3}, "managers.shop"),
        ({"": {}}, "managers"),
        ([("shop", {})], "managers"),
    ],
)
def test_bad_values_name_the_field(managers: object, field: str) -> None:
    with pytest.raises(tribes.ConfigError) as info:
        tribes.ClusterConfig(managers=managers)  # type: ignore[arg-type]
    assert info.value.field == field


def test_route_is_checked() -> None:
    assert tribes.ClusterConfig(route="node1").route == "node1"
    with pytest.raises(tribes.ConfigError) as info:
        tribes.ClusterConfig(route="node 1")
    assert info.value.field == "route"


def test_toml_round_trip(tmp_path: Path) -> None:
    cfg = tribes.ClusterConfig(
        route="n1",
        managers={"*": {"kind": "backup"}, "shop": {"attribute_filter": r"cart|user", "rpc_timeout": 2.5}},
    )
    path = tmp_path / "cluster.toml"
    path.write_text(cfg.to_toml())
    assert tribes.ClusterConfig.from_file(path) == cfg
    assert '[managers."shop"]' in cfg.to_toml()


def test_tomcat_manager_element_becomes_the_template() -> None:
    cfg = tribes.ClusterConfig.from_tomcat_xml(
        """<Cluster className="org.apache.catalina.ha.tcp.SimpleTcpCluster">
             <Manager className="org.apache.catalina.ha.session.BackupManager" maxActiveSessions="100"
                      mapSendOptions="6" rpcTimeout="5000" expireSessionsOnShutdown="true"/>
           </Cluster>"""
    )
    m = cfg.managers["*"]
    assert (m.kind, m.max_active, m.send_mode, m.rpc_timeout) == ("backup", 100, "sync", 5.0)
    assert "Manager@expireSessionsOnShutdown" in cfg.unsupported
    delta = tribes.ClusterConfig.from_tomcat_xml(
        """<Cluster><Manager className="org.apache.catalina.ha.session.DeltaManager"
                     stateTransferTimeout="30" sendAllSessionsSize="500"/></Cluster>"""
    ).managers["*"]
    assert (delta.kind, delta.state_transfer_timeout, delta.state_transfer_batch) == ("delta", 30.0, 500)
