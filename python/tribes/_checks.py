"""Value checks shared by the configuration classes: each raises ConfigError naming the field."""

from __future__ import annotations

from .errors import ConfigError

MAX_INT = 2**31 - 1  # upper bound of every count and duration (Java int; safe for any Rust integer type)


def doc(text: str) -> dict[str, str]:
    """Field metadata carrying its one-line description."""
    return {"doc": text}


def show(value: object) -> str:
    """A value for an error message: its repr and type."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _range_text(lo: int, hi: int) -> str:
    return f">= {lo}" if hi >= MAX_INT else f"{lo}..{hi}"


def check_int(value: object, fld: str, lo: int = 0, hi: int = MAX_INT) -> int:
    """An int (not a bool) in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"must be an integer, got {show(value)}", fld)
    if not lo <= value <= hi:
        raise ConfigError(f"must be {_range_text(lo, hi)}, got {value}", fld)
    return value


def check_bool(value: object, fld: str) -> bool:
    """True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"must be true or false, got {show(value)}", fld)
    return value


def check_str(value: object, fld: str) -> str:
    """A string."""
    if not isinstance(value, str):
        raise ConfigError(f"must be a string, got {show(value)}", fld)
    return value
