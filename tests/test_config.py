"""tribes.config: defaults, validation, TOML, Tomcat XML, the security check and the core JSON."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import pickle
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tribes.config import (
    ClusterConfig,
    InterceptorConfig,
    MembershipConfig,
    ReceiverConfig,
    SenderConfig,
    StaticMember,
    config_reference,
    send_options_bits,
    send_options_to_string,
)
from tribes.errors import ConfigError
from tribes.manager_config import ManagerConfig

DATA = Path(__file__).parent / "data"
HOWTO_XML = DATA / "cluster-howto.xml"
BACKUP_XML = DATA / "cluster-howto-backup.xml"
FULL_TOML = DATA / "cluster-full.toml"

HOWTO_UNSUPPORTED = (
    "Receiver@selectorTimeout",
    "Receiver@maxThreads",
    "Valve(org.apache.catalina.ha.tcp.ReplicationValve)",
    "Valve(org.apache.catalina.ha.session.JvmRouteBinderValve)",
    "Deployer(org.apache.catalina.ha.deploy.FarmWarDeployer)",
    "ClusterListener(org.apache.catalina.ha.session.ClusterSessionListener)",
)

TI = "org.apache.catalina.tribes.group.interceptors."

SECRET = "s3cret-0f-the-shop-cluster"  # every test checks that this text never leaks
OLD_SECRET = "previous-shop-secret-value"
KEY = "00112233445566778899aabbccddeeff"  # a tomcat_encrypt key (AES-128)
FULL_SECRET = "shop-secret-2025-rotation-b"  # tests/data/cluster-full.toml
FULL_OLD_SECRET = "shop-secret-2024-rotation-a"
FULL_KEY = "00112233445566778899AABBCCDDEEFF0011223344556677"


@pytest.fixture(autouse=True)
def no_secret_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests control TRIBES_SECRET and TRIBES_SECONDARY_SECRETS themselves."""
    monkeypatch.delenv("TRIBES_SECRET", raising=False)
    monkeypatch.delenv("TRIBES_SECONDARY_SECRETS", raising=False)


def config_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "tribes.config" and r.levelno == logging.WARNING
    ]


def cluster_xml(channel: str = "", **attrs: str) -> str:
    """A <Cluster> element around a channel body."""
    attributes = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return (
        f'<Cluster className="org.apache.catalina.ha.tcp.SimpleTcpCluster"{attributes}>'
        f'<Channel className="org.apache.catalina.tribes.group.GroupChannel">{channel}</Channel>'
        "</Cluster>"
    )


@pytest.fixture
def hostname_resolves_to(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make Tomcat's "auto" (gethostbyname(gethostname())) resolve to a chosen address."""

    def set_address(address: str | None) -> None:
        def fake(name: str) -> str:
            if address is None:
                raise socket.gaierror("no such host")
            return address

        monkeypatch.setattr(socket, "gethostbyname", fake)

    return set_address


# ---------------------------------------------------------------------------------------------------------
# Defaults, immutability, presets


def test_defaults_are_tomcats() -> None:
    cfg = ClusterConfig()
    m = cfg.membership
    # McastService (reference §1.1)
    assert (m.address, m.port, m.frequency_ms, m.drop_time_ms) == ("228.0.0.4", 45564, 500, 3000)
    assert m.bind is None and m.ttl is None
    assert m.domain == b"" and m.payload == b""
    assert m.local_loopback_disabled is False
    assert m.static_members == () and not m.is_static
    # NioReceiver (§2.5): port 4000, autoBind 100; the address deliberately defaults to loopback, not "auto"
    assert (cfg.receiver.port, cfg.receiver.auto_bind) == (4000, 100)
    assert cfg.receiver.address == "127.0.0.1"
    # PooledParallelSender (§2.6): timeout 3000, maxRetryAttempts 1
    assert (cfg.sender.timeout_ms, cfg.sender.max_retries) == (3000, 1)
    assert cfg.sender.keepalive is True
    # checkDefaults (§5.1): MessageDispatchInterceptor then TcpFailureDetector; TFD defaults (§3.3)
    assert [i.name for i in cfg.interceptors] == ["dispatch", "failure_detector"]
    assert dict(cfg.interceptors[0].options) == {"max_queue_bytes": 64 * 1024 * 1024}
    assert dict(cfg.interceptors[1].options) == {
        "connect_timeout_ms": 1000,
        "remove_suspects_timeout_ms": 300_000,
    }
    # Channel.SEND_OPTIONS_DEFAULT = USE_ACK (§2.3)
    assert cfg.send_options == "use_ack" and cfg.send_option_bits == 2
    assert cfg.insecure is False
    assert (cfg.name, cfg.worker_threads, cfg.event_queue_size) == ("tribes", 2, 65536)
    assert cfg.unsupported == ()


def test_security_defaults() -> None:
    cfg = ClusterConfig()
    assert cfg.secret is None and cfg.secondary_secrets == ()
    assert (cfg.replay_window_ms, cfg.replay_cache) == (10_000, 16384)
    assert cfg.membership.max_members == 1024
    assert cfg.receiver.idle_timeout_ms == 60_000
    assert cfg.effective_secrets() == ()
    assert cfg.secured is False
    assert dict(InterceptorConfig.of("tomcat_encrypt", key=KEY).options) == {
        "key": KEY,
        "replay_window_ms": 10_000,
        "replay_window_count": 8192,
        "format": "timestamped",
    }


def test_sections_have_the_same_defaults_standalone() -> None:
    assert ClusterConfig().membership == MembershipConfig()
    assert ClusterConfig().receiver == ReceiverConfig()
    assert ClusterConfig().sender == SenderConfig()


def test_config_is_frozen() -> None:
    cfg = ClusterConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.membership.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        cfg.interceptors[0].options["max_queue_bytes"] = 1  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        cfg.interceptors[0].options.update({"max_queue_bytes": 1})  # type: ignore[attr-defined]


def test_replace_works_and_revalidates() -> None:
    cfg = ClusterConfig()
    changed = dataclasses.replace(
        cfg, name="shop", membership=dataclasses.replace(cfg.membership, port=45600)
    )
    assert changed.name == "shop"
    assert changed.membership.port == 45600
    assert changed.membership.address == "228.0.0.4"
    assert cfg.membership.port == 45564
    with pytest.raises(ConfigError) as err:
        dataclasses.replace(cfg.membership, port=0)
    assert err.value.field == "membership.port"


def test_config_is_hashable_picklable_and_copyable() -> None:
    cfg = ClusterConfig.local(interceptors=["order", ("compression", {"codec": "lz4"})])
    assert hash(cfg) == hash(ClusterConfig.local(interceptors=["order", ("compression", {"codec": "lz4"})]))
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert copy.deepcopy(cfg) == cfg
    as_dict = dataclasses.asdict(cfg)
    assert as_dict["interceptors"][1] == {"name": "compression", "options": {"codec": "lz4", "min_size": 0}}


def test_local_preset() -> None:
    cfg = ClusterConfig.local()
    assert cfg.membership.bind == "127.0.0.1"
    assert cfg.membership.ttl == 0
    assert (cfg.membership.frequency_ms, cfg.membership.drop_time_ms) == (100, 1000)
    assert cfg.receiver.address == "127.0.0.1"
    assert cfg.insecure is False
    # everything else is the default
    assert cfg.sender == SenderConfig()
    assert cfg.interceptors == ClusterConfig().interceptors


def test_local_section_dict_merges_over_the_preset() -> None:
    cfg = ClusterConfig.local(membership={"port": 45600}, receiver={"port": 4500}, name="t1")
    assert cfg.membership.port == 45600
    assert (cfg.membership.bind, cfg.membership.ttl, cfg.membership.frequency_ms) == ("127.0.0.1", 0, 100)
    assert cfg.membership.drop_time_ms == 1000
    assert (cfg.receiver.address, cfg.receiver.port) == ("127.0.0.1", 4500)
    assert cfg.name == "t1"


def test_local_section_object_replaces_the_preset_section() -> None:
    cfg = ClusterConfig.local(membership=MembershipConfig(port=45601))
    assert cfg.membership == MembershipConfig(port=45601)


def test_local_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigError, match=r"^prot: unknown field") as err:
        ClusterConfig.local(prot=1)
    assert err.value.field == "prot"
    with pytest.raises(ConfigError, match=r"^unsupported: unknown field"):
        ClusterConfig.local(unsupported=("x",))


def test_section_dicts_merge_over_the_defaults() -> None:
    cfg = ClusterConfig(membership={"port": 45600}, receiver={"port": 4100}, sender={"max_retries": 3})  # type: ignore[arg-type]
    assert cfg.membership == MembershipConfig(port=45600)
    assert cfg.receiver == ReceiverConfig(port=4100)
    assert cfg.sender == SenderConfig(max_retries=3)
    assert isinstance(cfg.membership, MembershipConfig)


def test_with_overrides_merges_over_the_current_sections() -> None:
    base = ClusterConfig(membership=MembershipConfig(port=45600, frequency_ms=200, drop_time_ms=2000))
    cfg = base.with_overrides(membership={"ttl": 2}, insecure=True)
    assert (cfg.membership.port, cfg.membership.frequency_ms, cfg.membership.ttl) == (45600, 200, 2)
    assert cfg.insecure is True


def test_unknown_section_field_names_it_and_suggests() -> None:
    with pytest.raises(ConfigError, match=r"^receiver\.prot: unknown field \(did you mean 'port'\?\)") as err:
        ClusterConfig(receiver={"prot": 4000})  # type: ignore[arg-type]
    assert err.value.field == "receiver.prot"


# ---------------------------------------------------------------------------------------------------------
# Validation: every error names its field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"membership": {"address": "10.0.0.1"}}, "membership.address"),
        ({"membership": {"address": "not-an-ip"}}, "membership.address"),
        ({"membership": {"port": 0}}, "membership.port"),
        ({"membership": {"port": 70000}}, "membership.port"),
        ({"membership": {"port": "45564"}}, "membership.port"),
        ({"membership": {"port": True}}, "membership.port"),
        ({"membership": {"frequency_ms": 5}}, "membership.frequency_ms"),
        ({"membership": {"frequency_ms": 500, "drop_time_ms": 500}}, "membership.drop_time_ms"),
        ({"membership": {"ttl": 256}}, "membership.ttl"),
        ({"membership": {"ttl": -1}}, "membership.ttl"),
        ({"membership": {"bind": "eth0"}}, "membership.bind"),
        ({"membership": {"bind": "228.0.0.5"}}, "membership.bind"),
        ({"membership": {"bind": "::1"}}, "membership.bind"),  # IPv6 interface for an IPv4 group
        ({"membership": {"domain": "€uro"}}, "membership.domain"),
        ({"membership": {"domain": "{1,2"}}, "membership.domain"),
        ({"membership": {"domain": "{1,x}"}}, "membership.domain"),
        ({"membership": {"domain": [1, 256]}}, "membership.domain"),
        ({"membership": {"domain": 5}}, "membership.domain"),
        ({"membership": {"payload": b"x" * 4097}}, "membership.payload"),
        ({"membership": {"local_loopback_disabled": "yes"}}, "membership.local_loopback_disabled"),
        ({"membership": {"static_members": "10.0.0.1:4000"}}, "membership.static_members"),
        (
            {"membership": {"static_members": ["h:4000", {"host": "h2", "port": 0}]}},
            "membership.static_members[1].port",
        ),
        (
            {"membership": {"static_members": [{"host": "bad host!", "port": 4000}]}},
            "membership.static_members[0].host",
        ),
        (
            {"membership": {"static_members": [{"host": "h", "port": 1, "unique_id": "{1,2}"}]}},
            "membership.static_members[0].unique_id",
        ),
        ({"membership": {"static_members": [{"host": "h"}]}}, "membership.static_members[0].port"),
        (
            {"membership": {"static_members": [{"host": "h", "port": 1, "prot": 2}]}},
            "membership.static_members[0].prot",
        ),
        ({"membership": {"static_members": ["h:4000", "h:4000"]}}, "membership.static_members[1]"),
        ({"membership": {"static_members": ["no-port"]}}, "membership.static_members[0]"),
        ({"receiver": {"address": "localhost"}}, "receiver.address"),
        ({"receiver": {"address": "0.0.0.0"}}, "receiver.address"),
        ({"receiver": {"address": "228.0.0.4"}}, "receiver.address"),
        ({"receiver": {"port": -1}}, "receiver.port"),
        ({"receiver": {"auto_bind": 0}}, "receiver.auto_bind"),
        ({"receiver": {"port": 65500, "auto_bind": 100}}, "receiver.auto_bind"),
        ({"receiver": {"max_frame": 100}}, "receiver.max_frame"),
        ({"receiver": {"max_frame": 2 * 1024**3}}, "receiver.max_frame"),
        ({"receiver": {"max_connections": 0}}, "receiver.max_connections"),
        ({"receiver": {"idle_timeout_ms": 19_999}}, "receiver.idle_timeout_ms"),
        ({"receiver": {"idle_timeout_ms": 20_000.5}}, "receiver.idle_timeout_ms"),
        ({"membership": {"max_members": 0}}, "membership.max_members"),
        ({"membership": {"max_members": 65537}}, "membership.max_members"),
        (
            {"membership": {"max_members": 1, "static_members": ["h:4000", "h:4001"]}},
            "membership.static_members",
        ),
        ({"secret": "fifteen bytes!!"}, "secret"),
        ({"secret": ""}, "secret"),
        ({"secret": b"sixteen bytes!!!"}, "secret"),
        ({"secret": "\ud800 lone surrogate!!"}, "secret"),
        ({"secondary_secrets": [OLD_SECRET]}, "secondary_secrets"),
        ({"secret": SECRET, "secondary_secrets": OLD_SECRET}, "secondary_secrets"),
        ({"secret": SECRET, "secondary_secrets": [OLD_SECRET, "short"]}, "secondary_secrets[1]"),
        ({"secret": SECRET, "secondary_secrets": [SECRET]}, "secondary_secrets[0]"),
        ({"secret": SECRET, "secondary_secrets": [OLD_SECRET, OLD_SECRET]}, "secondary_secrets[1]"),
        ({"replay_window_ms": 0}, "replay_window_ms"),
        ({"replay_window_ms": 3_600_001}, "replay_window_ms"),
        ({"replay_cache": 1023}, "replay_cache"),
        ({"replay_cache": 10_000_001}, "replay_cache"),
        ({"interceptors": ["tomcat_encrypt"]}, "interceptors.tomcat_encrypt.key"),
        ({"interceptors": [("tomcat_encrypt", {"key": KEY[:-2]})]}, "interceptors.tomcat_encrypt.key"),
        ({"interceptors": [("tomcat_encrypt", {"key": KEY + "00"})]}, "interceptors.tomcat_encrypt.key"),
        ({"interceptors": [("tomcat_encrypt", {"key": "zz" * 16})]}, "interceptors.tomcat_encrypt.key"),
        ({"interceptors": [("tomcat_encrypt", {"key": 1234})]}, "interceptors.tomcat_encrypt.key"),
        (
            {"interceptors": [("tomcat_encrypt", {"key": KEY, "replay_window_count": 0})]},
            "interceptors.tomcat_encrypt.replay_window_count",
        ),
        (
            {"interceptors": [("tomcat_encrypt", {"key": KEY, "replay_window_ms": 0})]},
            "interceptors.tomcat_encrypt.replay_window_ms",
        ),
        ({"sender": {"timeout_ms": 0}}, "sender.timeout_ms"),
        ({"sender": {"connect_timeout_ms": 1.5}}, "sender.connect_timeout_ms"),
        ({"sender": {"max_retries": -1}}, "sender.max_retries"),
        ({"sender": {"keepalive": 1}}, "sender.keepalive"),
        ({"membership": None}, "membership"),
        ({"name": ""}, "name"),
        ({"name": 3}, "name"),
        ({"worker_threads": 0}, "worker_threads"),
        ({"event_queue_size": 0}, "event_queue_size"),
        ({"insecure": "no"}, "insecure"),
        ({"send_options": "bogus"}, "send_options"),
        ({"send_options": 128}, "send_options"),
        ({"send_options": True}, "send_options"),
        ({"interceptors": "dispatch"}, "interceptors"),
        ({"interceptors": ["nope"]}, "interceptors"),
        ({"interceptors": ["order", "order"]}, "interceptors"),
        ({"interceptors": [{"expire_ms": 1}]}, "interceptors"),
        ({"interceptors": [{"name": "order", "expire_ms": 0}]}, "interceptors.order.expire_ms"),
        ({"interceptors": [{"name": "order", "expires": 10}]}, "interceptors.order.expires"),
        ({"interceptors": [("compression", {"codec": "zstd"})]}, "interceptors.compression.codec"),
        ({"interceptors": [("domain_filter", {"domain": 7})]}, "interceptors.domain_filter.domain"),
        (
            {"interceptors": [("fragmentation", {"max_size": 2048})], "receiver": {"max_frame": 2048}},
            "interceptors.fragmentation.max_size",
        ),
    ],
)
def test_invalid_values_name_their_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ClusterConfig(**kwargs)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert isinstance(err.value, ValueError)


def test_error_message_shows_the_value() -> None:
    with pytest.raises(ConfigError, match=r"^membership\.port: must be 1\.\.65535, got 70000$"):
        MembershipConfig(port=70000)


def test_unknown_interceptor_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown interceptor 'oder' \(did you mean 'order'\?\)") as err:
        InterceptorConfig("oder")
    assert "fragmentation" in str(err.value)


def test_auto_bind_bound_is_inclusive() -> None:
    assert ReceiverConfig(port=65436, auto_bind=100).auto_bind == 100
    assert ReceiverConfig(port=65535, auto_bind=1).port == 65535


# ---------------------------------------------------------------------------------------------------------
# Send options


@pytest.mark.parametrize(
    ("value", "bits"),
    [
        ("use_ack", 2),
        ("sync", 6),
        ("synchronized_ack", 6),
        ("use_ack,sync", 6),
        ("use_ack, sync", 6),
        ("async", 8),
        ("asynchronous", 8),
        ("ASYNC", 8),
        ("byte", 1),
        ("byte_message,multicast", 65),
        ("secure", 16),
        ("udp", 32),
        ("async,use_ack", 10),
        ("10", 10),
        (" 6 ", 6),
        ("0x0a", 10),
        (15, 15),
        (0, 0),
        (127, 127),
    ],
)
def test_send_options_bits(value: str | int, bits: int) -> None:
    assert send_options_bits(value) == bits
    assert ClusterConfig(send_options=value).send_option_bits == bits


@pytest.mark.parametrize(
    "value", ["bogus", "", "use_ack,", "use_ack,,sync", 128, 0x100, -1, "0xzz", 2.0, None]
)
def test_send_options_invalid(value: Any) -> None:
    with pytest.raises(ConfigError) as err:
        send_options_bits(value)
    assert err.value.field == "send_options"


def test_send_options_keeps_the_given_form() -> None:
    assert ClusterConfig(send_options=" use_ack,sync ").send_options == "use_ack,sync"
    assert ClusterConfig(send_options=6).send_options == 6


def test_send_options_to_string_matches_tomcat() -> None:
    assert send_options_to_string(15) == "async, sync, use_ack, byte"
    assert send_options_to_string(6) == "sync, use_ack"
    assert send_options_to_string(0) == ""


# ---------------------------------------------------------------------------------------------------------
# Bytes, static members, interceptors


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{1,2,3}", b"\x01\x02\x03"),
        ("{ 1, 2 ,3 }", b"\x01\x02\x03"),
        ("{-1,255,-128}", b"\xff\xff\x80"),
        ("{}", b""),
        ("cluster-a", b"cluster-a"),
        ("é", b"\xe9"),
        ([1, 2, 250], b"\x01\x02\xfa"),
        (b"raw", b"raw"),
        (bytearray(b"ba"), b"ba"),
    ],
)
def test_domain_byte_forms(value: Any, expected: bytes) -> None:
    assert MembershipConfig(domain=value).domain == expected
    assert StaticMember("h", 1, domain=value).domain == expected


@pytest.mark.parametrize(
    "value",
    [
        "{0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15}",
        "000102030405060708090a0b0c0d0e0f",
        list(range(16)),
        bytes(range(16)),
    ],
)
def test_unique_id_forms(value: Any) -> None:
    assert StaticMember("h", 1, unique_id=value).unique_id == bytes(range(16))


def test_unique_id_rejects_plain_text() -> None:
    with pytest.raises(ConfigError, match="16 bytes"):
        StaticMember("h", 1, unique_id="sixteen chars!!!")  # type: ignore[arg-type]


def test_static_member_forms() -> None:
    m = MembershipConfig(
        static_members=[  # type: ignore[arg-type]
            "10.0.0.2:4000",
            "[fe80::1]:4001",
            ("node-c", 4002),
            {"host": "10.0.0.4", "port": 4003, "domain": "d"},
            StaticMember("10.0.0.5", 4004),
        ]
    )
    assert m.is_static
    assert m.static_members == (
        StaticMember("10.0.0.2", 4000),
        StaticMember("fe80::1", 4001),
        StaticMember("node-c", 4002),
        StaticMember("10.0.0.4", 4003, domain=b"d"),
        StaticMember("10.0.0.5", 4004),
    )
    assert isinstance(m.static_members, tuple)


def test_static_membership_allows_any_bind_family() -> None:
    # bind is only used for multicast; with static members the IP version check does not apply
    m = MembershipConfig(bind="::1", static_members=(StaticMember("10.0.0.2", 4000),))
    assert m.bind == "::1"


def test_interceptor_forms_are_equivalent() -> None:
    expected = InterceptorConfig("order", {"expire_ms": 5000})
    cfg = ClusterConfig(
        interceptors=[  # type: ignore[arg-type]
            ("order", {"expire_ms": 5000}),
        ]
    )
    assert cfg.interceptors == (expected,)
    for form in (
        {"name": "order", "expire_ms": 5000},
        {"name": "order", "options": {"expire_ms": 5000}},
        ["order", {"expire_ms": 5000}],
        InterceptorConfig.of("order", expire_ms=5000),
    ):
        assert ClusterConfig(interceptors=[form]).interceptors == (expected,)  # type: ignore[arg-type]


def test_interceptor_options_are_normalised() -> None:
    assert dict(InterceptorConfig("order").options) == {"expire_ms": 3000, "max_queue": 10_000}
    assert InterceptorConfig("order") == InterceptorConfig.of("order", expire_ms=3000)
    assert dict(InterceptorConfig("fragmentation").options) == {
        "max_size": 102_400,
        "expire_ms": 60_000,
        "max_in_flight": 1024,
    }
    assert dict(InterceptorConfig.of("compression", codec="LZ4").options) == {"codec": "lz4", "min_size": 0}
    assert dict(InterceptorConfig("throughput").options) == {"interval": 10_000}
    assert dict(InterceptorConfig("domain_filter").options) == {}
    assert dict(InterceptorConfig.of("domain_filter", domain="{7,8}").options) == {"domain": b"\x07\x08"}


def test_interceptor_order_is_kept_and_may_be_empty() -> None:
    names = ["failure_detector", "order", "dispatch"]
    assert [i.name for i in ClusterConfig(interceptors=names).interceptors] == names  # type: ignore[arg-type]
    assert ClusterConfig(interceptors=()).interceptors == ()
    assert ClusterConfig().interceptor("dispatch") == InterceptorConfig("dispatch")
    assert ClusterConfig().interceptor("order") is None


# ---------------------------------------------------------------------------------------------------------
# TOML and dicts


def expected_full_config() -> ClusterConfig:
    """What tests/data/cluster-full.toml describes."""
    return ClusterConfig(
        name="shop",
        send_options="use_ack,sync",
        insecure=True,
        secret=FULL_SECRET,
        secondary_secrets=(FULL_OLD_SECRET,),
        replay_window_ms=5000,
        replay_cache=4096,
        worker_threads=4,
        event_queue_size=1024,
        membership=MembershipConfig(
            address="228.0.0.9",
            port=45601,
            frequency_ms=250,
            drop_time_ms=2000,
            bind="10.0.0.5",
            ttl=1,
            domain=b"\x01\x02\x03",
            payload=b"hello",
            local_loopback_disabled=True,
            max_members=64,
            static_members=(
                StaticMember("10.0.0.6", 4001, unique_id=bytes([*range(15), 255]), domain=b"shop"),
                StaticMember("10.0.0.7", 4002, unique_id=bytes([*range(15), 255])),
            ),
        ),
        receiver=ReceiverConfig(
            address="10.0.0.5",
            port=4100,
            auto_bind=10,
            max_frame=1 << 20,
            max_connections=64,
            idle_timeout_ms=30_000,
        ),
        sender=SenderConfig(timeout_ms=5000, connect_timeout_ms=500, max_retries=2, keepalive=False),
        interceptors=(
            InterceptorConfig.of("order", expire_ms=5000),
            InterceptorConfig.of("fragmentation", max_size=65536),
            InterceptorConfig.of("compression", codec="lz4", min_size=256),
            InterceptorConfig("domain_filter"),
            InterceptorConfig.of(
                "tomcat_encrypt", key=FULL_KEY, replay_window_ms=20_000, replay_window_count=1000
            ),
            InterceptorConfig("dispatch"),
            InterceptorConfig.of("failure_detector", remove_suspects_timeout_ms=60_000),
        ),
    )


def test_full_toml_file_loads_every_key(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(FULL_TOML.read_text())
    cfg = ClusterConfig.from_file(path)
    assert cfg == expected_full_config()
    assert cfg.send_option_bits == 6
    assert cfg.membership.static_members[0].unique_id == bytes([*range(15), 255])
    assert cfg.interceptor("compression") == InterceptorConfig.of("compression", codec="lz4", min_size=256)


def test_toml_round_trip(tmp_path: Path) -> None:
    cfg = ClusterConfig.from_file(FULL_TOML)
    path = tmp_path / "dumped.toml"
    path.write_text(cfg.to_toml(include_secrets=True))
    assert ClusterConfig.from_file(path) == cfg
    # also for values that need escaping or byte lists
    odd = ClusterConfig(
        name='say "hi" \\ there',
        membership=MembershipConfig(
            domain=b"{not-a-list}",
            payload=b"\x00\xff",
            ttl=None,
            static_members=(StaticMember("h", 1, unique_id=b"sixteen chars!!!", domain=b" padded "),),
        ),
        interceptors=(),
    )
    path.write_text(odd.to_toml())
    assert ClusterConfig.from_file(path) == odd
    assert tomllib.loads(odd.to_toml())["interceptors"] == []


def test_dict_round_trip() -> None:
    cfg = expected_full_config()
    assert ClusterConfig.from_dict(cfg.to_dict(include_secrets=True)) == cfg
    assert ClusterConfig.from_dict({}) == ClusterConfig()
    plain = ClusterConfig.local(receiver={"idle_timeout_ms": 90_000}, replay_cache=2048)
    assert ClusterConfig.from_dict(plain.to_dict()) == plain


def test_toml_and_dict_leave_secrets_out_by_default(tmp_path: Path) -> None:
    cfg = expected_full_config()
    text = cfg.to_toml()
    data = cfg.to_dict()
    for secret in (FULL_SECRET, FULL_OLD_SECRET, FULL_KEY, FULL_KEY.lower()):
        assert secret not in text
        assert secret not in repr(data)
    assert "secret" not in data and "secondary_secrets" not in data
    assert "secret =" not in text and "secondary_secrets" not in text
    encrypt = next(i for i in data["interceptors"] if i["name"] == "tomcat_encrypt")
    assert encrypt == {
        "name": "tomcat_encrypt",
        "replay_window_ms": 20_000,
        "replay_window_count": 1000,
        "format": "timestamped",
    }
    # without its secrets the document reads back once the key is given again; the secret then comes
    # from the environment
    parsed = tomllib.loads(text)
    next(i for i in parsed["interceptors"] if i["name"] == "tomcat_encrypt")["key"] = FULL_KEY
    back = ClusterConfig.from_dict(parsed)
    assert back.secret is None and back.secondary_secrets == ()
    assert back == dataclasses.replace(cfg, secret=None, secondary_secrets=())
    # the rest is untouched
    assert (back.replay_window_ms, back.replay_cache) == (5000, 4096)
    # include_secrets writes them, readable by TOML
    full = tomllib.loads(cfg.to_toml(include_secrets=True))
    assert full["secret"] == FULL_SECRET
    assert full["secondary_secrets"] == [FULL_OLD_SECRET]
    assert cfg.to_dict(include_secrets=True)["secret"] == FULL_SECRET


def test_toml_interceptor_names_list(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('interceptors = ["order", "dispatch"]\n[membership]\nport = 45602\n')
    cfg = ClusterConfig.from_file(path)
    assert [i.name for i in cfg.interceptors] == ["order", "dispatch"]
    assert cfg.membership == MembershipConfig(port=45602)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("prot = 1\n", "prot"),
        ("[receiver]\nprot = 4000\n", "receiver.prot"),
        ("[membership]\nfrequency = 500\n", "membership.frequency"),
        (
            "[[membership.static_members]]\nhost = 'h'\nport = 1\nsecure_port = 2\n",
            "membership.static_members[0].secure_port",
        ),
        ("[[interceptors]]\nname = 'order'\nexpire = 5\n", "interceptors.order.expire"),
        ("[[interceptors]]\nname = 'bogus'\n", "interceptors"),
        ("[senders]\ntimeout_ms = 1\n", "senders"),
        ("unsupported = ['x']\n", "unsupported"),
        ("secret = 'too short'\n", "secret"),
        ("secret = 12345678901234567890\n", "secret"),
        ("secondary_secrets = ['an-older-secret-value']\n", "secondary_secrets"),
        ("[membership]\nmax_members = 0\n", "membership.max_members"),
        ("[receiver]\nidle_timeout_ms = 15000\n", "receiver.idle_timeout_ms"),
        ("[[interceptors]]\nname = 'tomcat_encrypt'\n", "interceptors.tomcat_encrypt.key"),
        ("[receiver]\nport = 70000\n", "receiver.port"),
    ],
)
def test_toml_errors_name_the_key(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        ClusterConfig.from_file(path)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_toml_unknown_key_message() -> None:
    with pytest.raises(ConfigError, match=r"^receiver\.prot: unknown field \(did you mean 'port'\?\)$"):
        ClusterConfig.from_dict({"receiver": {"prot": 4000}})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        ClusterConfig.from_file(path)


def test_from_file_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[membership]\nport = 45603\n")
    cfg = ClusterConfig.from_file(path, membership={"ttl": 0}, insecure=True)
    assert (cfg.membership.port, cfg.membership.ttl, cfg.insecure) == (45603, 0, True)


def test_from_file_missing_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ClusterConfig.from_file(tmp_path / "absent.toml")


# ---------------------------------------------------------------------------------------------------------
# Tomcat XML


def test_cluster_howto_default_example_loads(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tribes.config"):
        cfg = ClusterConfig.from_tomcat_xml(HOWTO_XML.read_text())
    assert cfg.unsupported == HOWTO_UNSUPPORTED
    # channelSendOptions="async"
    assert cfg.send_option_bits == 8
    assert cfg.managers == {"*": ManagerConfig(kind="delta")}
    assert cfg.membership == MembershipConfig(
        address="228.0.0.4", port=45564, frequency_ms=500, drop_time_ms=3000
    )
    assert (cfg.receiver.address, cfg.receiver.port, cfg.receiver.auto_bind) == ("auto", 4000, 100)
    # the how-to's order: TcpFailureDetector above MessageDispatchInterceptor
    assert cfg.interceptors == (InterceptorConfig("failure_detector"), InterceptorConfig("dispatch"))
    assert cfg.sender == SenderConfig()
    assert cfg.insecure is False
    # logged once, naming every item
    messages = config_warnings(caplog)
    assert len(messages) == 1
    for item in HOWTO_UNSUPPORTED:
        assert item in messages[0]


def test_cluster_howto_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "server-cluster.xml"
    path.write_text(HOWTO_XML.read_text())
    assert ClusterConfig.from_tomcat_xml(path).unsupported == HOWTO_UNSUPPORTED
    assert ClusterConfig.from_tomcat_xml(str(path)) == ClusterConfig.from_tomcat_xml(path)
    # from_file dispatches on the .xml suffix
    assert ClusterConfig.from_file(path).unsupported == HOWTO_UNSUPPORTED


def test_cluster_howto_backup_manager_example_loads(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tribes.config"):
        cfg = ClusterConfig.from_tomcat_xml(BACKUP_XML)
    assert cfg.send_options == "use_ack,sync"
    assert cfg.send_option_bits == 6
    assert (cfg.receiver.address, cfg.receiver.port) == ("auto", 5000)
    assert [i.name for i in cfg.interceptors] == ["failure_detector", "dispatch", "throughput"]
    assert cfg.managers["*"] == ManagerConfig(kind="backup", send_mode="sync")
    assert cfg.unsupported == (
        "Receiver@selectorTimeout",
        "Receiver@maxThreads",
        "Valve(org.apache.catalina.ha.tcp.ReplicationValve)",
        "Deployer(org.apache.catalina.ha.deploy.FarmWarDeployer)",
        "ClusterListener(org.apache.catalina.ha.session.ClusterSessionListener)",
    )
    assert len(config_warnings(caplog)) == 1


def test_minimal_cluster_element_gets_tomcats_defaults(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tribes.config"):
        cfg = ClusterConfig.from_tomcat_xml(
            '<Cluster className="org.apache.catalina.ha.tcp.SimpleTcpCluster"/>'
        )
    assert cfg.send_option_bits == 8  # SimpleTcpCluster's default channelSendOptions
    assert cfg.interceptors == ClusterConfig().interceptors  # checkDefaults: dispatch, failure_detector
    assert cfg.unsupported == ()
    assert config_warnings(caplog) == []
    # a Channel without interceptors gets the same defaults
    assert ClusterConfig.from_tomcat_xml(cluster_xml()).interceptors == ClusterConfig().interceptors


def test_membership_attributes_map_or_are_reported() -> None:
    xml = cluster_xml(
        '<Membership className="org.apache.catalina.tribes.membership.McastService" address="228.0.0.8" '
        'port="45570" frequency="1000" dropTime="5000" bind="127.0.0.1" ttl="3" domain="{1,2}" '
        'localLoopbackDisabled="true" soTimeout="100" recoveryEnabled="false" recoveryCounter="5" '
        'recoverySleepTime="100"/>'
    )
    cfg = ClusterConfig.from_tomcat_xml(xml)
    assert cfg.membership == MembershipConfig(
        address="228.0.0.8",
        port=45570,
        frequency_ms=1000,
        drop_time_ms=5000,
        bind="127.0.0.1",
        ttl=3,
        domain=b"\x01\x02",
        local_loopback_disabled=True,
    )
    assert cfg.unsupported == (
        "Membership@soTimeout",
        "Membership@recoveryEnabled",
        "Membership@recoveryCounter",
        "Membership@recoverySleepTime",
    )


def test_membership_ttl_minus_one_means_unset_and_text_domain() -> None:
    cfg = ClusterConfig.from_tomcat_xml(cluster_xml('<Membership ttl="-1" domain="shop"/>'))
    assert cfg.membership.ttl is None
    assert cfg.membership.domain == b"shop"


def test_static_membership_service() -> None:
    xml = cluster_xml(
        '<Membership className="org.apache.catalina.tribes.membership.StaticMembershipService" '
        'expirationTime="5000">'
        '<LocalMember className="org.apache.catalina.tribes.membership.StaticMember" domain="d"/>'
        '<Member className="org.apache.catalina.tribes.membership.StaticMember" host="10.0.0.2" port="4000" '
        'uniqueId="{0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15}" domain="d" securePort="-1"/>'
        '<Member className="org.apache.catalina.tribes.membership.StaticMember" host="10.0.0.3" port="4000"/>'
        "</Membership>"
    )
    cfg = ClusterConfig.from_tomcat_xml(xml)
    assert cfg.membership.static_members == (
        StaticMember("10.0.0.2", 4000, unique_id=bytes(range(16)), domain=b"d"),
        StaticMember("10.0.0.3", 4000),
    )
    assert cfg.unsupported == (
        "Membership@expirationTime",
        "LocalMember(org.apache.catalina.tribes.membership.StaticMember)",
        "Member@securePort",
    )


def test_static_membership_interceptor_members() -> None:
    xml = cluster_xml(
        f'<Interceptor className="{TI}TcpFailureDetector"/>'
        f'<Interceptor className="{TI}StaticMembershipInterceptor">'
        '<Member className="org.apache.catalina.tribes.membership.StaticMember" host="10.0.0.2" port="4001"/>'
        "</Interceptor>"
    )
    cfg = ClusterConfig.from_tomcat_xml(xml)
    assert cfg.membership.static_members == (StaticMember("10.0.0.2", 4001),)
    assert [i.name for i in cfg.interceptors] == ["failure_detector"]
    assert cfg.unsupported == ()


def test_interceptor_mapping_and_reporting() -> None:
    xml = cluster_xml(
        f'<Interceptor className="{TI}EncryptInterceptor" encryptionKey="00"/>'
        f'<Interceptor className="{TI}TcpFailureDetector" connectTimeout="2000" removeSuspectsTimeout="60" '
        'performReadTest="true"/>'
        f'<Interceptor className="{TI}MessageDispatch15Interceptor" maxQueueSize="1024" alwaysSend="false"/>'
        f'<Interceptor className="{TI}OrderInterceptor" expire="5000" maxQueue="50" forwardExpired="false"/>'
        f'<Interceptor className="{TI}FragmentationInterceptor" maxSize="65536" expire="30000"/>'
        f'<Interceptor className="{TI}GzipInterceptor" compressionMinSize="128" statsEnabled="true"/>'
        f'<Interceptor className="{TI}ThroughputInterceptor" interval="500"/>'
        f'<Interceptor className="{TI}DomainFilterInterceptor" domain="{{9,9}}" logInterval="10"/>'
        f'<Interceptor className="{TI}TcpPingInterceptor" interval="1000"/>'
    )
    cfg = ClusterConfig.from_tomcat_xml(xml)
    assert cfg.interceptors == (
        InterceptorConfig.of("failure_detector", connect_timeout_ms=2000, remove_suspects_timeout_ms=60_000),
        InterceptorConfig.of("dispatch", max_queue_bytes=1024),
        InterceptorConfig.of("order", expire_ms=5000, max_queue=50),
        InterceptorConfig.of("fragmentation", max_size=65536, expire_ms=30_000),
        InterceptorConfig.of("compression", codec="gzip", min_size=128),
        InterceptorConfig.of("throughput", interval=500),
        InterceptorConfig.of("domain_filter", domain=b"\x09\x09"),
    )
    assert cfg.unsupported == (
        f"Interceptor({TI}EncryptInterceptor)",
        "TcpFailureDetector@performReadTest",
        "MessageDispatch15Interceptor@alwaysSend",
        "OrderInterceptor@forwardExpired",
        "GzipInterceptor@statsEnabled",
        "DomainFilterInterceptor@logInterval",
        f"Interceptor({TI}TcpPingInterceptor)",
    )


def test_only_unsupported_interceptors_leave_the_stack_empty() -> None:
    # Tomcat adds its default interceptors only when the channel has none at all
    cfg = ClusterConfig.from_tomcat_xml(cluster_xml(f'<Interceptor className="{TI}TcpPingInterceptor"/>'))
    assert cfg.interceptors == ()


def test_negative_remove_suspects_timeout_is_reported() -> None:
    cfg = ClusterConfig.from_tomcat_xml(
        cluster_xml(f'<Interceptor className="{TI}TcpFailureDetector" removeSuspectsTimeout="-1"/>')
    )
    assert cfg.interceptors == (InterceptorConfig("failure_detector"),)
    assert cfg.unsupported == ("TcpFailureDetector@removeSuspectsTimeout",)


def test_receiver_and_sender_attributes() -> None:
    xml = cluster_xml(
        '<Receiver className="org.apache.catalina.tribes.transport.nio.NioReceiver" address="127.0.0.2" '
        'port="4200" autoBind="0" udpPort="4300"/>'
        '<Sender className="org.apache.catalina.tribes.transport.ReplicationTransmitter" timeout="4000">'
        '<Transport className="org.apache.catalina.tribes.transport.nio.PooledParallelSender" '
        'maxRetryAttempts="3" poolSize="10"/>'
        "</Sender>",
        channelSendOptions="6",
        heartbeatBackgroundEnabled="true",
    )
    cfg = ClusterConfig.from_tomcat_xml(xml)
    assert cfg.receiver == ReceiverConfig(
        address="127.0.0.2", port=4200, auto_bind=1
    )  # Tomcat: <= 0 becomes 1
    assert cfg.sender == SenderConfig(timeout_ms=4000, max_retries=3)
    assert cfg.send_option_bits == 6
    assert cfg.unsupported == ("Cluster@heartbeatBackgroundEnabled", "Receiver@udpPort", "Transport@poolSize")


def test_unknown_classes_are_reported_by_class_name() -> None:
    xml = (
        '<Cluster className="com.example.MyCluster">'
        '<Channel className="org.apache.catalina.tribes.group.GroupChannel" heartbeat="false">'
        '<Membership className="org.apache.catalina.tribes.membership.cloud.CloudMembershipService"/>'
        '<Receiver className="com.example.Receiver" port="1"/>'
        '<Sender className="org.apache.catalina.tribes.transport.ReplicationTransmitter">'
        '<Transport className="com.example.Transport" timeout="1"/>'
        "</Sender>"
        "<Thing/>"
        "</Channel>"
        "</Cluster>"
    )
    cfg = ClusterConfig.from_tomcat_xml(xml)
    assert cfg.unsupported == (
        "Cluster(com.example.MyCluster)",
        "Channel@heartbeat",
        "Membership(org.apache.catalina.tribes.membership.cloud.CloudMembershipService)",
        "Receiver(com.example.Receiver)",
        "Transport(com.example.Transport)",
        "Thing",
    )
    assert cfg.receiver == ReceiverConfig()
    assert cfg.sender == SenderConfig()


def test_xml_overrides_apply_last() -> None:
    cfg = ClusterConfig.from_tomcat_xml(HOWTO_XML, insecure=True, receiver={"port": 4500})
    assert cfg.insecure is True
    assert (cfg.receiver.address, cfg.receiver.port) == ("auto", 4500)
    assert cfg.unsupported == HOWTO_UNSUPPORTED
    # unsupported is kept by replace and ignored by ==
    assert dataclasses.replace(cfg, name="x").unsupported == HOWTO_UNSUPPORTED
    assert dataclasses.replace(cfg, unsupported=()) == cfg


def test_namespaced_xml_is_read() -> None:
    xml = '<Server xmlns="urn:x"><Cluster channelSendOptions="use_ack"/></Server>'
    assert ClusterConfig.from_tomcat_xml(xml).send_option_bits == 2


@pytest.mark.parametrize(
    ("xml", "field", "match"),
    [
        (
            cluster_xml('<Receiver port="abc"/>'),
            "receiver.port",
            r"expected an integer, got 'abc' \(from Receiver@port\)",
        ),
        (cluster_xml('<Membership port="70000"/>'), "membership.port", "must be 1..65535"),
        (
            cluster_xml('<Membership localLoopbackDisabled="maybe"/>'),
            "membership.local_loopback_disabled",
            "true or false",
        ),
        (cluster_xml(channelSendOptions="bogus"), "send_options", "unknown send option"),
        (
            cluster_xml(
                '<Membership className="org.apache.catalina.tribes.membership.StaticMembershipService">'
                '<Member port="4000"/></Membership>'
            ),
            "membership.static_members[0].host",
            "missing",
        ),
        ("<Server/>", "Cluster", "no <Cluster> element"),
        ("<Server><Cluster/><Engine><Cluster/></Engine></Server>", "Cluster", "2 <Cluster> elements"),
        ("<Cluster>", None, "invalid XML"),
    ],
)
def test_xml_errors(xml: str, field: str | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        ClusterConfig.from_tomcat_xml(xml)
    assert err.value.field == field


# ---------------------------------------------------------------------------------------------------------
# Security check


def test_check_security_accepts_the_loopback_configs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tribes.config"):
        ClusterConfig.local().check_security()
        ClusterConfig().check_security()  # bind unset = loopback; receiver 127.0.0.1
        ClusterConfig.from_dict(
            {"membership": {"address": "ff02::1:4", "bind": "::1"}, "receiver": {"address": "::1"}}
        ).check_security()
    assert config_warnings(caplog) == []


def test_check_security_rejects_a_network_receiver() -> None:
    cfg = ClusterConfig.local(receiver={"address": "10.1.2.3"})
    with pytest.raises(ConfigError) as err:
        cfg.check_security()
    assert err.value.field == "receiver.address"
    assert "10.1.2.3" in str(err.value)
    assert "insecure = true" in str(err.value)
    assert "shared secret" in str(err.value)
    with pytest.raises(ConfigError):
        cfg.to_core_json()


def test_check_security_accepts_insecure_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    cfg = ClusterConfig.local(receiver={"address": "10.1.2.3"}, insecure=True)
    with caplog.at_level(logging.WARNING, logger="tribes.config"):
        cfg.check_security()
    messages = config_warnings(caplog)
    assert len(messages) == 1
    assert "receiver.address=10.1.2.3" in messages[0]
    assert "unencrypted" in messages[0]


def test_core_json_checks_but_does_not_warn_twice(caplog: pytest.LogCaptureFixture) -> None:
    # Cluster.start() runs check_security() (one warning) and then to_core_json() (checks again, silently)
    cfg = ClusterConfig.local(receiver={"address": "10.1.2.3"}, insecure=True)
    with caplog.at_level(logging.WARNING, logger="tribes.config"):
        cfg.check_security()
        cfg.to_core_json()
    assert len(config_warnings(caplog)) == 1


def test_check_security_rejects_a_network_bind() -> None:
    with pytest.raises(ConfigError) as err:
        ClusterConfig.from_dict({"membership": {"bind": "192.168.1.5"}}).check_security()
    assert err.value.field == "membership.bind"


def test_check_security_static_members() -> None:
    # bind is unused with static membership; the peers' hosts count instead
    cfg = ClusterConfig.local(membership={"bind": "192.168.1.5", "static_members": ["127.0.0.1:4001"]})
    cfg.check_security()
    with pytest.raises(ConfigError) as err:
        ClusterConfig.local(
            membership={"static_members": ["127.0.0.1:4001", "10.0.0.9:4000"]}
        ).check_security()
    assert err.value.field == "membership.static_members[1].host"


def test_check_security_resolves_auto(hostname_resolves_to: Any, caplog: pytest.LogCaptureFixture) -> None:
    cfg = ClusterConfig.from_tomcat_xml(HOWTO_XML)  # receiver address="auto": loads fine
    hostname_resolves_to("10.0.0.7")
    with pytest.raises(ConfigError, match=r"10\.0\.0\.7 \(from 'auto'\)") as err:
        cfg.check_security()
    assert err.value.field == "receiver.address"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tribes.config"):
        dataclasses.replace(cfg, insecure=True).check_security()
    assert len(config_warnings(caplog)) == 1
    hostname_resolves_to("127.0.1.1")  # Debian's hostname entry: loopback
    cfg.check_security()
    hostname_resolves_to(None)  # unresolvable host name: falls back to 127.0.0.1
    cfg.check_security()
    assert json.loads(cfg.to_core_json())["receiver"]["address"] == "127.0.0.1"


# ---------------------------------------------------------------------------------------------------------
# Shared secret: key ring, environment, secured clusters, never shown


def assert_hidden(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert secret.lower() not in text.lower()


def test_secret_and_rotation_key_ring() -> None:
    cfg = ClusterConfig.local(secret=SECRET)
    assert cfg.effective_secrets() == (SECRET,)
    assert cfg.secured is True
    # rotation without downtime: every member first accepts the new secret, then sends with it
    accepting = dataclasses.replace(cfg, secondary_secrets=(OLD_SECRET,))
    assert accepting.effective_secrets() == (SECRET, OLD_SECRET)
    rotated = ClusterConfig.local(secret=OLD_SECRET, secondary_secrets=[SECRET])
    assert rotated.effective_secrets() == (OLD_SECRET, SECRET)  # the sending secret comes first
    assert isinstance(rotated.secondary_secrets, tuple)
    assert json.loads(rotated.to_core_json())["security"]["secrets"] == [OLD_SECRET, SECRET]
    # three generations, non-ASCII allowed (the length counts UTF-8 bytes)
    ring = ClusterConfig(secret="é" * 8, secondary_secrets=("ü" * 8, OLD_SECRET))
    assert ring.effective_secrets() == ("é" * 8, "ü" * 8, OLD_SECRET)
    # secrets take part in equality, not in repr
    assert cfg != ClusterConfig.local(secret=OLD_SECRET)
    assert repr(cfg) == repr(ClusterConfig.local(secret=OLD_SECRET))


def test_secret_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ClusterConfig.local()  # made before the variable is set: read when used
    monkeypatch.setenv("TRIBES_SECRET", SECRET)
    assert cfg.secret is None
    assert cfg.effective_secrets() == (SECRET,)
    assert cfg.secured is True
    assert json.loads(cfg.to_core_json())["security"]["secrets"] == [SECRET]
    monkeypatch.setenv("TRIBES_SECONDARY_SECRETS", f" {OLD_SECRET} , ,another-old-secret-value,")
    assert cfg.effective_secrets() == (SECRET, OLD_SECRET, "another-old-secret-value")
    # a configured secret wins over the environment, secondary ones included
    configured = ClusterConfig.local(secret="configured-secret-value")
    assert configured.effective_secrets() == ("configured-secret-value",)
    # an empty TRIBES_SECRET counts as unset
    monkeypatch.setenv("TRIBES_SECRET", "")
    monkeypatch.delenv("TRIBES_SECONDARY_SECRETS")
    assert cfg.effective_secrets() == () and not cfg.secured


@pytest.mark.parametrize(
    ("env", "field", "match"),
    [
        ({"TRIBES_SECRET": "short-" + "x"}, "secret", "from TRIBES_SECRET: must be at least 16 bytes"),
        (
            {"TRIBES_SECONDARY_SECRETS": OLD_SECRET},
            "secondary_secrets",
            "from TRIBES_SECONDARY_SECRETS: .*need a sending secret",
        ),
        (
            {"TRIBES_SECRET": SECRET, "TRIBES_SECONDARY_SECRETS": f"{OLD_SECRET},tiny"},
            "secondary_secrets[1]",
            "from TRIBES_SECONDARY_SECRETS: must be at least 16 bytes",
        ),
        (
            {"TRIBES_SECRET": SECRET, "TRIBES_SECONDARY_SECRETS": SECRET},
            "secondary_secrets[0]",
            "duplicate secret",
        ),
    ],
)
def test_invalid_environment_secrets(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str, match: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = ClusterConfig.local()  # constructing never reads the environment
    for call in (cfg.effective_secrets, cfg.check_security, cfg.to_core_json):
        with pytest.raises(ConfigError, match=match) as err:
            call()
        assert err.value.field == field
        assert_hidden(str(err.value), SECRET, OLD_SECRET, "short-x")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"secret": SECRET[:15]},
        {"secret": SECRET.encode()},
        {"secondary_secrets": [SECRET]},
        {"secondary_secrets": SECRET},
        {"secret": OLD_SECRET, "secondary_secrets": [SECRET[:10]]},
        {"secret": SECRET, "secondary_secrets": [SECRET]},
        {"interceptors": [("tomcat_encrypt", {"key": KEY[:-1]})]},
        {"interceptors": [("tomcat_encrypt", {"key": KEY[:-1] + "g"})]},
        {"interceptors": [("tomcat_encrypt", {"key": KEY.encode()})]},
    ],
)
def test_errors_never_show_a_secret(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as err:
        ClusterConfig(**kwargs)
    assert_hidden(str(err.value), SECRET, SECRET[:15], SECRET[:10], KEY[:-1])


def test_repr_str_and_exports_never_show_secrets(caplog: pytest.LogCaptureFixture) -> None:
    cfg = ClusterConfig.local(
        secret=SECRET,
        secondary_secrets=[OLD_SECRET],
        receiver={"address": "10.1.2.3"},
        interceptors=["dispatch", ("tomcat_encrypt", {"key": KEY.upper()})],
    )
    encrypt = cfg.interceptor("tomcat_encrypt")
    assert encrypt is not None and encrypt.options["key"] == KEY  # normalised, still there for the core
    with caplog.at_level(logging.DEBUG, logger="tribes"):
        cfg.check_security()
        core = cfg.to_core_json()
    shown = [repr(cfg), str(cfg), repr(encrypt), str(encrypt), repr(encrypt.options), str(encrypt.options)]
    shown += [
        f"{cfg}",
        f"{cfg!r}",
        cfg.to_toml(),
        repr(cfg.to_dict()),
        json.dumps(cfg.to_dict(), default=str),
    ]
    shown += [caplog.text, repr(cfg.interceptors)]
    for text in shown:
        assert_hidden(text, SECRET, OLD_SECRET, KEY)
    assert "<hidden>" in repr(encrypt) and "replay_window_count" in repr(encrypt)
    # the core gets them all
    doc = json.loads(core)
    assert doc["security"]["secrets"] == [SECRET, OLD_SECRET]
    assert doc["interceptors"][1]["options"]["key"] == KEY


def test_environment_secrets_are_not_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TRIBES_SECRET", SECRET)
    monkeypatch.setenv("TRIBES_SECONDARY_SECRETS", OLD_SECRET)
    cfg = ClusterConfig.local(receiver={"address": "10.1.2.3"}, insecure=True)
    with caplog.at_level(logging.DEBUG, logger="tribes"):
        cfg.check_security()
        cfg.to_core_json()
    assert_hidden(caplog.text + repr(cfg) + cfg.to_toml(), SECRET, OLD_SECRET)


def test_secured_cluster_may_use_network_addresses(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    network: dict[str, Any] = {
        "membership": {"bind": "192.168.1.5"},
        "receiver": {"address": "192.168.1.5"},
    }
    static: dict[str, Any] = {"membership": {"static_members": ["10.0.0.9:4000"]}}
    with caplog.at_level(logging.WARNING, logger="tribes.config"):
        for sections in (network, static):
            cfg = ClusterConfig.from_dict({**sections, "secret": SECRET})
            assert cfg.insecure is False
            cfg.check_security()
            doc = json.loads(cfg.to_core_json())
            assert doc["insecure"] is False and doc["security"]["secrets"] == [SECRET]
            # insecure is unnecessary with a secret, but allowed, and silent
            dataclasses.replace(cfg, insecure=True).check_security()
        # a secret from the environment does the same
        cfg = ClusterConfig.from_dict(network)
        with pytest.raises(ConfigError):
            cfg.check_security()
        monkeypatch.setenv("TRIBES_SECRET", SECRET)
        cfg.check_security()
        assert json.loads(cfg.to_core_json())["receiver"]["address"] == "192.168.1.5"
    assert config_warnings(caplog) == []


def test_insecure_with_tomcat_encrypt_warns_about_membership(caplog: pytest.LogCaptureFixture) -> None:
    cfg = ClusterConfig.local(
        receiver={"address": "10.1.2.3"},
        insecure=True,
        interceptors=[("tomcat_encrypt", {"key": KEY}), "failure_detector"],
    )
    with caplog.at_level(logging.WARNING, logger="tribes.config"):
        cfg.check_security()
    messages = config_warnings(caplog)
    assert len(messages) == 1
    assert "tomcat_encrypt" in messages[0] and "unauthenticated" in messages[0]
    assert_hidden(caplog.text, KEY)
    # tomcat_encrypt alone does not make a cluster secured
    assert not cfg.secured
    with pytest.raises(ConfigError):
        dataclasses.replace(cfg, insecure=False).check_security()


def test_toml_secret_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        f'secret = "{SECRET}"\nsecondary_secrets = ["{OLD_SECRET}"]\nreplay_window_ms = 2000\n'
        "replay_cache = 1024\n[membership]\nmax_members = 8\n[receiver]\nidle_timeout_ms = 20000\n"
    )
    cfg = ClusterConfig.from_file(path)
    assert cfg.effective_secrets() == (SECRET, OLD_SECRET)
    assert (cfg.replay_window_ms, cfg.replay_cache) == (2000, 1024)
    assert (cfg.membership.max_members, cfg.receiver.idle_timeout_ms) == (8, 20_000)
    # an override supplies a secret to a file without one
    path.write_text("[membership]\nport = 45604\n")
    assert ClusterConfig.from_file(path, secret=SECRET).effective_secrets() == (SECRET,)


def test_tomcat_encrypt_key_lengths() -> None:
    for digits in (32, 48, 64):
        key = ("aB" * 32)[:digits]
        options = InterceptorConfig.of("tomcat_encrypt", key=f" {key} ").options
        assert options["key"] == key.lower()
    for digits in (0, 2, 16, 31, 33, 40, 63, 66, 128):
        with pytest.raises(ConfigError) as err:
            InterceptorConfig.of("tomcat_encrypt", key="a" * digits)
        assert err.value.field == "interceptors.tomcat_encrypt.key"


def test_tomcat_encrypt_interceptor_from_xml(caplog: pytest.LogCaptureFixture) -> None:
    xml = cluster_xml(
        f'<Interceptor className="{TI}EncryptInterceptor" encryptionAlgorithm="AES/GCM/NoPadding" '
        f'encryptionKey="{KEY.upper()}" replayWindowTime="5000" replayWindowMessageCount="100" '
        'providerName="BC"/>'
        f'<Interceptor className="{TI}TcpFailureDetector"/>'
    )
    with caplog.at_level(logging.WARNING, logger="tribes.config"):
        cfg = ClusterConfig.from_tomcat_xml(xml)
    assert cfg.interceptors == (
        InterceptorConfig.of("tomcat_encrypt", key=KEY, replay_window_ms=5000, replay_window_count=100),
        InterceptorConfig("failure_detector"),
    )
    assert cfg.unsupported == ("EncryptInterceptor@providerName",)
    assert len(config_warnings(caplog)) == 1
    assert_hidden(caplog.text + repr(cfg) + cfg.to_toml(), KEY)
    # Tomcat's replayWindowSize (remembered message numbers) and encryptionKeyString map too; case is free
    cfg = ClusterConfig.from_tomcat_xml(
        cluster_xml(
            f'<Interceptor className="{TI}EncryptInterceptor" encryptionAlgorithm="aes/gcm/nopadding" '
            f'encryptionKeyString="{KEY}" replayWindowSize="1024"/>'
        )
    )
    assert cfg.interceptors == (InterceptorConfig.of("tomcat_encrypt", key=KEY, replay_window_count=1024),)
    assert cfg.unsupported == ()


@pytest.mark.parametrize(
    ("algorithm", "shown"),
    [
        (None, "'AES/CBC/PKCS5Padding' (Tomcat's default"),  # absent = Tomcat's default, CBC
        ("AES/CBC/PKCS5Padding", "'AES/CBC/PKCS5Padding' is not supported"),
        ("AES/GCM/PKCS5Padding", "'AES/GCM/PKCS5Padding' is not supported"),
        ("DES/GCM/NoPadding", "'DES/GCM/NoPadding' is not supported"),
    ],
)
def test_unsupported_encrypt_algorithm_skips_the_interceptor(
    caplog: pytest.LogCaptureFixture, algorithm: str | None, shown: str
) -> None:
    attribute = "" if algorithm is None else f' encryptionAlgorithm="{algorithm}"'
    xml = cluster_xml(
        f'<Interceptor className="{TI}EncryptInterceptor"{attribute} encryptionKey="{KEY}"/>'
        f'<Interceptor className="{TI}TcpFailureDetector"/>'
    )
    with caplog.at_level(logging.WARNING, logger="tribes.config"):
        cfg = ClusterConfig.from_tomcat_xml(xml)
    assert cfg.interceptors == (InterceptorConfig("failure_detector"),)
    assert cfg.unsupported == (f"Interceptor({TI}EncryptInterceptor)",)
    messages = config_warnings(caplog)
    assert len(messages) == 2
    assert shown in messages[0] and "AES/GCM/NoPadding" in messages[0]
    assert_hidden(caplog.text, KEY)


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        ("", "interceptors.tomcat_encrypt.key"),
        (f'encryptionKey="{KEY[:-2]}"', "interceptors.tomcat_encrypt.key"),
        (f'encryptionKey="{KEY}" replayWindowTime="soon"', "interceptors.tomcat_encrypt.replay_window_ms"),
        (f'encryptionKey="{KEY}" replayWindowSize="0"', "interceptors.tomcat_encrypt.replay_window_count"),
    ],
)
def test_encrypt_interceptor_xml_errors(attributes: str, field: str) -> None:
    xml = cluster_xml(
        f'<Interceptor className="{TI}EncryptInterceptor" encryptionAlgorithm="AES/GCM/NoPadding" '
        f"{attributes}/>"
    )
    with pytest.raises(ConfigError) as err:
        ClusterConfig.from_tomcat_xml(xml)
    assert err.value.field == field
    assert_hidden(str(err.value), KEY[:-2])


# ---------------------------------------------------------------------------------------------------------
# The core JSON


def test_core_json_has_the_documented_shape() -> None:
    doc = json.loads(ClusterConfig.local().to_core_json())
    assert set(doc) == {
        "name",
        "send_options",
        "insecure",
        "security",
        "worker_threads",
        "event_queue_size",
        "membership",
        "receiver",
        "sender",
        "interceptors",
    }
    assert set(doc["membership"]) == {
        "address",
        "port",
        "frequency_ms",
        "drop_time_ms",
        "bind",
        "ttl",
        "domain",
        "payload",
        "local_loopback_disabled",
        "static_members",
        "max_members",
    }
    assert set(doc["receiver"]) == {
        "address",
        "port",
        "auto_bind",
        "max_frame",
        "max_connections",
        "idle_timeout_ms",
    }
    assert doc["security"] == {"secrets": [], "replay_window_ms": 10000, "replay_cache": 16384}
    assert doc["membership"]["max_members"] == 1024
    assert doc["receiver"]["idle_timeout_ms"] == 60000
    assert set(doc["sender"]) == {"timeout_ms", "connect_timeout_ms", "max_retries", "keepalive"}
    assert doc["interceptors"] == [
        {"name": "dispatch", "options": {"max_queue_bytes": 67108864}},
        {
            "name": "failure_detector",
            "options": {"connect_timeout_ms": 1000, "remove_suspects_timeout_ms": 300000},
        },
    ]
    assert doc["send_options"] == 2
    assert doc["membership"]["bind"] == "127.0.0.1"
    assert doc["membership"]["ttl"] == 0
    assert doc["membership"]["domain"] == [] and doc["membership"]["static_members"] == []


def test_core_json_resolves_bind_for_the_default_config() -> None:
    doc = json.loads(ClusterConfig().to_core_json())
    assert doc["membership"]["bind"] == "127.0.0.1"  # never null: loopback when unset
    assert doc["membership"]["ttl"] is None
    v6 = json.loads(
        ClusterConfig.from_dict(
            {"membership": {"address": "FF02::1:4"}, "receiver": {"address": "::1"}}
        ).to_core_json()
    )
    assert v6["membership"]["bind"] == "::1"
    assert v6["membership"]["address"] == "ff02::1:4"


def test_core_json_converts_bytes_options_and_hosts() -> None:
    cfg = ClusterConfig.local(
        send_options="use_ack,sync",
        membership={
            "domain": "ab",
            "payload": b"\x00\x01",
            "static_members": [
                {"host": "localhost", "port": 4001, "unique_id": list(range(16)), "domain": "{5}"}
            ],
        },
        interceptors=["domain_filter", ("compression", {"codec": "lz4"})],
    )
    doc = json.loads(cfg.to_core_json())
    assert doc["send_options"] == 6
    assert doc["membership"]["domain"] == [97, 98]
    assert doc["membership"]["payload"] == [0, 1]
    assert doc["membership"]["static_members"] == [
        {"host": "127.0.0.1", "port": 4001, "unique_id": list(range(16)), "domain": [5]}
    ]
    # domain_filter without a domain filters on the membership domain
    assert doc["interceptors"] == [
        {"name": "domain_filter", "options": {"domain": [97, 98]}},
        {"name": "compression", "options": {"codec": "lz4", "min_size": 0}},
    ]


def test_core_json_unresolvable_static_host_names_the_member(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    cfg = ClusterConfig.local(membership={"static_members": ["127.0.0.1:4001", "node-b.invalid:4002"]})
    with pytest.raises(ConfigError, match=r"cannot resolve 'node-b\.invalid'") as err:
        cfg.to_core_json()
    assert err.value.field == "membership.static_members[1].host"


def test_core_json_check_can_be_skipped_and_insecure_is_passed() -> None:
    cfg = ClusterConfig.from_dict({"receiver": {"address": "10.1.2.3"}})
    doc = json.loads(cfg.to_core_json(check=False))
    assert doc["receiver"]["address"] == "10.1.2.3"
    assert doc["insecure"] is False
    assert json.loads(dataclasses.replace(cfg, insecure=True).to_core_json())["insecure"] is True


def test_core_json_full_config_matches_its_fields() -> None:
    doc = json.loads(expected_full_config().to_core_json())
    assert doc["name"] == "shop" and doc["worker_threads"] == 4 and doc["event_queue_size"] == 1024
    assert doc["membership"]["port"] == 45601 and doc["membership"]["bind"] == "10.0.0.5"
    assert doc["membership"]["local_loopback_disabled"] is True
    assert doc["membership"]["static_members"][1]["unique_id"] == [*range(15), 255]
    assert doc["receiver"] == {
        "address": "10.0.0.5",
        "port": 4100,
        "auto_bind": 10,
        "max_frame": 1 << 20,
        "max_connections": 64,
        "idle_timeout_ms": 30_000,
    }
    assert doc["membership"]["max_members"] == 64
    assert doc["security"] == {
        "secrets": [FULL_SECRET, FULL_OLD_SECRET],
        "replay_window_ms": 5000,
        "replay_cache": 4096,
    }
    assert doc["sender"] == {
        "timeout_ms": 5000,
        "connect_timeout_ms": 500,
        "max_retries": 2,
        "keepalive": False,
    }
    assert [i["name"] for i in doc["interceptors"]] == [
        "order",
        "fragmentation",
        "compression",
        "domain_filter",
        "tomcat_encrypt",
        "dispatch",
        "failure_detector",
    ]
    assert doc["interceptors"][4]["options"] == {
        "key": FULL_KEY.lower(),
        "replay_window_ms": 20_000,
        "replay_window_count": 1000,
        "format": "timestamped",
    }


# ---------------------------------------------------------------------------------------------------------
# Documentation


@pytest.mark.parametrize(
    "cls", [ClusterConfig, MembershipConfig, ReceiverConfig, SenderConfig, StaticMember, InterceptorConfig]
)
def test_every_field_is_documented(cls: type[Any]) -> None:
    assert cls.__doc__
    for f in dataclasses.fields(cls):
        assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no doc"


def test_config_reference_lists_every_field_and_option() -> None:
    text = config_reference()
    for cls in (ClusterConfig, MembershipConfig, ReceiverConfig, SenderConfig, StaticMember):
        for f in dataclasses.fields(cls):
            if f.name != "unsupported":
                assert f"`{f.name}`" in text
    for option in ("max_queue_bytes", "remove_suspects_timeout_ms", "max_in_flight", "codec", "interval"):
        assert f"`{option}`" in text
    for option in ("tomcat_encrypt", "key", "replay_window_count"):
        assert f"`{option}`" in text
    assert "| | `key` | `required` |" in text
