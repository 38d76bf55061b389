"""The lab table of `cxrkit ingest-physio` as wide panels: a long or wide table as
:mod:`cxrkit.io.labs` reads it, or MIMIC-IV's labevents + d_labitems as they ship
(:mod:`cxrkit.io.mimic_iv`), recognised by labevents' columns.

labevents rows that cannot join a panel are counted, not listed one by one (the table
holds ~118 M rows): one reject per (reason, item) with the row count, reasons
``unknown_itemid`` (not in d_labitems), ``non_numeric`` (no ``valuenum``: text results
such as ``<0.01`` or ``NEG``), ``other_unit`` (a unit other than the item's usual one),
``no_time`` (empty or unreadable ``charttime``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cxrkit.artifacts import Artifact
from cxrkit.errors import InputError
from cxrkit.io import labs as labs_io
from cxrkit.io import mimic_iv
from cxrkit.io.deid import Pseudonymizer
from cxrkit.io.path_scrub import printable_path
from cxrkit.io.physio_cells import cell_text, implausible, is_clock_word, parse_time
from cxrkit.io.physio_files import LABS_INFO, LABS_TABLE
from cxrkit.io.table_files import csv_columns

log = logging.getLogger(__name__)


def lab_panels(
    cfg: Any,
    pseudo: Pseudonymizer,
    rejects: list[dict[str, str]],
    local: dict[str, str],
    keep_patient: Callable[[str], bool] | None = None,
) -> tuple[pd.DataFrame, dict[str, str], dict[str, Any]]:
    """(wide panels ``patient_id, time, <test>...``, {test: unit}, stats) of ``cfg.labs``.

    Takes the ingest-physio config (``labs``, ``lab_items``, ``lab_tests``, ``lab_top``,
    ``mimic_subject_format``, ``keep_paths``); appends labevents' counted rejects to
    ``rejects`` (real names to ``local``). ``keep_patient`` (a raw patient key -> keep?)
    drops other patients' rows (``lab_patients = "dataset"``). Raises InputError naming
    the file (unreadable, missing columns or d_labitems) and ConfigError (a
    ``lab_tests`` name not in d_labitems).
    """
    columns = csv_columns(cfg.labs)
    if "itemid" in columns and "subject_id" in columns and not mimic_iv.is_labevents(columns):
        missing = [c for c in mimic_iv.LABEVENTS_COLUMNS if c not in columns]
        raise InputError(f"{cfg.labs}: a MIMIC-IV labevents table needs columns {missing}")
    if mimic_iv.is_labevents(columns):
        return _labevents_panels(cfg, pseudo, rejects, local, keep_patient)
    wide, units = labs_io.to_wide(labs_io.read_table(cfg.labs), cfg.labs)
    if keep_patient is None:
        return wide, units, {}
    keys = wide["patient_id"].astype(str).str.strip()
    kept = keys.map({k: bool(k) and keep_patient(k) for k in keys.unique()})
    kept |= keys == ""  # a row without a patient stays: rejected as no_patient, not dropped
    stats = {"lab_panels_other_patients": int((~kept).sum())}
    return wide[kept.to_numpy()].reset_index(drop=True), units, stats


def _labevents_panels(
    cfg: Any,
    pseudo: Pseudonymizer,
    rejects: list[dict[str, str]],
    local: dict[str, str],
    keep_patient: Callable[[str], bool] | None,
) -> tuple[pd.DataFrame, dict[str, str], dict[str, Any]]:
    """:func:`lab_panels` of MIMIC-IV labevents: two passes, counted rejects, stats."""
    mimic_iv.check_subject_format(cfg.mimic_subject_format)
    items_path = mimic_iv.find_labitems(cfg.labs, cfg.lab_items)
    names = mimic_iv.read_labitems(items_path)
    counts = mimic_iv.count_labevents(cfg.labs)
    chosen = mimic_iv.choose_items(counts, names, list(cfg.lab_tests), cfg.lab_top, str(items_path))
    units = {i: counts.unit_of(i) for i in chosen}
    read = mimic_iv.read_labevents(
        cfg.labs, names, chosen, units, cfg.mimic_subject_format, keep_patient=keep_patient
    )
    wide = mimic_iv.labevents_wide(read, names, chosen, cfg.mimic_subject_format)

    def reject(itemid: int, reason: str, count: int, why: str) -> None:
        where = f"{cfg.labs}#itemid {itemid}"
        token = printable_path(where) if cfg.keep_paths else pseudo.path_token(where)
        local[token] = f"{cfg.labs}: itemid {itemid} ({names.get(itemid, 'not in d_labitems')})"
        rejects.append({"path": token, "reason": reason, "detail": f"{count} rows {why}"})

    unknown = {i: n for i, n in counts.rows.items() if i not in names}
    for itemid, count in sorted(unknown.items()):
        reject(itemid, "unknown_itemid", count, f"whose itemid is not in {items_path.name}")
    for itemid in chosen:
        if count := read.non_numeric.get(itemid):
            reject(itemid, "non_numeric", count, "without a numeric valuenum")
        if count := read.other_unit.get(itemid):
            reject(itemid, "other_unit", count, f"not in the item's unit {units[itemid]!r}")
        if count := read.bad_time.get(itemid):
            reject(itemid, "no_time", count, "with an empty or unreadable charttime")
    left_out = [i for i in counts.rows if i in names and i not in units]
    stats = {
        "lab_source": "mimic-iv labevents",
        "lab_rows": int(sum(counts.rows.values())),
        "lab_rows_kept": len(read.table),
        "lab_rows_other_patients": read.other_patients,
        "lab_items_left_out": len(left_out),
        "lab_rows_left_out": int(sum(counts.rows[i] for i in left_out)),
    }
    return wide, {names[i]: units[i] for i in chosen}, stats


PANEL_BLOCK = 131_072  # panels scaled and written at a time
LABS_SCHEMA = pa.schema(
    [
        ("lab_id", pa.string()),
        ("patient_id", pa.string()),
        ("time", pa.string()),
        ("values", pa.list_(pa.float32())),
        ("flags", pa.list_(pa.float32())),
        ("fit", pa.bool_()),
    ]
)


def ingest_labs(
    cfg: Any,
    pseudo: Pseudonymizer,
    dataset: Artifact | None,
    work: Path,
    rejects: list[dict[str, str]],
    local: dict[str, str],
) -> dict[str, Any]:
    """Write ``labs.parquet`` and ``labs.json`` of the physio artifact into ``work``.

    Panels of ``cfg.labs`` (:func:`lab_panels`) are checked (:func:`_valid_panels`),
    scaled by percentiles fitted on the panels of patients with a training image (all
    panels without ``dataset``) and written a block at a time. Returns the lab stats;
    raises as :func:`lab_panels` does.
    """
    if not cfg.labs:
        pq.write_table(LABS_SCHEMA.empty_table(), work / LABS_TABLE)
        (work / LABS_INFO).write_text(json.dumps({"tests": [], "units": {}, "knots": []}))
        return {"lab_panels": 0, "lab_tests": 0}
    splits = _patient_splits(dataset) if dataset is not None else {}
    keep_patient = None
    if cfg.lab_patients == "dataset":  # validate() saw --dataset

        def keep_patient(key: str) -> bool:
            return pseudo.pseudonym("patient", key) in splits

    wide, units, source_stats = lab_panels(cfg, pseudo, rejects, local, keep_patient)
    rows = source_stats.get("lab_rows_other_patients")
    dropped = (rows, "rows") if rows else (source_stats.get("lab_panels_other_patients"), "panels")
    if dropped[0] and wide.empty:
        log.warning(
            "no lab patient has an image in the dataset: lab_patients = dataset left out all "
            "%d %s; are its ids written as the images' (mimic_subject_format %r) and "
            "pseudonymised with the same salt?",
            *dropped,
            cfg.mimic_subject_format,
        )
    tests = [c for c in wide.columns if c not in ("patient_id", "time")]
    held_out = {p for p, s in splits.items() if "train" not in s}
    keep, pseudonyms, times = _valid_panels(cfg, pseudo, wide, tests, rejects, local)
    matrix = wide[tests].to_numpy() if tests else np.zeros((len(wide), 0))
    del wide  # the panels' values are in `matrix` now
    fit = np.array([p not in held_out for p in pseudonyms], dtype=bool)
    knots = labs_io.fit_percentiles(matrix, rows=keep[fit])
    measured = 0.0
    # scaled values and flags (100 floats a panel) exist one block of panels at a time
    with pq.ParquetWriter(work / LABS_TABLE, LABS_SCHEMA) as out:
        for start in range(0, max(len(keep), 1), PANEL_BLOCK):
            block = slice(start, start + PANEL_BLOCK)
            values = matrix[keep[block]].astype(float)
            scaled, flags = labs_io.apply_percentiles(values, knots)
            measured += float(flags.sum())
            table = _panel_table(pseudo, pseudonyms[block], times[block], scaled, flags, fit[block])
            out.write_table(table)
    info = {"tests": tests, "units": units, "knots": np.nan_to_num(knots, nan=0.0).tolist()}
    (work / LABS_INFO).write_text(json.dumps(info))
    return {
        **source_stats,
        "lab_panels": len(keep),
        "lab_tests": len(tests),
        "lab_panels_fit": int(fit.sum()),
        "lab_missing_fraction": round(1 - measured / (len(keep) * len(tests)), 4)
        if len(keep) and tests
        else 0.0,
    }


def _valid_panels(
    cfg: Any,
    pseudo: Pseudonymizer,
    wide: Any,
    tests: list[str],
    rejects: list[dict[str, str]],
    local: dict[str, str],
) -> tuple[np.ndarray, list[str], list[str]]:
    """(row positions kept, patient pseudonyms, shifted ISO times) of the wide table's
    panels; the others become rejects (no_patient, no_time, bad_time, empty_panel).

    Pseudonyms and date offsets are computed once per patient and times parsed in one
    vectorised call (a cell the vectorised parser misses is parsed alone), so millions
    of panels cost seconds, not a Python loop of pandas rows.
    """
    import pandas as pd

    patients = wide["patient_id"].astype(str).str.strip().to_numpy(dtype=object)
    raw_times = wide["time"].to_numpy(dtype=object)
    parsed = _parse_times(wide["time"])
    measured = (
        np.isfinite(wide[tests].to_numpy()).any(axis=1) if tests else np.zeros(len(wide), bool)
    )
    keep: list[int] = []
    pseudonyms: list[str] = []
    times: list[str] = []
    by_patient: dict[str, tuple[str, int]] = {}
    for index in range(len(wide)):
        patient = patients[index]
        stamp = parsed.iloc[index]
        when = parse_time(raw_times[index]) if pd.isna(stamp) else stamp.to_pydatetime()
        problem = None
        if not patient:
            problem = ("no_patient", "no patient id")
        elif when is None:  # the raw cell may hold anything (names, phone numbers): not quoted
            text = cell_text(raw_times[index])
            problem = ("no_time", "no time" if text is None else "a time that is not a date")
        elif (bad := implausible(when)) is not None:
            problem = bad
        elif not measured[index]:
            problem = ("empty_panel", "no value measured")
        if problem is not None:
            token = f"{cfg.labs}#{index}"
            token = printable_path(token) if cfg.keep_paths else pseudo.path_token(token)
            local[token] = f"{cfg.labs}: patient_id {patient}, time {raw_times[index]}"
            rejects.append({"path": token, "reason": problem[0], "detail": problem[1]})
            continue
        if patient not in by_patient:
            by_patient[patient] = (
                pseudo.pseudonym("patient", patient),
                pseudo.date_offset_days(patient),
            )
        pseudonym, offset = by_patient[patient]
        keep.append(index)
        pseudonyms.append(pseudonym)
        times.append((when.replace(tzinfo=None) + timedelta(days=offset)).isoformat())
    return np.array(keep, dtype=np.int64), pseudonyms, times


def _parse_times(cells: Any) -> Any:
    """The cells as timestamps in one vectorised call; NaT where that parser fails (a
    cell in another format than the first) and for
    :data:`~cxrkit.io.physio_cells.CLOCK_WORDS`:
    :func:`~cxrkit.io.physio_cells.parse_time` then reads those cells one by one."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format"
        # "mixed time zones will raise": then ValueError below, and the cells one by one
        warnings.simplefilter("ignore", FutureWarning)
        try:
            parsed = pd.to_datetime(cells, errors="coerce")
        except (ValueError, TypeError, OverflowError):
            return pd.Series(pd.NaT, index=cells.index)
    parsed[cells.map(is_clock_word).to_numpy(dtype=bool)] = pd.NaT  # parse_time says no_time
    return parsed


def _panel_table(
    pseudo: Pseudonymizer,
    pseudonyms: list[str],
    times: list[str],
    scaled: np.ndarray,
    flags: np.ndarray,
    fit: np.ndarray,
) -> pa.Table:
    """The labs table built column by column (no Python list per panel)."""
    n, width = scaled.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)

    def lists(matrix: np.ndarray) -> pa.Array:
        flat = matrix.astype(np.float32, copy=False).ravel()
        return pa.ListArray.from_arrays(offsets, pa.array(flat))

    lab_ids = [pseudo.pseudonym("lab", f"{p}|{t}") for p, t in zip(pseudonyms, times, strict=True)]
    columns = [
        pa.array(lab_ids, pa.string()),
        pa.array(pseudonyms, pa.string()),
        pa.array(times, pa.string()),
        lists(scaled),
        lists(flags),
        pa.array(fit, pa.bool_()),
    ]
    return pa.Table.from_arrays(columns, schema=LABS_SCHEMA)


def _patient_splits(dataset: Artifact) -> dict[str, set[str]]:
    """The splits each pseudonymised patient of the dataset has images in."""
    from cxrkit.io.dataset import dataset_shards

    splits: dict[str, set[str]] = {}
    for shard in dataset_shards(dataset):
        table = pq.read_table(shard, columns=["patient_id", "split"])
        for patient, split in zip(
            table.column("patient_id").to_pylist(), table.column("split").to_pylist(), strict=True
        ):
            splits.setdefault(str(patient), set()).add(str(split))
    return splits
