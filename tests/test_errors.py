"""The exception hierarchy in tribes.errors: bases, ConfigError's field, ChannelError's faulty members."""

from __future__ import annotations

import pickle
from dataclasses import FrozenInstanceError, dataclass

import pytest

from tribes.errors import (
    ChannelError,
    ConfigError,
    FaultyMember,
    NotStartedError,
    ProtocolError,
    TribesError,
    member_label,
)


@dataclass(frozen=True)
class FakeMember:
    """Stands in for tribes.Member (host and port attributes), which comes from the Rust core."""

    host: str
    port: int


def test_hierarchy_subclasses_the_standard_exceptions() -> None:
    assert issubclass(ConfigError, TribesError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ChannelError, TribesError)
    assert issubclass(ProtocolError, TribesError)
    assert issubclass(NotStartedError, TribesError)
    assert issubclass(NotStartedError, RuntimeError)
    assert issubclass(TribesError, Exception)
    assert not issubclass(ChannelError, ValueError)


def test_config_error_is_caught_as_value_error() -> None:
    with pytest.raises(ValueError, match=r"^receiver\.port: must be 1\.\.65535, got 70000$"):
        raise ConfigError("must be 1..65535, got 70000", "receiver.port")


def test_config_error_message_starts_with_the_field() -> None:
    err = ConfigError("must be 1..65535, got 70000", "membership.port")
    assert err.field == "membership.port"
    assert err.reason == "must be 1..65535, got 70000"
    assert str(err) == "membership.port: must be 1..65535, got 70000"


def test_config_error_does_not_prefix_twice() -> None:
    err = ConfigError("membership.port: must be 1..65535", "membership.port")
    assert str(err) == "membership.port: must be 1..65535"
    assert err.reason == "must be 1..65535"


def test_config_error_without_field() -> None:
    err = ConfigError("invalid TOML")
    assert err.field is None
    assert err.reason == "invalid TOML"
    assert str(err) == "invalid TOML"


def test_config_error_pickles_with_its_field() -> None:
    err = pickle.loads(pickle.dumps(ConfigError("bad", "sender.timeout_ms")))
    assert isinstance(err, ConfigError)
    assert err.field == "sender.timeout_ms"
    assert err.reason == "bad"
    assert str(err) == "sender.timeout_ms: bad"


def test_channel_error_lists_faulty_members_with_causes() -> None:
    err = ChannelError(
        "Send failed",
        [(FakeMember("10.0.0.2", 4000), "connection refused"), (FakeMember("10.0.0.3", 4001), "ack timeout")],
    )
    assert str(err) == (
        "Send failed; Faulty members: tcp://10.0.0.2:4000 (connection refused), "
        "tcp://10.0.0.3:4001 (ack timeout)"
    )
    assert err.message == "Send failed"


def test_channel_error_normalises_tuples_to_faulty_member() -> None:
    a, b = FakeMember("h1", 1), FakeMember("h2", 2)
    given = FaultyMember(b, "nack")
    err = ChannelError("x", [(a, "timeout"), given])
    assert err.faulty == (FaultyMember(a, "timeout"), given)
    assert all(isinstance(item, FaultyMember) for item in err.faulty)
    assert err.members == (a, b)


def test_channel_error_cause_is_text_even_from_an_exception() -> None:
    err = ChannelError("x", [(FakeMember("h", 1), ConnectionRefusedError("refused"))])
    assert err.faulty[0].cause == "refused"


def test_channel_error_positional_args_as_the_core_passes_them() -> None:
    # Rust raises ChannelError(message, [(member, cause), ...]) with positional arguments.
    err = ChannelError("Unable to send message", [(("127.0.0.1", 4001), "connect timeout")])
    assert str(err) == "Unable to send message; Faulty members: tcp://127.0.0.1:4001 (connect timeout)"
    assert err.args[0] == "Unable to send message"


def test_channel_error_without_faulty_members() -> None:
    assert str(ChannelError("stopped")) == "stopped"
    assert ChannelError("stopped").faulty == ()
    assert ChannelError("stopped", None).faulty == ()


def test_channel_error_rejects_malformed_entries() -> None:
    with pytest.raises(TypeError, match="faulty members"):
        ChannelError("x", ["not a pair"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        ChannelError("x", [(1, 2, 3)])  # type: ignore[list-item]


def test_channel_error_pickles() -> None:
    err = ChannelError("x", [(FakeMember("h", 1), "timeout")])
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, ChannelError)
    assert copy.faulty == err.faulty
    assert str(copy) == str(err)


def test_faulty_member_is_frozen() -> None:
    item = FaultyMember(FakeMember("h", 1), "timeout")
    with pytest.raises(FrozenInstanceError):
        item.cause = "other"  # type: ignore[misc]
    assert str(item) == "tcp://h:1 (timeout)"


@pytest.mark.parametrize(
    ("member", "label"),
    [
        (FakeMember("10.0.0.1", 4000), "tcp://10.0.0.1:4000"),
        (FakeMember("::1", 4000), "tcp://[::1]:4000"),
        (("node-a", 4005), "tcp://node-a:4005"),
        (type("RawHost", (), {"host": b"\x0a\x00\x00\x09", "port": 4000})(), "tcp://10.0.0.9:4000"),
        ("already a name", "already a name"),
    ],
)
def test_member_label(member: object, label: str) -> None:
    assert member_label(member) == label
