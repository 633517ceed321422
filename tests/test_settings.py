"""One settings path: every method's dataclass defaults are bench.toml's, and the one parser names the
key, what was expected and what was given."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from bench.config import load_config
from bench.errors import BenchError
from bench.registry import configured_registry
from bench.settings import check_value, parse_section


def parsers() -> dict[str, Any]:
    config = load_config()
    registry = configured_registry(config)
    return {name: registry.load(name).settings_parser for name in registry.names()
            if registry.load(name).settings_parser is not None}


def same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return a == b and type(a) is type(b) or (isinstance(a, float) and isinstance(b, float) and a == b)


@pytest.mark.parametrize("method", sorted(parsers()))
def test_defaults_are_bench_toml_values(method: str):
    """bench.toml lists every key of a method with its default, and the dataclass agrees, so reading one
    of them never misleads about the other (a default changed in one place only fails here)."""
    section = {k: v for k, v in load_config()[method].items() if k != "presets"}
    parsed = parsers()[method]({})
    declared = {f.name for f in fields(parsed)} - {"preset"}
    assert declared - set(section) == set(), f"keys of {method}'s settings missing from bench.toml [{method}]"
    differing = {key: (getattr(parsed, key), section[key]) for key in declared
                 if not same(getattr(parsed, key), section[key])}
    assert differing == {}


def test_a_default_that_differs_is_found():
    """The twin: a dataclass whose default moved away from the section is reported."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Moved:
        epochs: int = 3

    assert not same(Moved().epochs, 4) and same(Moved().epochs, 3) and not same(1, 1.0) and same((1, 2), [1, 2])


def test_one_rule_for_every_wrong_value():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Section:
        epochs: int = 3
        lr: float = 1e-3
        loss: str = "ce"
        flag: bool = False

    assert parse_section(Section, {"lr": 1}, "x").lr == 1.0
    for bad, message in [({"epochs": "ten"}, r"\[x\]\.epochs: expected an integer >= 0, got 'ten'"),
                         ({"epochs": 0}, r"\[x\]\.epochs: expected an integer >= 1, got 0"),
                         ({"loss": "mse"}, r"\[x\]\.loss: expected one of ce, bce, got 'mse'"),
                         ({"flag": 1}, r"\[x\]\.flag: expected true or false, got 1"),
                         ({"lrr": 1}, r"\[x\]\.lrr: unknown key")]:
        with pytest.raises(BenchError, match=message):
            parse_section(Section, bad, "x", choices={"loss": ("ce", "bce")},
                          positive=("epochs",) if bad.get("epochs") == 0 else ())
    with pytest.raises(BenchError, match=r"eval\.ks: expected a list"):
        check_value("eval.ks", [5, 10], "abc")


def test_training_identity_leaves_out_neutral_budget_and_evaluation_keys():
    """A work dir's key follows the run-record rule: keys at their [hash_neutral] value drop out (a tuple
    default equals bench.toml's list), other values stay; leave_out keys never count; keys an older scheme
    already hashed stay in at any value."""
    from bench.config import section_neutral
    from bench.settings import training_identity

    neutral = section_neutral({"hash_neutral": {"m.fields": ["title"], "m.precision": "fp32", "other.x": 1}}, "m")
    assert neutral == {"fields": ["title"], "precision": "fp32"}
    settings = {"fields": ("title",), "precision": "fp32", "lr": 0.1, "budget": 5.0, "gamma": 0.2}
    assert training_identity(settings, neutral, leave_out=("budget", "gamma")) == {"lr": 0.1}
    assert training_identity({**settings, "precision": "bf16"}, neutral, leave_out=("budget",)) == \
        {"precision": "bf16", "lr": 0.1, "gamma": 0.2}
    assert training_identity(settings, neutral, leave_out=("budget", "gamma"), hashed_before=("precision",)) == \
        {"precision": "fp32", "lr": 0.1}
    assert training_identity(settings, {}) == settings  # without the table every key counts
