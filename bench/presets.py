"""One-line descriptions of bench.toml's presets, read from the comment under each preset's header.

Preset tables are checked key by key against their method's defaults, so a `description` key would be
refused as unknown; the comment every preset already carries says what it is for.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.textfiles import read_text

HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_]+)\.presets\.([A-Za-z0-9_\"'-]+)\s*\]")


def first_sentence(text: str, limit: int = 90) -> str:
    """The comment's first sentence, cut to `limit` characters so `bench list` stays one line per preset."""
    sentence = re.split(r"(?<=[.:;])\s", text.strip(), maxsplit=1)[0].rstrip(".:;")
    return sentence if len(sentence) <= limit else sentence[:limit - 3].rstrip() + "..."


def preset_descriptions(path: Path) -> dict[tuple[str, str], str]:
    """(method, preset) -> the first comment line under (else directly above) its `[method.presets.NAME]`."""
    lines = read_text(path).splitlines()
    found = {}
    for index, line in enumerate(lines):
        match = HEADER.match(line)
        if not match:
            continue
        below = lines[index + 1] if index + 1 < len(lines) else ""
        above = lines[index - 1] if index > 0 else ""
        comment = next((c.strip()[1:] for c in (below, above) if c.strip().startswith("#")), "")
        found[(match.group(1), match.group(2).strip("\"'"))] = first_sentence(comment)
    return found
