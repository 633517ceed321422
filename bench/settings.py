"""A method's bench.toml section as a frozen dataclass, checked before any data is read.

Each method declares its keys once (a dataclass with defaults), the few keys that take one of a set
of strings, those that must be >= 1, and hooks for the keys no type rule covers (a list of module
names, "auto" or a number); every wrong key, type or value becomes one BenchError line naming
`[method].key`, what was expected and what was given. The eval section and methods without a
dataclass go through the same type rule (`check_value`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any, TypeVar

from bench.errors import BenchError, shown

T = TypeVar("T")
# A hook returns the value to keep, or raises ValueError whose text says what was expected.
Hook = Callable[[Any], Any]


def check_value(where: str, default: Any, value: Any, *, choices: tuple[Any, ...] | None = None,
                positive: bool = False) -> Any:
    """The one type rule: a value has its default's type (ints where a float is expected become floats;
    numbers are >= 0, or >= 1 when `positive`; a choice is one of `choices`). String and None defaults
    are left to choices or hooks. Returns the value to keep."""
    if choices is not None:
        ok, expected = value in choices, f"one of {', '.join(map(str, choices))}"
    elif isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= (1 if positive else 0)
        expected = f"an integer >= {1 if positive else 0}"
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        expected, value = "a number >= 0", float(value) if ok else value
    elif isinstance(default, list | tuple):
        ok, expected = isinstance(value, list | tuple), "a list, e.g. [5, 10, 20]"
    elif default is None or isinstance(default, str):
        ok, expected = default is None or isinstance(value, str), "a string"
    else:
        ok, expected = isinstance(value, type(default)), type(default).__name__
    if not ok:
        raise BenchError(f"{where}: expected {expected}, got {shown(value)}")
    return value


def parse_section(cls: type[T], section: dict[str, Any], name: str, *,
                  choices: dict[str, tuple[Any, ...]] | None = None, positive: tuple[str, ...] = (),
                  hooks: dict[str, Hook] | None = None) -> T:
    """Defaults < the section's values; `presets` is skipped and `preset` kept as given."""
    where, choices, hooks = f"bench.toml [{name}]", choices or {}, hooks or {}
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
        elif key in hooks:
            try:
                values[key] = hooks[key](value)
            except ValueError as error:
                raise BenchError(f"{where}.{key}: expected {error}, got {shown(value)}") from None
        else:
            values[key] = check_value(f"{where}.{key}", getattr(defaults, key), value, choices=choices.get(key),
                                      positive=key in positive)
    return cls(**values)


def non_empty_strings(what: str, split_commas: bool = False) -> Hook:
    """A hook: a non-empty list of non-empty strings (`what` says which, e.g. item text fields);
    `split_commas` also takes "a,b" as given on the command line."""
    def check(value: Any) -> list[str]:
        if split_commas and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not (isinstance(value, list | tuple) and value and all(isinstance(v, str) and v for v in value)):
            raise ValueError(f"a list of {what}")
        return list(value)

    return check


# LoRA targets: also given as "q_proj,v_proj" with --set.
module_names = non_empty_strings('module names, e.g. ["q_proj", "v_proj"]', split_commas=True)


def positive_ints(what: str) -> Hook:
    """A hook: a non-empty list of integers >= 1 (`what` says which, e.g. layer widths)."""
    def check(value: Any) -> list[int]:
        if not (isinstance(value, list) and value
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            raise ValueError(f"a list of positive {what}")
        return list(value)

    return check


def word_or_number(words: tuple[str, ...], integer: bool = False, minimum: float = 0) -> Hook:
    """A hook: one of `words` (e.g. "auto") or a number >= `minimum` (an integer when `integer`)."""
    def check(value: Any) -> Any:
        if value in words:
            return value
        number = int if integer else int | float
        if isinstance(value, bool) or not isinstance(value, number) or value < minimum:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{' or '.join(map(repr, words))} or {kind} >= {minimum:g}".replace("'", '"'))
        return value

    return check


def fraction_below_one(value: Any) -> float:
    """A hook: a dropout-like number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError("a number in [0, 1)")
    return float(value)


def training_identity(settings: dict[str, Any], neutral: dict[str, Any], *, leave_out: Iterable[str] = (),
                      hashed_before: Iterable[str] = ()) -> dict[str, Any]:
    """The settings that name a training (its work dir's key): without `leave_out` (budgets, evaluation-only
    keys) and without keys at their `[hash_neutral]` value (RunContext.hash_neutral), the rule run records
    follow, so adding a setting never orphans a resumable work dir. `hashed_before`: neutral keys an older
    key scheme already hashed; they stay in, so the work dirs made then keep their identity."""
    skip, kept = set(leave_out), set(hashed_before)
    return {key: value for key, value in settings.items()
            if key not in skip and (key in kept or key not in neutral or jsonable(value) != jsonable(neutral[key]))}


def jsonable(value: Any) -> Any:
    """Tuples as lists, so settings compare equal to bench.toml's lists and to themselves after a JSON round
    trip (a dataclass default is often a tuple)."""
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value
