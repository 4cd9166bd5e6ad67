"""The session value codec (tribes.codec): round trips that keep types, clear errors, hostile bytes.

The codec is msgpack plus ext types (table in rust/session/codec.rs); these tests go through the Python
API, which converts straight between Python objects and bytes in Rust.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import inspect
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tribes import _core, codec
from tribes.errors import ProtocolError

MAX_DEPTH = 64

# --------------------------------------------------------------------------------------------------
# Comparison that sees what == hides: types, -0.0, NaN, tz offsets, fold, dict order
# --------------------------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """True when ``b`` is ``a`` come back: same types all the way down, same values, NaN == NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, Decimal):
        return str(a) == str(b)  # sNaN cannot be compared with ==; str keeps the sign of zero too
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, (set, frozenset)):
        # Equal sets encode to equal bytes (items sorted by their encoding); NaN items compare too.
        return len(a) == len(b) and codec.dumps(a) == codec.dumps(b)
    if isinstance(a, (datetime, time)):
        return (
            a == b
            and a.fold == b.fold
            and a.utcoffset() == b.utcoffset()
            and (a.tzinfo is None) == (b.tzinfo is None)
        )
    return bool(a == b)


# --------------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------------

offsets = st.timedeltas(
    min_value=-timedelta(hours=24) + timedelta(microseconds=1),
    max_value=timedelta(hours=24) - timedelta(microseconds=1),
)
tzinfos = st.one_of(st.none(), st.just(UTC), st.builds(timezone, offsets))
# Any int, including ones far beyond 64 bits (shifted by up to 300 bits) and the 64-bit edges.
big_ints = st.one_of(
    st.integers(),
    st.tuples(st.integers(), st.integers(0, 300)).map(lambda t: t[0] << t[1]),
    st.sampled_from([63, 64, 200]).flatmap(lambda b: st.sampled_from([2**b - 1, 2**b, -(2**b), -(2**b) - 1])),
)
hashable_leaves = st.one_of(
    st.none(),
    st.booleans(),
    big_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(),
    st.datetimes(timezones=tzinfos, allow_imaginary=True),
    st.dates(),
    st.times(timezones=tzinfos),
    st.timedeltas(),
    st.uuids(),
    st.decimals(allow_nan=False, allow_infinity=True),
    st.sampled_from([Decimal("NaN"), Decimal("-0"), Decimal("1E+999"), Decimal("-0.000")]),
)
hashables = st.recursive(
    hashable_leaves,
    lambda inner: st.one_of(st.tuples(inner, inner), st.frozensets(inner, max_size=4)),
    max_leaves=8,
)
leaves = st.one_of(hashable_leaves, st.just(Decimal("sNaN")))
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(hashables, inner, max_size=5),
        st.sets(hashables, max_size=5),
        st.frozensets(hashables, max_size=5),
    ),
    max_leaves=25,
)


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------


@given(values)
def test_round_trip_keeps_values_and_types(value: Any) -> None:
    data = codec.dumps(value)
    back = codec.loads(data)
    assert same(value, back), (value, back)
    assert codec.dumps(back) == data


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        2**63,
        2**64 - 1,
        2**64,
        -(2**63) - 1,
        2**200,
        -(2**200),
        0.0,
        -0.0,
        float("inf"),
        float("-inf"),
        1e-310,
        "",
        "héllo wörld ✓ 𝄞 日本語",
        b"",
        b"\x00\xff" * 100,
        [],
        (),
        (1,),
        ((1, 2), [3, (4,)]),
        [(1, 2)],
        {"a": (1, 2), (1, "k"): [1], 3: {4: 5}, None: set(), frozenset({1}): frozenset()},
        {1, 2, 3},
        frozenset({"a", (1, 2), frozenset({3})}),
        date(1, 1, 1),
        date(9999, 12, 31),
        datetime(2024, 2, 29, 23, 59, 59, 999999),
        datetime(2024, 7, 1, 12, tzinfo=UTC),
        datetime(2024, 7, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2024, 7, 1, 12, tzinfo=timezone(-timedelta(hours=23, minutes=59, microseconds=1))),
        datetime(2024, 11, 3, 1, 30, fold=1),
        time(0, 0),
        time(23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5)), fold=1),
        timedelta(0),
        timedelta(days=-999999999),
        timedelta(days=999999999, seconds=86399, microseconds=999999),
        uuid.UUID(int=0),
        uuid.UUID(int=2**128 - 1),
        uuid.uuid4(),
        Decimal("9.99"),
        Decimal("-0"),
        Decimal("1E+999999999"),
        Decimal("-Infinity"),
        Decimal("NaN123"),
        Decimal("sNaN"),
        Decimal("0." + "1" * 200),
    ],
    ids=repr,
)
def test_round_trip_examples(value: Any) -> None:
    back = codec.loads(codec.dumps(value))
    assert same(value, back), (value, back)


def test_nan_comes_back_as_nan() -> None:
    back = codec.loads(codec.dumps([float("nan"), {"x": float("nan")}]))
    assert isinstance(back, list)
    assert math.isnan(back[0]) and math.isnan(back[1]["x"])


def test_containers_keep_their_types() -> None:
    value = {"t": (1, [2, (3,)]), "s": {1, 2}, "f": frozenset({(1, 2)}), "l": [(), set()]}
    back = codec.loads(codec.dumps(value))
    assert back == value
    assert isinstance(back, dict)
    assert type(back["t"]) is tuple and type(back["t"][1]) is list and type(back["t"][1][1]) is tuple
    assert type(back["s"]) is set and type(back["f"]) is frozenset
    assert type(next(iter(back["f"]))) is tuple
    assert type(back["l"][0]) is tuple and type(back["l"][1]) is set


def test_dict_order_and_any_hashable_keys_are_kept() -> None:
    value = {3: "c", "b": 2, (1, 2): "t", None: 0, 1.5: "f", frozenset({1}): "fs", b"k": "b"}
    back = codec.loads(codec.dumps(value))
    assert isinstance(back, dict)
    assert list(back.items()) == list(value.items())


def test_aware_datetime_keeps_its_offset_not_its_zone() -> None:
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        paris = zoneinfo.ZoneInfo("Europe/Paris")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone database")
    summer = datetime(2024, 7, 1, 12, 30, tzinfo=paris)
    back = codec.loads(codec.dumps(summer))
    assert isinstance(back, datetime)
    assert back == summer  # the same instant
    assert back.replace(tzinfo=None) == summer.replace(tzinfo=None)  # the same wall clock
    assert back.tzinfo == timezone(timedelta(hours=2))  # a fixed offset, not Europe/Paris
    winter = codec.loads(codec.dumps(datetime(2024, 1, 1, tzinfo=paris)))
    assert isinstance(winter, datetime) and winter.utcoffset() == timedelta(hours=1)


def test_utc_comes_back_as_timezone_utc() -> None:
    back = codec.loads(codec.dumps(datetime(2024, 1, 1, tzinfo=timezone(timedelta(0)))))
    assert isinstance(back, datetime) and back.tzinfo is UTC


def test_equal_sets_encode_to_equal_bytes() -> None:
    # Same items, different insertion and deletion history: iteration order differs, bytes do not.
    a = {f"item-{i}" for i in range(50)}
    b = set(reversed(sorted(a)))
    for i in range(1000):
        b.add(i)
    for i in range(1000):
        b.discard(i)
    assert a == b
    assert codec.dumps(a) == codec.dumps(b)
    assert codec.dumps(frozenset(a)) == codec.dumps(frozenset(b))


# --------------------------------------------------------------------------------------------------
# The format: plain msgpack where msgpack has the type, documented ext types otherwise
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_bytes", "expected"),
    [
        # The msgpack spec's own example: {"compact": true, "schema": 0}.
        ("82 a7 636f6d70616374 c3 a6 736368656d61 00", {"compact": True, "schema": 0}),
        # Forms other encoders write that this encoder does not: uint32 1, str8, float32, array16,
        # map32, int64 -1, bin8.
        ("ce00000001", 1),
        ("d90161", "a"),
        ("ca3fc00000", 1.5),
        ("dc0002c0c3", [None, True]),
        ("df00000001 a161 d3ffffffffffffffff", {"a": -1}),
        ("c40100", b"\x00"),
        ("cf ffffffffffffffff", 2**64 - 1),
        # The msgpack timestamp extension (-1): an aware UTC datetime.
        ("d6ff 65937d25", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_plain_msgpack_decodes(hex_bytes: str, expected: Any) -> None:
    assert same(codec.loads(bytes.fromhex(hex_bytes)), expected)


@pytest.mark.parametrize(
    ("value", "hex_bytes"),
    [
        ({"a": 1}, "81 a161 01"),
        ([None, True, -1, 200], "94 c0 c3 ff ccc8"),
        (1.5, "cb 3ff8000000000000"),
        (b"\x01", "c4 01 01"),
        ((1, 2), "c7 03 02 920102"),  # ext 2 holding the array
        (set(), "d4 03 90"),  # ext 3
        (frozenset(), "d4 04 90"),  # ext 4
        (2**64, "c7 09 01 010000000000000000"),  # ext 1, two's complement
        (date(2024, 2, 29), "d6 06 07e8021d"),  # ext 6
        (datetime(2024, 7, 1, 12, 30, 15, 250000), "c7 0a 05 07e8 07 01 0c 1e 0f 03d090"),  # ext 5
        (
            datetime(2024, 7, 1, 12, 30, 15, 250000, tzinfo=timezone(timedelta(hours=-5))),
            "c7 0e 05 07e8 07 01 0c 1e 0f 03d090 ffffb9b0",  # + offset, i32 seconds
        ),
        (time(1, 2, 3, 4, fold=1), "c7 06 07 810203000004"),  # ext 7, fold in bit 7 of the hour
        (timedelta(days=-1, seconds=5, microseconds=6), "c7 0c 08 ffffffff 00000005 00000006"),
        (uuid.UUID(int=1), "d8 09 " + "00" * 15 + "01"),  # ext 9
        (Decimal("9.99"), "d6 0a 392e3939"),  # ext 10, the str
    ],
    ids=repr,
)
def test_encodings_are_as_documented(value: Any, hex_bytes: str) -> None:
    assert codec.dumps(value).hex() == hex_bytes.replace(" ", "")


def test_typical_session_change_is_smaller_than_pickle() -> None:
    import pickle

    change = {
        "user": "alice",
        "cart": [{"sku": f"A-{i}", "qty": 2, "price": Decimal("9.99")} for i in range(5)],
        "last_seen": datetime(2024, 7, 1, tzinfo=UTC),
        "flags": {"beta", "vip"},
        "visits": 42,
    }
    assert len(codec.dumps(change)) < len(pickle.dumps(change, protocol=5)) * 0.7


# --------------------------------------------------------------------------------------------------
# What cannot be encoded
# --------------------------------------------------------------------------------------------------


class Foo:
    """An application class: not encodable by the safe codec."""


class Colour(enum.IntEnum):
    RED = 1


class Point(NamedTuple):
    x: int
    y: int


@pytest.mark.parametrize(
    ("value", "type_name", "where"),
    [
        (object(), "object", ""),
        (Foo(), "Foo", ""),
        (lambda: 1, "function", ""),
        ({"a": [1, {"b": Foo()}]}, "Foo", "cart['a'][1]['b']"),
        ([1, 2, object()], "object", "cart[2]"),
        ({Foo(): 1}, "Foo", "cart (a dict key)"),
        (bytearray(b"x"), "bytearray", ""),
        (1j, "complex", ""),
        (range(3), "range", ""),
    ],
    ids=["object", "instance", "lambda", "nested", "list-item", "dict-key", "bytearray", "complex", "range"],
)
def test_unsupported_types_are_a_type_error_naming_attribute_and_type(
    value: Any, type_name: str, where: str
) -> None:
    with pytest.raises(TypeError) as info:
        codec.dumps(value, "cart")
    message = str(info.value)
    assert message.startswith("session attribute 'cart': cannot encode a value of type ")
    assert f"type {type_name}" in message
    assert where in message
    assert "allowed: None, bool, int, float, str, bytes, list, tuple, dict, set" in message
    assert 'serializer="pickle"' in message


@pytest.mark.parametrize(
    ("value", "base"),
    [
        (collections.OrderedDict(a=1), "dict"),
        (collections.defaultdict(list), "dict"),
        (Point(1, 2), "tuple"),
        (Colour.RED, "int"),
        (type("MyStr", (str,), {})("x"), "str"),
    ],
    ids=["OrderedDict", "defaultdict", "namedtuple", "IntEnum", "str-subclass"],
)
def test_subclasses_are_refused_with_a_hint(value: Any, base: str) -> None:
    with pytest.raises(TypeError, match=f"a subclass of {base} is not accepted"):
        codec.dumps(value, "x")


def test_default_name_is_value() -> None:
    with pytest.raises(TypeError, match=r"^session attribute 'value': "):
        codec.dumps(object())


def test_nesting_limit_on_encode() -> None:
    ok: Any = None
    for _ in range(MAX_DEPTH):
        ok = [ok]
    assert same(codec.loads(codec.dumps(ok)), ok)
    with pytest.raises(ValueError, match="nested deeper than 64"):
        codec.dumps([ok], "deep")
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="session attribute 'loop': containers nested deeper"):
        codec.dumps(cyclic, "loop")
    very_deep: Any = None
    for _ in range(100_000):
        very_deep = {"k": very_deep}
    with pytest.raises(ValueError):
        codec.dumps(very_deep)


def test_lone_surrogates_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="surrogates"):
        codec.dumps({"x": "\ud800"}, "name")


# --------------------------------------------------------------------------------------------------
# Hostile bytes
# --------------------------------------------------------------------------------------------------


@given(values)
def test_every_truncation_is_a_protocol_error(value: Any) -> None:
    data = codec.dumps(value)
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            codec.loads(data[:cut])


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    try:
        value = codec.loads(data)
    except ProtocolError:
        return
    # Whatever decodes is a supported value: it encodes again.
    codec.dumps(value)


@given(values, st.data())
def test_corrupted_encodings_decode_or_raise_protocol_error(value: Any, data: st.DataObject) -> None:
    raw = bytearray(codec.dumps(value))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ProtocolError):
        codec.loads(bytes(raw))


@pytest.mark.parametrize(
    "hex_bytes",
    [
        "",  # nothing
        "c1",  # reserved
        "c0c0",  # trailing bytes
        "a2fffe",  # not UTF-8
        "d47f00",  # unknown ext type
        "dd ffffffff",  # array of 4 G items in 5 bytes
        "db ffffffff 61",  # str of 4 GiB in 6 bytes
        "81 90 c0",  # {[]: None}: an unhashable key
        "d4 03 90".replace("90", "91 90"),  # a set holding a list
        "d6 06 07e8 021e",  # 30 February
        "c7 0e 05 07e8 07 01 0c 1e 0f 03d090 00015180",  # offset of +24 h
        "d6 0a 312e2e32",  # Decimal "1..2"
        "c7 00 01",  # empty big int
        "d5 09 0000",  # UUID of 2 bytes
    ],
)
def test_malformed_bytes_are_protocol_errors(hex_bytes: str) -> None:
    with pytest.raises(ProtocolError, match="cannot decode a session value"):
        codec.loads(bytes.fromhex(hex_bytes.replace(" ", "")))


def test_nesting_limit_on_decode() -> None:
    ok = b"\x91" * MAX_DEPTH + b"\xc0"
    assert codec.loads(ok) is not None
    with pytest.raises(ProtocolError, match="nested deeper than 64"):
        codec.loads(b"\x91" + ok)
    # A million levels: a clear error, no stack overflow.
    with pytest.raises(ProtocolError, match="nested deeper than 64"):
        codec.loads(b"\x91" * 1_000_000 + b"\xc0")
    # Tuples nest through ext payloads; they count too.
    nested = b"\xc0"
    for _ in range(MAX_DEPTH + 1):
        payload = b"\x91" + nested
        nested = b"\xc9" + len(payload).to_bytes(4, "big") + b"\x02" + payload
    with pytest.raises(ProtocolError, match="nested deeper than 64"):
        codec.loads(nested)


def test_protocol_error_is_a_tribes_error() -> None:
    from tribes.errors import TribesError

    with pytest.raises(TribesError):
        codec.loads(b"\xc1")


def test_dumps_and_loads_are_the_core_functions_with_their_documented_signatures() -> None:
    # No Python wrapper frame per call; the keyword names and the default of ``name`` are kept.
    assert codec.dumps is _core.dumps and codec.loads is _core.loads
    assert str(inspect.signature(codec.dumps)) == "(value, name='value')"
    assert str(inspect.signature(codec.loads)) == "(data)"
    assert codec.dumps.__doc__ and "``name`` is the session attribute's name" in codec.dumps.__doc__
    assert codec.loads.__doc__ and "ProtocolError" in codec.loads.__doc__
    assert codec.loads(data=codec.dumps(value=[1], name="x")) == [1]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: codec.dumps(), "missing required argument 'value'"),
        (lambda: codec.dumps(1, "a", "b"), "takes at most 2 arguments"),
        (lambda: codec.dumps(1, nmae="x"), "unexpected keyword argument 'nmae'"),
        (lambda: codec.dumps(1, value=2), "multiple values for argument 'value'"),
        (lambda: codec.dumps(1, name=3), "argument 'name' must be str, not int"),
        (lambda: codec.loads(), "missing required argument 'data'"),
        (lambda: codec.loads("x"), "argument 'data' must be bytes, not str"),
        (lambda: _core.encode_value(), "encode_value\\(\\) missing required argument 'obj'"),
        (lambda: _core.decode_value(bytearray(b"\\x01")), "must be bytes, not bytearray"),
    ],
)
def test_bad_arguments_are_type_errors(call: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        call()


def test_name_none_means_the_default_name() -> None:
    with pytest.raises(TypeError, match=r"^session attribute 'value': "):
        codec.dumps(object(), name=None)


# The datetime-like values both encoder paths must agree on: naive and aware, fold, offsets with
# microseconds, the ends of the ranges. Python source, run here and in a child process.
DATETIME_SAMPLES = """
from datetime import UTC, date, datetime, time, timedelta, timezone
tz = [None, UTC, timezone(timedelta(hours=-5, microseconds=7)), timezone(timedelta(hours=23, minutes=59))]
samples = []
for z in tz:
    samples += [
        datetime(2024, 3, 31, 2, 30, 15, 123456, tzinfo=z),
        datetime(2024, 11, 3, 1, 30, tzinfo=z, fold=1),
        datetime.min.replace(tzinfo=z),
        datetime.max.replace(tzinfo=z),
        time(0, 0, tzinfo=z),
        time(23, 59, 59, 999999, tzinfo=z, fold=1),
    ]
samples += [date.min, date.max, date(2024, 2, 29), timedelta(0), timedelta.min, timedelta.max,
            timedelta(days=-1, microseconds=1), [datetime(2001, 1, 1, tzinfo=UTC)] * 3]
"""


def test_the_datetime_c_api_checks_out_on_this_python() -> None:
    # If the self-check ever refuses the C API (a Python whose layout changed), the codec still
    # works through attribute access, but several times slower: this says so.
    assert _core._codec_uses_datetime_capi()


def test_the_datetime_c_api_path_and_the_attribute_path_agree() -> None:
    import json
    import os
    import subprocess
    import sys

    ns: dict[str, Any] = {}
    exec(DATETIME_SAMPLES, ns)
    fast = [codec.dumps(v).hex() for v in ns["samples"]]
    child = DATETIME_SAMPLES + (
        "import json, sys\n"
        "from tribes import codec\n"
        "blobs = json.loads(sys.stdin.read())\n"
        "back = [codec.loads(bytes.fromhex(b)) for b in blobs]\n"
        "assert back == samples, (back, samples)\n"
        "assert [type(b) for b in back] == [type(s) for s in samples]\n"
        "assert [getattr(b, 'fold', 0) for b in back] == [getattr(s, 'fold', 0) for s in samples]\n"
        "from tribes import _core\n"
        "assert not _core._codec_uses_datetime_capi()\n"
        "print(json.dumps([codec.dumps(v).hex() for v in samples]))\n"
    )
    env = dict(os.environ, TRIBES_CODEC_DATETIME_CAPI="0")
    out = subprocess.run(
        [sys.executable, "-c", child],
        input=json.dumps(fast),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == fast
    back = [codec.loads(bytes.fromhex(b)) for b in fast]
    assert back == ns["samples"]
    assert [getattr(b, "fold", 0) for b in back] == [getattr(s, "fold", 0) for s in ns["samples"]]


# -- the dict key cache kept across calls ------------------------------------------------------------


def test_short_str_keys_are_reused_across_decodes() -> None:
    blob = codec.dumps({"theme": 1, "lang": 2})
    first, second = codec.loads(blob), codec.loads(blob)
    assert first == second == {"theme": 1, "lang": 2}
    # The same str objects come back (one allocation and one hash per key, not per decode).
    assert [id(k) for k in first] == [id(k) for k in second]
    assert all(type(k) is str for k in second)


@pytest.mark.parametrize(
    "key",
    ["", "a", "é", "€uro", "😀" * 8, "k" * 31, "k" * 32, "k" * 33, "x" * 1000, "é" * 16, "é" * 17],
)
def test_keys_of_any_length_and_script_round_trip(key: str) -> None:
    for _ in range(3):  # miss, then hits
        back = codec.loads(codec.dumps({key: key, "other": 1}))
        assert back == {key: key, "other": 1}
        assert [type(k) for k in back] == [str, str]


def test_keys_longer_than_the_cache_limit_are_fresh_objects() -> None:
    blob = codec.dumps({"k" * 33: 1})
    a, b = codec.loads(blob), codec.loads(blob)
    assert isinstance(a, dict) and isinstance(b, dict) and a == b
    assert next(iter(a)) is not next(iter(b))


def test_non_str_keys_are_not_confused_with_cached_strs() -> None:
    value = {"1": "str", 1: "int", b"1": "bytes", (1,): "tuple", None: "none", 1.5: "float"}
    for _ in range(3):
        back = codec.loads(codec.dumps(value))
        assert back == value
        assert [type(k) for k in back] == [type(k) for k in value]


def test_many_distinct_keys_evicting_each_other_still_decode_exactly() -> None:
    # Far more keys than cache slots, in several passes, so slots are overwritten again and again,
    # and keys that differ only in one byte (same length, same ends) must not be taken for each other.
    keys = [f"key-{i:05d}" for i in range(5000)] + [f"{i:032d}" for i in range(2000)]
    for _ in range(2):
        for start in range(0, len(keys), 500):
            chunk = {k: i for i, k in enumerate(keys[start : start + 500])}
            assert codec.loads(codec.dumps(chunk)) == chunk
    for k in keys[:50] + keys[-50:]:
        assert codec.loads(codec.dumps({k: 0})) == {k: 0}


@pytest.mark.parametrize("raw", [b"\xff", b"a\xff", b"\xc3", b"\xed\xa0\x80", b"k" * 20 + b"\x80"])
def test_invalid_utf8_keys_are_protocol_errors_before_and_after_a_valid_key_is_cached(raw: bytes) -> None:
    bad = b"\x81" + bytes([0xA0 | len(raw)]) + raw + b"\x01"
    with pytest.raises(ProtocolError, match="cannot decode a session value"):
        codec.loads(bad)
    # A valid key of the same length cached meanwhile must not let the invalid bytes through.
    valid = "v" * len(raw)
    assert codec.loads(codec.dumps({valid: 1})) == {valid: 1}
    with pytest.raises(ProtocolError, match="cannot decode a session value"):
        codec.loads(bad)


def test_decoding_from_many_threads_gives_equal_values() -> None:
    import threading

    value = {"cart": [{"sku": f"A-{i}", "qty": i} for i in range(20)], "prefs": {"lang": "en"}}
    blob = codec.dumps(value)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(2000):
                assert codec.loads(blob) == value
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_a_decode_nested_in_a_decode_goes_without_the_cache() -> None:
    # A garbage collection during a decode runs gc callbacks, Python code that may decode too (as a
    # finalizer could): the nested decode finds the cache taken and must neither wait nor fail.
    import gc

    inner_blob = codec.dumps({"inner": [1, 2], "lang": "en"})
    outer = {f"k{i}": {"lang": "en", "n": i} for i in range(300)}
    outer_blob = codec.dumps(outer)
    nested: list[object] = []

    def callback(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            nested.append(codec.loads(inner_blob))

    old = gc.get_threshold()
    gc.callbacks.append(callback)
    try:
        gc.set_threshold(1)
        back = codec.loads(outer_blob)
    finally:
        gc.set_threshold(*old)
        gc.callbacks.remove(callback)
    assert back == outer
    assert nested, "no collection ran during the decode"
    assert all(v == {"inner": [1, 2], "lang": "en"} for v in nested)


# -- the encoder's reused output buffer and the lazily read name -----------------------------------


def test_an_encode_nested_in_an_encode_does_not_clobber_the_outer_output() -> None:
    # A tzinfo's utcoffset() runs Python code in the middle of an encode; if it encodes too, each
    # call must still get its own bytes.
    inner_blobs: list[bytes] = []
    inner = {"inner": "x" * 100, "n": list(range(50))}

    class Encoding(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta:
            inner_blobs.append(codec.dumps(inner))
            return timedelta(hours=2)

        def dst(self, dt: datetime | None) -> timedelta:
            return timedelta(0)

        def tzname(self, dt: datetime | None) -> str:
            return "encoding"

    value = {"before": "b" * 300, "when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=Encoding()), "after": [1, 2]}
    blob = codec.dumps(value)
    expected = {**value, "when": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))}
    assert codec.loads(blob) == expected
    assert inner_blobs and all(codec.loads(b) == inner for b in inner_blobs)
    # A big value, then small ones: each output is exactly its own encoding.
    big = codec.dumps("y" * 200_000)
    assert len(big) == 200_005 and codec.loads(big) == "y" * 200_000
    assert codec.dumps(1) == b"\x01"


def test_a_container_changed_by_python_code_during_its_encode_is_an_error_not_a_crash() -> None:
    # The encoder walks containers through borrowed references; Python code that runs mid-encode
    # (a tzinfo's utcoffset()) and empties the container being walked must not leave it reading
    # freed items.
    targets: list[Any] = []

    class Clearing(tzinfo):
        def utcoffset(self, dt: datetime | None) -> timedelta:
            for t in targets:
                t.clear()
            return timedelta(hours=1)

    when = datetime(2024, 1, 1, tzinfo=Clearing())
    d = {"when": when, "b": "x" * 50, "c": [1]}
    targets[:] = [d]
    with pytest.raises(ValueError, match="a dict changed size while encoded"):
        codec.dumps(d)
    lst = [when, "y" * 50, {"k": 1}]
    targets[:] = [lst]
    with pytest.raises(ValueError, match="a list changed size while encoded"):
        codec.dumps(lst)
    # The same values, left alone, encode.
    targets.clear()
    assert codec.loads(codec.dumps([when, "z"]))[1] == "z"


def test_the_name_appears_as_given_in_errors_and_must_be_a_str() -> None:
    with pytest.raises(TypeError, match=r"^session attribute 'panier €': .* at panier €\[0\]"):
        codec.dumps([object()], "panier €")
    with pytest.raises(TypeError, match=r"^session attribute 'cart': "):
        codec.dumps(object(), name="cart")
    with pytest.raises(TypeError):
        codec.dumps(1, 5)  # type: ignore[arg-type]
