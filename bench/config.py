"""bench.toml defaults, presets and `--set key=value` overrides; the config hash."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from bench.errors import BenchError, did_you_mean, shown
from bench.settings import check_value
from bench.textfiles import read_text

REPO_ROOT = Path(__file__).resolve().parent.parent


def config_path() -> Path:
    """BENCH_CONFIG, else ./bench.toml, else the one beside the package."""
    if env := os.environ.get("BENCH_CONFIG"):
        return Path(env)
    local = Path.cwd() / "bench.toml"
    return local if local.exists() else REPO_ROOT / "bench.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    if not path.exists():
        raise BenchError(f"{path}: config file not found (set BENCH_CONFIG or run from the repo)")
    try:
        config = tomllib.loads(read_text(path))
    except ValueError as error:  # TOMLDecodeError, or an integer of more digits than Python reads
        raise BenchError(f"{path}: invalid TOML: {error}") from None
    config.setdefault("paths", {})
    config["_root"] = str(path.resolve().parent)
    return config


def resolve_path(config: dict[str, Any], key: str, env: str, default: str) -> Path:
    """Environment variable > bench.toml [paths] > default, relative to bench.toml's folder."""
    raw = os.environ.get(env) or config.get("paths", {}).get(key) or default
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = Path(config.get("_root", ".")) / path
    return path


def parse_value(text: str) -> Any:
    """TOML literal if it parses (8, 1e-4, true, [1, 2], "x"), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(config: dict[str, Any], assignment: str) -> None:
    """Apply one `section.key=value`; unknown keys are refused so typos don't pass silently."""
    key, sep, value = assignment.partition("=")
    if not sep or "." not in key:
        raise BenchError(f"--set {shown(assignment)}: expected section.key=value, e.g. cove.compression_ratio=8")
    *sections, leaf = key.strip().split(".")
    node = config
    for section in sections:
        if not isinstance(node.get(section), dict):
            run_sections = [name for name in config if isinstance(config[name], dict)]
            raise BenchError(f"--set {shown(assignment)}: this run's config has no section [{'.'.join(sections)}] (it "
                             f"has {', '.join(f'[{n}]' for n in run_sections)}: a method's keys apply to its own "
                             f"runs only).{did_you_mean(sections[0], run_sections)}")
        node = node[section]
    if leaf not in node:
        keys = sorted(k for k in node if k != "presets")
        raise BenchError(f"--set {shown(assignment)}: unknown key {shown(leaf)} in [{'.'.join(sections)}]."
                         f"{did_you_mean(leaf, keys)} Known: {', '.join(keys) or '(none)'}")
    try:
        node[leaf] = parse_value(value.strip())
    except ValueError:  # not TOML's error (that gives the raw string): an integer Python will not read
        raise BenchError(f"--set {shown(assignment)}: {key.strip()} has {len(value.strip()):,} digits; expected a "
                         "number of at most 4,300") from None


def check_like_default(source: str, default: Any, value: Any) -> None:
    """A value must have its default's type (bench.settings.check_value), so `epochs=ten` or `ks=abc` fail
    in one line before anything runs. String defaults are left to the method's own checks."""
    if isinstance(default, str) or default is None:
        return
    check_value(source, default, value)


def method_config(
    config: dict[str, Any], method: str, preset: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """Effective {"eval": ..., method: ...} for one run: defaults < preset < --set."""
    effective = {"eval": copy.deepcopy(config.get("eval", {})), method: copy.deepcopy(config.get(method, {}))}
    presets = effective[method].pop("presets", {})
    if preset:
        if preset not in presets:
            available = ", ".join(sorted(presets)) or "(none)"
            raise BenchError(f"Unknown preset {shown(preset)} for {method}.{did_you_mean(preset, presets)} "
                             f"Available: {available}")
        effective[method].update(copy.deepcopy(presets[preset]))
        effective[method]["preset"] = preset
    for assignment in overrides:
        apply_override(effective, assignment)
    return effective


def config_hash(payload: dict[str, Any]) -> str:
    """Stable short hash of a JSON-able payload (sorted keys)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def hashed_config(effective: dict[str, Any], neutral: dict[str, Any]) -> dict[str, Any]:
    """The effective config without the [hash_neutral] keys that sit at their neutral value."""
    hashed = copy.deepcopy(effective)
    for dotted, value in neutral.items():
        section, _, key = dotted.partition(".")
        if hashed.get(section, {}).get(key, object()) == value:
            del hashed[section][key]
    return hashed


def section_neutral(config: dict[str, Any], method: str) -> dict[str, Any]:
    """One method's [hash_neutral] entries as {key: neutral value} (`"tiger.precision" = "fp32"` -> precision)."""
    prefix = f"{method}."
    return {key[len(prefix):]: value for key, value in config.get("hash_neutral", {}).items() if key.startswith(prefix)}


def overrides_where_present(method: str, section: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """`--set` strings for the keys of `values` that the method's section has (others are skipped): how
    `bench speed` and `bench smoke` shorten any method's run without knowing its keys."""
    return [f"{method}.{key}={json.dumps(value)}" for key, value in values.items() if key in section]
