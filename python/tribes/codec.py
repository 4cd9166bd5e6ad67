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

# ``dumps`` and ``loads`` are the Rust functions themselves (their docstrings are set there): a Python
# wrapper frame would cost as much as encoding a short str.
from ._core import dumps, loads

__all__ = ["dumps", "loads"]
