"""Lab panels: read a long or a wide table, scale by percentiles, flag what is missing.

Input tables (CSV or Parquet):

- long: one measurement per row, columns ``patient_id, time, test, value, unit``;
  the measurements of a patient at one time form a panel;
- wide: ``patient_id, time`` plus one column per test.

A panel becomes a vector of ``values`` (each test's percentile rank in the
TRAINING panels, in [0, 1]; 0 where missing) and ``flags`` (1 = measured),
as the released PaCX code feeds its lab autoencoder (50 values + 50 flags).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.errors import InputError
from cxrkit.io.table_files import open_text

LONG_COLUMNS = ("patient_id", "time", "test", "value", "unit")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (plain or gzip) or Parquet file.

    ``patient_id`` and ``path`` are read as text (``10000032``, never ``10000032.0``).
    Raises InputError naming the file when it cannot be read or when two columns
    share a name (pandas would rename one ``value.1`` and silently use the other).
    """
    import csv

    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pd.read_parquet(path)
            names = [str(c) for c in table.columns]
        else:
            # ids as text: pandas reads 10000032 beside an empty cell as 10000032.0;
            # gzip found by its bytes, as every table (record_list.csv.gz, labs.csv.gz)
            with open_text(path) as handle:
                table = pd.read_csv(handle, dtype={"patient_id": str, "path": str})
            with open_text(path) as handle:
                names = next(csv.reader(handle), [])
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise InputError(f"{path}: cannot read the table ({reason})") from exc
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{path}: columns {twice} appear more than once; keep one of each")
    if "patient_id" in table.columns and pd.api.types.is_float_dtype(table["patient_id"]):
        ids = table["patient_id"]
        if (ids.dropna() % 1 == 0).all():  # a Parquet int column with nulls became float
            table = table.assign(patient_id=ids.astype("Int64").astype(object))
    return table


def to_wide(table: pd.DataFrame, source: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """A long or wide lab table as a wide one: ``patient_id, time`` + one column per test.

    A table with a ``test`` column is long (needs :data:`LONG_COLUMNS`; a test
    measured twice at one time keeps the mean; one test in two units is an
    InputError). Returns (wide table sorted by patient and time, {test: unit}).
    Raises InputError naming ``source`` for missing columns or non-numeric values.
    """
    if "patient_id" not in table.columns or "time" not in table.columns:
        raise InputError(f"{source}: a lab table needs patient_id and time columns")
    # An empty patient or time cell stays "" (pivot_table would drop the row silently and
    # str() would make a patient "nan"); the stage rejects such panels with a reason.
    table = table.assign(
        patient_id=table["patient_id"].where(table["patient_id"].notna(), "").astype(str),
        time=table["time"].where(table["time"].notna(), "").astype(str),
    )
    units: dict[str, str] = {}
    if "test" in table.columns:
        missing = [c for c in LONG_COLUMNS if c not in table.columns]
        if missing:
            raise InputError(f"{source}: a long lab table needs columns {missing}")
        values = pd.to_numeric(table["value"], errors="coerce")
        bad = table.loc[~np.isfinite(values) & table["value"].notna(), "value"].iloc[:3].tolist()
        if bad:
            raise InputError(f"{source}: non-numeric or infinite lab values {bad}")
        for test, group in table.groupby("test"):
            # an empty unit cell is no unit given, not another unit (labevents leave
            # valueuom empty beside an empty valuenum)
            given = group["unit"].dropna().astype(str).str.strip()
            kinds = sorted(set(given[given != ""]))
            if len(kinds) > 1:
                raise InputError(f"{source}: test {test!r} is given in several units {kinds}")
            units[str(test)] = kinds[0] if kinds else ""
        long = table.assign(value=values, patient_id=table["patient_id"].astype(str))
        # groupby, not pivot_table: a panel whose values are all empty (labevents leave
        # valuenum empty) stays a row, so the stage rejects it as empty_panel
        wide = (
            long.groupby(["patient_id", "time", "test"], sort=True)["value"]
            .mean()
            .unstack("test")
            .reset_index()
        )
        wide.columns = [str(c) for c in wide.columns]
    else:
        wide = table.copy()
        wide["patient_id"] = wide["patient_id"].astype(str)
        for column in wide.columns:
            if column in ("patient_id", "time"):
                continue
            converted = pd.to_numeric(wide[column], errors="coerce")
            if (~np.isfinite(converted) & wide[column].notna()).any():
                raise InputError(
                    f"{source}: column {column!r} holds non-numeric or infinite values"
                )
            wide[column] = converted
    return wide.sort_values(["patient_id", "time"], kind="stable").reset_index(drop=True), units


def fit_percentiles(
    train: np.ndarray, points: int = 101, rows: np.ndarray | None = None
) -> np.ndarray:
    """Per-test percentile knots (points, tests) from the TRAINING panels (NaN = missing).

    ``rows`` picks the training panels of ``train`` (default all), one column at a time,
    so a large panel matrix is never copied whole. A test never measured in training
    gets NaN knots (it scales to 0, flagged missing).
    """
    qs = np.linspace(0, 100, points)
    knots = np.full((points, train.shape[1]), np.nan)
    for j in range(train.shape[1]):
        column = (train[:, j] if rows is None else train[rows, j]).astype(float)
        column = column[np.isfinite(column)]
        if column.size:
            knots[:, j] = np.percentile(column, qs)
    return knots


def apply_percentiles(values: np.ndarray, knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scaled, flags)``: each value's percentile rank in [0, 1] by the fitted knots.

    Values outside the training range clip to 0 or 1; a tie run among the knots
    maps to its middle. Missing values (NaN) give 0 with flag 0.
    """
    qs = np.linspace(0, 1, knots.shape[0])
    scaled = np.zeros(values.shape, dtype=np.float32)
    flags = np.isfinite(values).astype(np.float32)
    for j in range(values.shape[1]):
        if not np.isfinite(knots[:, j]).all():
            flags[:, j] = 0.0
            continue
        present = np.isfinite(values[:, j])
        x = values[present, j]
        low = np.interp(x, knots[:, j], qs, left=0.0, right=1.0)
        # np.interp on repeated knots takes the right end; average both ends for ties
        high = 1.0 - np.interp(-x, -knots[::-1, j], qs, left=0.0, right=1.0)
        scaled[present, j] = (low + high) / 2
    return scaled, flags
