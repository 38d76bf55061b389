"""MIMIC-IV's own tables as they ship: ``hosp/labevents`` + ``hosp/d_labitems`` and
MIMIC-IV-ECG's ``record_list.csv``.

| table | columns read | what it gives |
|---|---|---|
| ``labevents.csv(.gz)`` | subject_id, itemid, charttime, valuenum, valueuom | a measurement |
| ``d_labitems.csv(.gz)`` | itemid, label, fluid | the test's name |
| ``record_list.csv`` (ECG) | subject_id, path, ecg_time | patient and time of a WFDB record |

Patients: MIMIC-CXR's folders (``files/p10/p10000032/s5.../``), which ``cxrkit ingest``
keys its patients by, write MIMIC's ``subject_id`` 10000032 as ``p10000032``; its own
metadata tables join on ``p{subject_id}`` too. A ``subject_id`` column of a MIMIC-IV
table is therefore keyed as :data:`SUBJECT_FORMAT` (``p{}``) by default, so pseudonyms
and date shifts equal the images' without the user rewriting 118 M rows. The rule is
one-to-one (digits only; anything else is an InputError), so it never merges two patients.

labevents holds ~118 M rows (~13 GB as CSV): it is read in chunks of a few hundred
thousand rows, twice (once to count what each test holds, once to keep the tests
chosen), and only the kept measurements stay in memory, in compact columns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxrkit.errors import ConfigError, InputError
from cxrkit.io.physio_cells import CLOCK_WORDS
from cxrkit.io.table_files import open_text

if TYPE_CHECKING:  # pandas is imported where a table is read: ingest-physio's no-op needs none
    import pandas as pd

LABEVENTS_COLUMNS = ("subject_id", "itemid", "charttime", "valuenum", "valueuom")
LABITEMS_COLUMNS = ("itemid", "label")
RECORD_LIST_COLUMNS = ("subject_id", "path")
LABITEMS_NAMES = ("d_labitems.csv.gz", "d_labitems.csv")
SUBJECT_FORMAT = "p{}"
# a subject_id cell: ASCII digits (a float column wrote 10000032.0); not \d, which takes
# other scripts' digits that int() reads as these (١٢ -> 12: two subjects, one key)
_WHOLE = r"[0-9]+(?:\.0)?"
CHUNK_ROWS = 200_000
# charttime as MIMIC-IV writes it; a cell in another ISO form (no seconds, a "T", a
# zone offset: dropped, wall clock kept, as ingest-physio's other times) is read too
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_ZONE = r"(\d\d:\d\d(?::\d\d(?:\.\d+)?)?)\s*(?:Z|UTC|[+-]\d\d(?::?\d\d)?)$"


def is_labevents(columns: list[str]) -> bool:
    """Whether a header is MIMIC-IV's labevents (names tests by ``itemid``)."""
    return all(c in columns for c in LABEVENTS_COLUMNS)


def is_record_list(columns: list[str]) -> bool:
    """Whether a header is MIMIC-IV-ECG's ``record_list.csv`` (``subject_id``, ``path``)."""
    return all(c in columns for c in RECORD_LIST_COLUMNS) and "patient_id" not in columns


def check_subject_format(subject_format: str) -> None:
    """Raise ConfigError unless the format holds exactly one ``{}`` (one id, one key)."""
    if subject_format.count("{}") != 1 or subject_format.replace("{}", "").count("{"):
        raise ConfigError(
            f"mimic_subject_format {subject_format!r} must hold exactly one {{}} "
            "(e.g. p{} for MIMIC-CXR folders, {} for the bare subject_id)"
        )


def subject_key(subject: object, subject_format: str, source: str | Path) -> str:
    """The patient key of a MIMIC ``subject_id`` cell (``10000032`` -> ``p10000032``).

    Raises InputError naming ``source`` when the cell is not a whole number (the rule
    must stay one-to-one: ``p`` + digits never equals another subject's key).
    """
    text = str(subject).strip()
    if text.endswith(".0"):  # a float column (an empty cell elsewhere) wrote 10000032.0
        text = text[:-2]
    if not re.fullmatch("[0-9]+", text):  # ASCII digits, as read_labevents' rule
        raise InputError(f"{source}: subject_id {text[:20]!r} is not a whole number")
    return subject_format.format(int(text))


def find_labitems(labevents: str | Path, given: str | Path | None) -> Path:
    """The d_labitems table for a labevents file: ``given``, else one beside it.

    Raises InputError naming labevents when neither exists (labevents names its tests
    only by number; ``cxrkit`` will not name panels by itemid).
    """
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise InputError(f"{path}: no such d_labitems file (--lab-items)")
        return path
    folder = Path(labevents).expanduser().parent
    for name in LABITEMS_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise InputError(
        f"{labevents}: MIMIC-IV labevents names tests only by itemid; put "
        f"d_labitems.csv.gz (hosp/) beside it or pass --lab-items FILE"
    )


def read_labitems(path: str | Path) -> dict[int, str]:
    """``{itemid: test name}`` from d_labitems.

    The name is the ``label`` ("Creatinine"); a label several items share (Glucose in
    blood, urine, pleural fluid) gets its ``fluid`` ("Glucose (Urine)"), and if that is
    still shared, its itemid ("Hemoglobin (Blood, 50811)"): distinct measurements never
    merge into one test. Raises InputError naming the file for missing columns, an
    unreadable file, a non-numeric or repeated itemid.
    """
    import pandas as pd

    path = Path(path)
    try:
        with open_text(path) as handle:  # gzip found by its bytes, as for every table
            table = pd.read_csv(handle, dtype=str, keep_default_na=False)
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise InputError(f"{path}: cannot read d_labitems ({reason})") from exc
    missing = [c for c in LABITEMS_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: d_labitems needs columns {missing}")
    fluid = table["fluid"] if "fluid" in table.columns else pd.Series("", index=table.index)
    ids = table["itemid"].str.strip()
    ascii_digits = ids.str.fullmatch("[0-9]+")
    if not ascii_digits.all():
        bad = ids[~ascii_digits].iloc[0]
        raise InputError(f"{path}: itemid {bad[:20]!r} is not a whole number")
    if ids.duplicated().any():
        raise InputError(f"{path}: itemid {ids[ids.duplicated()].iloc[0]} is listed twice")
    labels = table["label"].str.strip().where(table["label"].str.strip() != "", "item " + ids)
    names = labels.copy()
    shared = labels.duplicated(keep=False)
    names[shared] = labels[shared] + " (" + fluid[shared].str.strip() + ")"
    still = names.duplicated(keep=False)
    names[still] = labels[still] + " (" + fluid[still].str.strip() + ", " + ids[still] + ")"
    return dict(zip(ids.astype(int), names, strict=True))


def _chunks(path: Path, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """labevents in chunks of ``chunk_rows`` rows, only ``columns``; InputError naming
    the file when it cannot be parsed."""
    import pandas as pd

    dtypes = {"subject_id": str, "itemid": str, "charttime": str, "valueuom": str}
    try:
        with open_text(path) as handle:
            reader = pd.read_csv(
                handle,
                usecols=columns,
                dtype={c: dtypes[c] for c in columns if c in dtypes},
                chunksize=chunk_rows,
                keep_default_na=False,
                na_values={"valuenum": [""]},
            )
            yield from reader
    except (ValueError, OSError, EOFError, pd.errors.ParserError) as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise InputError(f"{path}: cannot read labevents ({reason})") from exc


def _itemids(chunk: pd.DataFrame, path: Path) -> np.ndarray:
    import pandas as pd

    ids = pd.to_numeric(chunk["itemid"], errors="coerce")
    if ids.isna().any():
        raise InputError(f"{path}: an itemid cell is empty or not a number")
    return ids.to_numpy(dtype=np.int64)


@dataclass
class LabeventsCounts:
    """What the first pass over labevents found, per itemid."""

    rows: dict[int, int] = field(default_factory=dict)  # all rows
    numeric: dict[int, int] = field(default_factory=dict)  # rows with a valuenum
    units: dict[int, dict[str, int]] = field(default_factory=dict)  # numeric rows by unit

    def unit_of(self, itemid: int) -> str:
        """The unit most numeric rows of the item give ("" = none)."""
        units = self.units.get(itemid) or {"": 0}
        return max(sorted(units), key=lambda u: units[u])


def count_labevents(path: str | Path, chunk_rows: int = CHUNK_ROWS) -> LabeventsCounts:
    """First pass: rows, numeric rows and units per itemid (reads 3 columns, in chunks).

    Raises InputError naming the file when it cannot be parsed.
    """
    import pandas as pd

    path = Path(path)
    counts = LabeventsCounts()
    for chunk in _chunks(path, ["itemid", "valuenum", "valueuom"], chunk_rows):
        ids = _itemids(chunk, path)
        values = pd.to_numeric(chunk["valuenum"], errors="coerce").to_numpy(dtype=float)
        numeric = np.isfinite(values)
        frame = pd.DataFrame({"itemid": ids, "numeric": numeric, "unit": chunk["valueuom"]})
        for itemid, n in frame.groupby("itemid").size().items():
            counts.rows[int(itemid)] = counts.rows.get(int(itemid), 0) + int(n)
        kept = frame[numeric].assign(unit=lambda f: f["unit"].str.strip())
        for (itemid, unit), n in kept.groupby(["itemid", "unit"]).size().items():
            counts.numeric[int(itemid)] = counts.numeric.get(int(itemid), 0) + int(n)
            by_unit = counts.units.setdefault(int(itemid), {})
            by_unit[str(unit)] = by_unit.get(str(unit), 0) + int(n)
    return counts


def choose_items(
    counts: LabeventsCounts, names: dict[int, str], wanted: list[str], top: int, source: str
) -> list[int]:
    """The itemids to keep: those ``wanted`` names (a test name or an itemid), else the
    ``top`` items with most numeric rows (ties by itemid). Raises ConfigError for a wanted
    name that is not in d_labitems, naming ``source``."""
    if wanted:
        by_name = {name: itemid for itemid, name in names.items()}
        chosen = []
        for want in wanted:
            want = str(want).strip()
            itemid = (
                int(want)
                if want.isascii() and want.isdigit() and int(want) in names
                else by_name.get(want)
            )
            if itemid is None:
                close = sorted(n for n in by_name if n.startswith(f"{want} ("))
                hint = f" (it names {', '.join(close)})" if close else ""
                raise ConfigError(
                    f"lab_tests: {want!r} is neither a test name nor an itemid of {source}{hint}"
                )
            chosen.append(itemid)
        return list(dict.fromkeys(chosen))
    known = [i for i in counts.numeric if i in names and counts.numeric[i] > 0]
    return sorted(sorted(known), key=lambda i: -counts.numeric[i])[:top]


@dataclass
class LabeventsRead:
    """The second pass: kept measurements as a long table and what was left out."""

    table: pd.DataFrame  # subject (int), time (datetime64), code (index in items), value
    non_numeric: dict[int, int]  # kept items: rows without a valuenum
    other_unit: dict[int, int]  # kept items: rows in another unit than the item's
    bad_time: dict[int, int]  # kept items: rows whose charttime is empty or not a time
    other_patients: int = 0  # kept items' rows of patients ``keep_patient`` left out


def read_labevents(
    path: str | Path,
    names: dict[int, str],
    items: list[int],
    units: dict[int, str],
    subject_format: str = SUBJECT_FORMAT,
    chunk_rows: int = CHUNK_ROWS,
    keep_patient: Callable[[str], bool] | None = None,
) -> LabeventsRead:
    """Second pass: the numeric rows of ``items`` in their unit, as a compact long table.

    Rows are kept as integer subject, datetime64 charttime, a category test and float32
    value (about 20 bytes each); with ``keep_patient`` (patient key as ``subject_format``
    writes it -> keep?) other patients' rows are dropped as they are read. Raises
    InputError naming the file for a subject_id that is not a whole number.
    """
    import pandas as pd

    path = Path(path)
    check_subject_format(subject_format)
    item_index = {itemid: i for i, itemid in enumerate(items)}
    unit_array = np.array([units[i] for i in items], dtype=object)
    parts: list[pd.DataFrame] = []
    non_numeric: dict[int, int] = {}
    other_unit: dict[int, int] = {}
    bad_time: dict[int, int] = {}
    wanted: dict[float, bool] = {}  # subject -> keep_patient's answer, asked once
    other_patients = 0

    def add(target: dict[int, int], codes: np.ndarray) -> None:
        for code, n in zip(*np.unique(codes, return_counts=True), strict=True):
            target[items[code]] = target.get(items[code], 0) + int(n)

    columns = ["subject_id", "itemid", "charttime", "valuenum", "valueuom"]
    for chunk in _chunks(path, columns, chunk_rows):
        ids = _itemids(chunk, path)
        codes = pd.Series(ids).map(item_index)
        keep = codes.notna().to_numpy()
        if not keep.any():
            continue
        chunk = chunk[keep]
        code = codes[keep].to_numpy(dtype=np.int16)
        values = pd.to_numeric(chunk["valuenum"], errors="coerce").to_numpy(dtype=float)
        numeric = np.isfinite(values)
        add(non_numeric, code[~numeric])
        unit_ok = chunk["valueuom"].str.strip().to_numpy(dtype=object) == unit_array[code]
        add(other_unit, code[numeric & ~unit_ok])
        times = charttimes(chunk["charttime"])
        timed = times.notna().to_numpy()
        add(bad_time, code[numeric & unit_ok & ~timed])
        good = numeric & unit_ok & timed
        cells = chunk["subject_id"].str.strip()
        whole = cells.str.fullmatch(_WHOLE).to_numpy(dtype=bool)  # as subject_key's rule
        if (good & ~whole).any():
            cell = cells[good & ~whole].iloc[0]
            raise InputError(f"{path}: subject_id {cell[:20]!r} is not a whole number")
        subjects = pd.to_numeric(cells.where(whole, ""), errors="coerce")
        if keep_patient is not None:
            for subject in pd.unique(subjects[good]):
                if subject not in wanted:
                    wanted[subject] = keep_patient(subject_format.format(int(subject)))
            mine = subjects.map(wanted).eq(True).to_numpy()
            other_patients += int((good & ~mine).sum())
            good &= mine
        parts.append(
            pd.DataFrame(
                {
                    "subject": subjects[good].to_numpy(dtype=np.int64),
                    "time": times[good].to_numpy(),
                    "code": code[good],
                    "value": values[good].astype(np.float32),
                }
            )
        )
    long = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame({"subject": [], "time": [], "code": [], "value": []})
    )
    return LabeventsRead(long, non_numeric, other_unit, bad_time, other_patients)


def charttimes(cells: pd.Series) -> pd.Series:
    """labevents ``charttime`` cells as naive timestamps (NaT: empty or not a time).

    MIMIC-IV's own form (``2180-05-06 07:30:00``) is read by its exact format; the cells
    that miss it are read as ISO 8601 (``2180-05-06 07:30``, ``2180-05-06T07:30:00``), a
    zone suffix dropped (the wall clock is kept), so a re-saved or exported table gives
    the same panels. Other forms (``05/06/2180``) and ``now``/``today`` are NaT, not
    guessed. Never raises.
    """
    import pandas as pd

    times = pd.to_datetime(cells, format=_TIME_FORMAT, errors="coerce")
    text = cells.astype(str).str.strip()
    clock = text.str.lower().isin(CLOCK_WORDS).to_numpy()  # read by pandas as the run's time
    times[clock] = pd.NaT
    other = (times.isna() & text.ne("")).to_numpy() & ~clock
    if other.any():
        naive = text[other].str.replace(_ZONE, r"\1", regex=True)
        try:
            parsed = pd.to_datetime(naive, format="ISO8601", errors="coerce")
        except (ValueError, TypeError, OverflowError):
            parsed = pd.Series(pd.NaT, index=naive.index, dtype="datetime64[ns]")
        times[other] = parsed.to_numpy(dtype="datetime64[ns]")
    return times


def labevents_wide(
    read: LabeventsRead, names: dict[int, str], items: list[int], subject_format: str
) -> pd.DataFrame:
    """Panels ``patient_id, time, <test>...``: the kept rows of one patient at one
    charttime, a test measured twice there keeping its mean (as the long table's rule).
    """
    import pandas as pd

    long = read.table
    tests = [names[i] for i in items]
    if long.empty:  # typed as the panels are: later steps test the values with isfinite
        empty = {"patient_id": pd.Series(dtype=object), "time": pd.Series(dtype=object)}
        return pd.DataFrame({**empty, **{t: pd.Series(dtype=np.float32) for t in tests}})
    # Sort once by (subject, time, test); a panel starts where subject or time changes,
    # a cell (one test of one panel) where the test does too; each cell's mean goes into
    # a float32 matrix. Plain arrays, ~60 bytes a row, where a pivot of the long table
    # costs several times that.
    subject = long["subject"].to_numpy(np.int64)
    seconds = long["time"].to_numpy("datetime64[s]").astype(np.int64)
    code = long["code"].to_numpy(np.int64)
    order = np.lexsort((code, seconds, subject))
    subject, seconds, code = subject[order], seconds[order], code[order]
    values = long["value"].to_numpy(np.float64)[order]
    del order
    new_panel = np.ones(len(subject), bool)
    new_panel[1:] = (subject[1:] != subject[:-1]) | (seconds[1:] != seconds[:-1])
    new_cell = new_panel.copy()
    new_cell[1:] |= code[1:] != code[:-1]
    panel = np.cumsum(new_panel) - 1
    cell = np.cumsum(new_cell) - 1
    means = np.bincount(cell, weights=values) / np.bincount(cell)
    matrix = np.full((int(new_panel.sum()), len(items)), np.nan, dtype=np.float32)
    matrix[panel[new_cell], code[new_cell]] = means
    wide = pd.DataFrame(matrix, columns=tests)
    wide.insert(0, "time", seconds[new_panel].astype("datetime64[s]"))
    wide.insert(0, "subject", subject[new_panel])
    subjects = wide.pop("subject")
    unique = subjects.unique()
    keys = dict(zip(unique, (subject_format.format(int(s)) for s in unique), strict=True))
    wide.insert(0, "patient_id", subjects.map(keys))
    wide["time"] = wide["time"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return wide


_ECG_FOLDERS = re.compile(r"p\d{4}/p(\d{6,})/s\d+/[^/]+", re.ASCII)


def ecg_folder_subject(path: str | Path) -> str | None:
    """The subject_id a MIMIC-IV-ECG folder gives a record
    (``files/p1000/p10000032/s40689238/40689238.hea`` -> ``10000032``), else None."""
    parts = Path(path).parts[-4:]
    match = _ECG_FOLDERS.fullmatch("/".join(parts))
    return match.group(1) if match else None


def record_list_rows(table: pd.DataFrame, source: str | Path, subject_format: str) -> pd.DataFrame:
    """MIMIC-IV-ECG's ``record_list.csv`` as ECG map rows ``path, patient_id, time``.

    ``path`` (``files/p1000/p10000032/s40689238/40689238``, relative to the database
    folder, which holds the list) is made absolute against the list's folder; the
    patient is :func:`subject_key`; the time is ``ecg_time`` when the list has it.
    Raises InputError naming ``source`` for a subject_id that is not a whole number.
    """
    import pandas as pd

    folder = Path(source).expanduser().resolve().parent
    paths = [
        str(p) if Path(p).is_absolute() else str(folder / p) for p in table["path"].astype(str)
    ]
    patients = [
        subject_key(s, subject_format, source) if pd.notna(s) and str(s).strip() else None
        for s in table["subject_id"]
    ]
    times = table["ecg_time"] if "ecg_time" in table.columns else [None] * len(table)
    return pd.DataFrame({"path": paths, "patient_id": patients, "time": list(times)})
