"""Cells of physiology tables: text, times, and which times are plausible."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

# Times outside these years are corrupt (MIMIC's shifted dates reach the 2200s).
PLAUSIBLE_YEARS = (1900, 2300)
# Words pandas parses as the clock of the run, even under an exact format: a cell that
# holds one is not a time (a panel's time and id must not change from run to run).
CLOCK_WORDS = frozenset({"now", "today"})


def implausible(when: datetime | None) -> tuple[str, str] | None:
    """``("bad_time", detail)`` for a time outside PLAUSIBLE_YEARS (the detail gives the
    year only: a full date is PHI), else None."""
    low, high = PLAUSIBLE_YEARS
    if when is not None and not low <= when.year <= high:
        return "bad_time", f"year {when.year} outside {low}-{high}"
    return None


def cell_text(value: Any) -> str | None:
    """A table cell as text, None for an empty or missing one (pandas reads them as NaN)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def is_clock_word(value: Any) -> bool:
    """Whether a cell is one of :data:`CLOCK_WORDS` (which pandas reads as the run's time)."""
    return isinstance(value, str) and value.strip().lower() in CLOCK_WORDS


def parse_time(value: Any) -> datetime | None:
    """A cell as a naive datetime (a zone dropped, the wall clock kept); None for an
    empty cell, one of :data:`CLOCK_WORDS`, or text that is not a time. Never raises."""
    import pandas as pd

    if value is None or (isinstance(value, float) and np.isnan(value)) or is_clock_word(value):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None
    return None if pd.isna(stamp) else stamp.to_pydatetime().replace(tzinfo=None)
