"""Method registry with lazy "module:object" entries, so the CLI starts without torch."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from bench.errors import BenchError, did_you_mean, shown


class Registry:
    """Name -> "module:object" string, imported only when the method is used."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, str] = {}
        # What plugins declare about their methods without importing them (see methods/__init__.py).
        self.baselines: list[str] = []
        self.swept_settings: dict[str, str] = {}

    def register(self, name: str, target: str) -> None:
        if ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: expected 'module:object', got {target!r}")
        existing = self._entries.get(name)
        if existing is not None and existing != target:
            raise ValueError(f"{self.kind} {name!r} registered twice ({existing} and {target})")
        self._entries[name] = target

    def names(self) -> list[str]:
        return sorted(self._entries)

    def target(self, name: str) -> str:
        if name not in self._entries:
            available = ", ".join(self.names()) or "(none)"
            raise BenchError(f"Unknown {self.kind} {shown(name)}.{did_you_mean(name, self.names())} "
                             f"Available: {available}")
        return self._entries[name]

    def load(self, name: str) -> Any:
        module_name, _, attribute = self.target(name).partition(":")
        module = importlib.import_module(module_name)
        try:
            return getattr(module, attribute)
        except AttributeError as error:
            raise BenchError(f"{self.kind} {name!r}: {module_name} has no {attribute!r}") from error


def method_registry(plugin_modules: Iterable[str] = ("methods",)) -> Registry:
    """Collect METHODS from each plugin module (importing the light module only)."""
    registry = Registry("method")
    for module_name in plugin_modules:
        module = importlib.import_module(module_name)
        for name, target in getattr(module, "METHODS", {}).items():
            registry.register(name, target)
        registry.baselines += [name for name in getattr(module, "BASELINES", ()) if name not in registry.baselines]
        registry.swept_settings.update(getattr(module, "SWEPT_SETTINGS", {}))
    return registry


def configured_registry(config: dict[str, Any]) -> Registry:
    """The registry of the plugin modules bench.toml's [plugins] names (default: this repo's methods)."""
    return method_registry(config.get("plugins", {}).get("modules", ["methods"]))
