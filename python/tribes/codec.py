"""The safe value codec for session attributes: compact msgpack bytes, never pickle.

Supported types, and only these exact types (a subclass such as ``OrderedDict``, ``defaultdict``, a
named tuple or an ``IntEnum`` would come back as its base type, so it is refused with a ``TypeError``
that says how to convert it):

- ``None``, ``bool``, ``int`` (any size), ``float`` (``-0.0``, ``nan`` and ``inf`` included), ``str``,
  ``bytes``;
- ``list``, ``tuple``, ``dict`` (keys may be any supported hashable value), ``set``, ``frozenset``,
  nested up to 64 levels;
- ``datetime.datetime``, ``datetime.date``, ``datetime.time``, ``datetime.timedelta``, ``uuid.UUID``,
  ``decimal.Decimal``.

Time zones: an aware ``datetime`` or ``time`` keeps its UTC *offset*, not its time zone. A
``ZoneInfo("Europe/Paris")`` datetime comes back as the same wall clock and instant with
``timezone(timedelta(hours=2))`` (or ``+01:00`` in winter), an offset of zero as ``timezone.utc``; the
``fold`` attribute is kept. A ``time`` whose tzinfo cannot give an offset without a date (``ZoneInfo``)
has ``utcoffset() is None``, is naive to Python, and comes back naive.

Equal sets encode to equal bytes (their items are written sorted by their encoded form), so comparing
encodings detects changes. Anything else is a ``TypeError`` naming the attribute and the type; the
session managers can be configured with ``serializer="pickle"`` instead, for clusters whose traffic is
authenticated. Bytes from the network are never unpickled by this module.

The format is plain msgpack plus ext types for what msgpack lacks (see ``rust/session/codec.rs`` for
the table), so plain msgpack from any encoder decodes with :func:`loads`.
"""

from __future__ import annotations

from ._core import decode_value, encode_value

__all__ = ["dumps", "loads"]


def dumps(value: object, name: str = "value") -> bytes:
    """Encode ``value`` (one of the supported types, nested) to bytes.

    ``name`` is the session attribute's name, used in error messages only. Raises ``TypeError`` for
    an unsupported type (the message names the attribute, the type and where it sits, e.g.
    ``cart[2]['price']``), and ``ValueError`` for nesting deeper than 64 levels (or a container that
    holds itself) or a ``str`` with lone surrogates.
    """
    return encode_value(value, name)


def loads(data: bytes) -> object:
    """Decode bytes made by :func:`dumps` (or any msgpack encoder) back into a value.

    Raises :class:`tribes.errors.ProtocolError` when ``data`` is not exactly one valid encoding:
    truncated, trailing bytes, unknown ext types, invalid dates, nesting deeper than 64 levels, an
    unhashable dict key or set item. Never runs code chosen by the bytes.
    """
    return decode_value(data)
