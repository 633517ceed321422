"""How numbers look in every table and plot: one format for metrics, speeds and seconds."""

from __future__ import annotations

import math
from typing import Any

METRIC_TITLES = {"ndcg@5": "NDCG@5", "ndcg@10": "NDCG@10", "ndcg@20": "NDCG@20",
                 "hr@5": "HR@5", "hr@10": "HR@10", "hr@20": "HR@20"}


def defined(value: Any) -> float | None:
    """A metric value, or None where it is undefined (missing or NaN), so every column treats both alike."""
    return None if value is None or math.isnan(float(value)) else float(value)


def fmt_metric(value: Any) -> str:
    return "–" if defined(value) is None else f"{float(value):.4f}"


def fmt_number(value: Any) -> str:
    """Speeds and seconds: 3 significant figures, thousands separated."""
    if value is None:
        return "–"
    value = float(value)
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def markdown_table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return out
