"""Every setting of a run checked before any data is read, with one line naming the key and its source."""

from __future__ import annotations

from typing import Any

from bench.config import check_like_default, method_config
from bench.errors import BenchError

EVAL_CHOICES = {"target": ("test", "valid")}


def check_settings(method_cls: Any, config: dict[str, Any], method: str, preset: str | None,
                   effective: dict[str, Any], device: str, max_train_minutes: float | None) -> None:
    """Every key of the run checked before any data is read; the message names where the bad value came
    from (bench.toml or its preset first, then --set/--model on top)."""
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise BenchError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if max_train_minutes is not None and not max_train_minutes > 0:
        raise BenchError(f"--max-train-minutes {max_train_minutes}: expected a positive number of minutes")
    base = method_config(config, method, preset)
    where = f"bench.toml [{method}]" + (f" with preset {preset!r}" if preset else "")
    defaults = {key: value for key, value in config.get(method, {}).items() if key != "presets"}
    for source, section in ((where, base), ("--set/--model", effective)):
        method_cls.check_config(section[method], defaults, f"{source}:")
        for key, value in section["eval"].items():
            check_like_default(f"{source}: eval.{key}", config.get("eval", {}).get(key), value)
            if key in EVAL_CHOICES and value not in EVAL_CHOICES[key]:
                raise BenchError(f"{source}: eval.{key}: expected one of {', '.join(EVAL_CHOICES[key])}, "
                                 f"got {value!r}")
        extras = section["eval"].get("extra_targets", [])
        if not all(extra in EVAL_CHOICES["target"] for extra in extras):
            raise BenchError(f"{source}: eval.extra_targets: expected a list of test/valid, got {extras!r}")
        ks = section["eval"].get("ks", [5, 10, 20])
        if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
            raise BenchError(f"{source}: eval.ks: expected a list of positive integers, e.g. [5, 10, 20], "
                             f"got {ks!r}")
