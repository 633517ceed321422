"""What `bench speed`'s options mean, checked before any method is built: the comparison's label (it names
files), the routing of --set, --preset and --records to the measured methods, the quick fit's shortened
settings and one precision for every backbone method (a bf16 method against an fp32 one is no speed
comparison)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.errors import BenchError

# Keys shortening fit(); applied only where a method's bench.toml section has the key, before the
# user's --set (which wins). Quick-fit weights are untrained, so a generative method would decode to
# its max_new_tokens cap and the cap would set its speed: its decoding length is fixed to what a
# trained model writes on average (the catalogue's mean title length) instead.
QUICK_FIT: dict[str, Any] = {"epochs": 1, "decode_length": "mean_title"}

# A comparison's label goes into file names: lower-case words joined by '_' (no path, no dash).
LABEL_PATTERN = re.compile(r"[a-z0-9]+(_[a-z0-9]+)*")


def check_label(label: str | None) -> None:
    """A label names files: refuse anything but lower-case words joined by '_' before any work."""
    if label is not None and (len(label) > 40 or not LABEL_PATTERN.fullmatch(label)):
        raise BenchError(f"--label {label!r}: expected lower-case letters and digits, words joined by '_' (at most "
                         "40 characters), e.g. same_backbone")
    if label is not None and (label == "trained" or re.fullmatch(r"b\d+", label)):
        raise BenchError(f"--label {label!r}: reserved (speed record names use it for trained weights or a batch "
                         "size); choose another, e.g. same_backbone")


def route_overrides(overrides: list[str], methods: list[str]) -> dict[str, list[str]]:
    """Send each `section.key=value` to the method it names; `eval.*` goes to every method."""
    routed: dict[str, list[str]] = {method: [] for method in methods}
    for assignment in overrides:
        section = assignment.partition("=")[0].strip().split(".")[0]
        if section == "eval":
            for method in methods:
                routed[method].append(assignment)
        elif section in routed:
            routed[section].append(assignment)
        else:
            raise BenchError(f"--set {assignment!r}: section {section!r} is neither eval nor one of the "
                             f"measured methods ({', '.join(methods)})")
    return routed


def route_presets(assignments: list[str], methods: list[str]) -> dict[str, str]:
    """`METHOD=NAME` pairs -> {method: preset}: a quick-fit entry times the model a preset names, so it can stand
    beside that preset's accuracy row (the frontier takes only the row's own setting). Whether NAME exists is
    checked with the method's config, still before any work."""
    presets: dict[str, str] = {}
    for assignment in assignments:
        method, equals, name = (part.strip() for part in assignment.partition("="))
        if not equals or not method or not name:
            raise BenchError(f"--preset {assignment!r}: expected METHOD=NAME, e.g. cove=cpu")
        if method not in methods:
            raise BenchError(f"--preset {assignment!r}: {method!r} is not one of the measured methods "
                             f"({', '.join(methods)})")
        if method in presets:
            raise BenchError(f"--preset {assignment!r}: {method} already has preset {presets[method]!r}")
        presets[method] = name
    return presets


def route_records(records: list[Path], methods: list[str]) -> dict[str, Path]:
    """--records: at most one recorded run per measured method, each an existing record of one of them."""
    from bench.store.results import read_record

    named: dict[str, Path] = {}
    for path in records:
        if not path.is_file():
            raise BenchError(f"--records {path}: no such record file")
        method = read_record(path)["method"]
        if method not in methods:
            raise BenchError(f"--records {path}: a run of {method}, which is not among --methods "
                             f"({', '.join(methods)})")
        if method in named:
            raise BenchError(f"--records: two records for {method} ({named[method].name}, {path.name})")
        named[method] = path
    return named


def quick_fit_overrides(method: str, section: dict[str, Any]) -> list[str]:
    from bench.config import overrides_where_present

    return overrides_where_present(method, section, QUICK_FIT)


def check_precision(precision: str | None) -> None:
    """--precision names one of the precisions every backbone method knows; refused before any work."""
    from bench.train.precision import PRECISIONS

    if precision is not None and precision not in PRECISIONS:
        raise BenchError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


def precision_overrides(method: str, section: dict[str, Any], precision: str | None) -> list[str]:
    """`--precision` for every method whose section has the key (backbone methods); the others run as they are."""
    from bench.config import overrides_where_present

    return overrides_where_present(method, section, {"precision": precision}) if precision else []


def precisions_used(measured: dict[str, Any]) -> dict[str, str]:
    """method -> the precision it ran in, for the methods that report one (an LLM backbone's fp32 or bf16)."""
    return {m: str(e["method_info"]["precision"]) for m, e in measured.items()
            if (e.get("method_info") or {}).get("precision")}
