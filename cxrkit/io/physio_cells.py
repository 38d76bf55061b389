"""Cells of physiology tables: text, times, and which times are plausible."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

# Times outside these years are corrupt (MIMIC's shifted dates reach the 2200s).
PLAUSIBLE_YEARS = (1900, 2300)


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


def parse_time(value: Any) -> datetime | None:
    import pandas as pd

    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None
    return None if pd.isna(stamp) else stamp.to_pydatetime().replace(tzinfo=None)
