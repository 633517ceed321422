"""A method's bench.toml section as a frozen dataclass, checked before any data is read.

Each method declares its keys once (a dataclass with defaults), the few keys that take one of a set
of strings, and those that must be >= 1; every wrong key, type or value becomes one BenchError line
naming `[method].key`, what was expected and what was given.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from bench.errors import BenchError, shown

T = TypeVar("T")


def parse_section(cls: type[T], section: dict[str, Any], name: str, *,
                  choices: dict[str, tuple[Any, ...]] | None = None, positive: tuple[str, ...] = ()) -> T:
    """Defaults < the section's values. Numbers must be >= 0 (>= 1 for `positive`); ints are accepted
    where a float is expected; `presets` is skipped and `preset` kept as given."""
    where, choices = f"bench.toml [{name}]", choices or {}
    defaults = cls()
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key == "presets":
            continue
        if key not in known:
            raise BenchError(f"{where}.{key}: unknown key. Known: {', '.join(sorted(known))}")
        if key == "preset":
            values[key] = value
            continue
        default = getattr(defaults, key)
        if key in choices:
            ok, expected = value in choices[key], f"one of {', '.join(map(str, choices[key]))}"
        elif isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= (1 if key in positive else 0)
            expected = f"an integer >= {1 if key in positive else 0}"
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
            expected, value = "a number >= 0", float(value) if ok else value
        else:
            ok, expected = isinstance(value, type(default)), type(default).__name__
        if not ok:
            raise BenchError(f"{where}.{key}: expected {expected}, got {shown(value)}")
        values[key] = value
    return cls(**values)
