"""Every setting of a run checked before any data is read, with one line naming the key and its source."""

from __future__ import annotations

import math
from typing import Any

from bench.config import check_like_default, method_config
from bench.errors import BenchError, shown

EVAL_CHOICES = {"target": ("test", "valid")}
MAX_SEED = 2**32 - 1  # numpy's legacy seeding (np.random.seed) takes 0 .. 2**32 - 1


def check_seed(seed: int, option: str = "--seed") -> None:
    """A seed every library we seed accepts, refused before anything runs instead of deep in numpy."""
    if not 0 <= seed <= MAX_SEED:
        raise BenchError(f"{option} {shown(seed)}: expected an integer from 0 to {MAX_SEED}")


def check_budget(max_train_minutes: float | None) -> None:
    """Minutes >= 0, where 0 means no budget: one meaning with bench.toml's `max_train_minutes = 0.0`."""
    if max_train_minutes is not None and not (math.isfinite(max_train_minutes) and max_train_minutes >= 0):
        raise BenchError(f"--max-train-minutes {max_train_minutes}: expected a number of minutes >= 0 (0 = no budget)")


def check_settings(method_cls: Any, config: dict[str, Any], method: str, preset: str | None,
                   effective: dict[str, Any], device: str, max_train_minutes: float | None, seed: int = 0) -> None:
    """Every key of the run checked before any data is read; the message names where the bad value came
    from (bench.toml or its preset first, then --set/--model on top)."""
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise BenchError(f"--device {shown(device)}: expected cpu, cuda or cuda:N")
    check_budget(max_train_minutes)
    check_seed(seed)
    base = method_config(config, method, preset)
    where = f"bench.toml [{method}]" + (f" with preset {shown(preset)}" if preset else "")
    defaults = {key: value for key, value in config.get(method, {}).items() if key != "presets"}
    for source, section in ((where, base), ("--set/--model", effective)):
        method_cls.check_config(section[method], defaults, f"{source}:")
        check_eval_section(method_cls, method, config, section["eval"], source)


def check_eval_section(method_cls: Any, method: str, config: dict[str, Any], section: dict[str, Any],
                       source: str) -> None:
    """The [eval] keys of one run (bench run, and bench evaluate's changes to a recorded run's)."""
    for key, value in section.items():
        check_like_default(f"{source}: eval.{key}", config.get("eval", {}).get(key), value)
        if key in EVAL_CHOICES and value not in EVAL_CHOICES[key]:
            raise BenchError(f"{source}: eval.{key}: expected one of {', '.join(EVAL_CHOICES[key])}, "
                             f"got {shown(value)}")
    if section.get("mask_history") and not method_cls.scores_every_item:
        raise BenchError(f"{source}: eval.mask_history = true: {method} ranks only the items of its beams, so "
                         "masking history items out of them would leave its top-K metrics inexact; use "
                         "mask_history = false for it")
    extras = section.get("extra_targets", [])
    if not all(extra in EVAL_CHOICES["target"] for extra in extras):
        raise BenchError(f"{source}: eval.extra_targets: expected a list of test/valid, got {shown(extras)}")
    ks = section.get("ks", [5, 10, 20])
    if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
        raise BenchError(f"{source}: eval.ks: expected a list of positive integers, e.g. [5, 10, 20], "
                         f"got {shown(ks)}")


# Keys that, at 0, leave a method untrained: its row would look like any other in the leaderboard.
UNTRAINED_AT_ZERO = ("epochs", "learning_rate", "lr")


def setting_warnings(effective: dict[str, Any], method: str, num_items: int) -> list[str]:
    """Settings that are valid but make a result that reads like a normal one and is not: an untrained
    model, or a K at which every request is a hit because the catalogue is smaller."""
    warnings = []
    for key, value in effective[method].items():
        if value == 0 and not isinstance(value, bool) and any(
                key == name or key.endswith("_" + name) for name in UNTRAINED_AT_ZERO):
            warnings.append(f"warning: {method}.{key} = 0: the model is not trained, yet its record will be "
                            "a leaderboard row like any other")
    too_large = [k for k in effective["eval"].get("ks", []) if k >= num_items]
    if too_large:  # ranks run from 0 to num_items - 1, so every target is within such a K
        warnings.append(f"warning: eval.ks {too_large}: K at or above the catalogue's {num_items} items puts "
                        "every target in the top K (HR@K = 1 whatever the model)")
    return warnings
