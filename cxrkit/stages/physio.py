"""`cxrkit ingest-physio`: ECG records and lab tables -> a `physio` artifact.

A separate command (not a ``distill --stage``) because physiology is data, like
images: it is ingested once, under the same salt as ``cxrkit ingest`` so that
patient pseudonyms join, and then paired with any dataset.

Files of the artifact:

- ``ecg.npy`` float32 (N, 12, rate*seconds): canonical lead order, see :mod:`cxrkit.io.ecg`;
- ``ecg.parquet``: ``ecg_id, patient_id, time, lead_mask, samples, orig_rate, orig_seconds``
  (row i describes ``ecg.npy[i]``; ``time`` shifted like the images' study dates);
- ``labs.parquet``: ``lab_id, patient_id, time, values, flags, fit`` (one panel per
  row; ``fit`` = used to fit the scaling) and ``labs.json`` (tests, units, knots);
- ``rejects.parquet``: ``path, reason, detail`` for every record or panel not kept
  (``path`` a salted token unless ``keep_paths``; ``detail`` never holds a path or a raw
  value from the file).

No raw input path reaches an artifact file (manifest params, rejects) unless
``keep_paths`` is set: folder and file names carry patient names in real archives.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cxrkit.artifacts import Artifact, ArtifactWriter, open_artifact
from cxrkit.config import doc, to_dict
from cxrkit.errors import ConfigError, InputError, Reject
from cxrkit.io import ecg as ecg_io
from cxrkit.io import mimic_iv
from cxrkit.io.deid import Pseudonymizer, load_or_create_salt, salt_fingerprint
from cxrkit.io.local_rejects import write_local_rejects
from cxrkit.io.path_scrub import exception_detail, printable_path, scrub_detail
from cxrkit.io.physio_cells import cell_text, implausible, parse_time
from cxrkit.io.physio_files import ECG_ARRAY, ECG_INDEX
from cxrkit.io.schema import REJECTS_SCHEMA
from cxrkit.io.table_files import csv_columns

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REJECTS = "rejects.parquet"
ECG_SUFFIXES = (".hea", ".dcm")


@dataclasses.dataclass
class ECGConfig:
    """The [ecg] table: how records are brought to one shape."""

    rate: int = doc("sampling rate after resampling, Hz [paper: 500]", 500)
    seconds: float = doc(
        "fixed length; longer records are cropped, shorter padded [paper: 10]", 10.0
    )
    min_seconds: float = doc("records shorter than this are rejected (too_short)", 5.0)
    bandpass: bool = doc("remove baseline wander (0.5 Hz high-pass) and > 100 Hz noise", True)
    notch_hz: float = doc("powerline notch frequency (50 or 60); 0 = off", 0.0)
    normalise: bool = doc("per-lead zero mean, unit standard deviation", True)

    def validate(self) -> None:
        """Raise ConfigError on impossible values."""
        if self.rate < 50 or self.seconds <= 0 or self.min_seconds < 0:
            raise ConfigError("ecg.rate must be >= 50 Hz and ecg.seconds > 0")


@dataclasses.dataclass
class PhysioConfig:
    """Settings of `cxrkit ingest-physio`."""

    out: str = doc("output physio artifact directory", "")
    ecg: list[str] = doc("ECG files, directories or globs (WFDB .hea records, DICOM .dcm)", [])
    ecg_map: str | None = doc(
        "CSV `path,patient_id[,time]`: patient (and time) of ECG files whose headers lack "
        "them or should be overridden (e.g. synthetic demo pairs)",
        None,
    )
    labs: str | None = doc(
        "lab table (CSV/Parquet), long or wide (see cxrkit.io.labs), or MIMIC-IV's "
        "hosp/labevents.csv(.gz) as it ships (see cxrkit.io.mimic_iv)",
        None,
    )
    lab_items: str | None = doc(
        "MIMIC-IV's d_labitems.csv(.gz) naming labevents' itemids (default: the one "
        "beside labevents)",
        None,
    )
    lab_tests: list[str] = doc(
        "labevents: the tests to keep, by d_labitems name ('Creatinine') or itemid; "
        "empty = the lab_top tests with most numeric values",
        [],
    )
    lab_top: int = doc(
        "labevents: how many tests to keep when lab_tests is empty [code: 50 labs]", 50
    )
    lab_patients: str = doc(
        "all | dataset: keep only the lab panels of patients with an image in --dataset "
        "(MIMIC-IV has ~300k patients with labs, MIMIC-CXR ~65k; memory follows the rows kept)",
        "all",
    )
    mimic_subject_format: str = doc(
        "how a MIMIC-IV subject_id (labevents, MIMIC-IV-ECG record_list.csv) becomes the "
        "patient key: p{} = MIMIC-CXR's folder key p10000032, which cxrkit ingest uses; "
        "{} = the bare number (images keyed by a mapping CSV of bare subject_ids)",
        "p{}",
    )
    dataset: str | None = doc(
        "dataset artifact whose splits decide which patients fit the lab scaling "
        "(patients with images only outside data split `train` are left out of the fit)",
        None,
    )
    salt_file: str = doc(
        "the HMAC salt used by `cxrkit ingest` (same salt = pseudonyms join)",
        "~/.config/cxrkit/salt.hex",
    )
    keep_paths: bool = doc(
        "store raw input paths in the manifest and rejects (otherwise only salted tokens)", False
    )
    ecg_settings: ECGConfig = dataclasses.field(
        default_factory=ECGConfig, metadata={"help": "ECG resampling and filtering"}
    )

    def validate(self) -> None:
        """Raise ConfigError when there is nothing to ingest."""
        if not self.ecg and not self.labs and not self.ecg_map:
            raise ConfigError(
                "ingest-physio needs --ecg FILES (or an --ecg-map listing them) and/or --labs TABLE"
            )
        if self.lab_patients not in ("all", "dataset"):
            raise ConfigError(f"lab_patients must be all or dataset, not {self.lab_patients!r}")
        if self.lab_patients == "dataset" and not self.dataset:
            raise ConfigError("lab_patients = dataset needs --dataset")
        if self.lab_top < 1:
            raise ConfigError("lab_top must be at least 1")
        mimic_iv.check_subject_format(self.mimic_subject_format)


def _expand(sources: list[str]) -> list[Path]:
    files: set[Path] = set()
    for source in sources:
        path = Path(os.path.expanduser(source))
        if path.is_dir():
            files |= {p for p in path.rglob("*") if p.suffix.lower() in ECG_SUFFIXES}
        elif path.exists():
            files.add(path)
        else:
            matched = [Path(p) for p in glob.glob(str(path), recursive=True)]
            if not matched:
                raise InputError(f"{source}: no such ECG file or directory")
            files |= {p for p in matched if p.suffix.lower() in ECG_SUFFIXES}
    return sorted(files)


def _read_map(path: str | None, subject_format: str) -> dict[str, dict[str, Any]]:
    """``{resolved record path: map row}`` of an ECG map: ``path, patient_id[, time]``,
    or MIMIC-IV-ECG's ``record_list.csv`` as it ships (``subject_id, path, ecg_time``;
    paths relative to its folder, patients keyed by ``subject_format``).

    Raises InputError naming the file for an unreadable table or missing columns.
    """
    if not path:
        return {}
    from cxrkit.io import labs as labs_io  # pandas: not imported by a no-op re-run

    table = labs_io.read_table(path)
    columns = [str(c) for c in table.columns]
    if mimic_iv.is_record_list(columns):
        table = mimic_iv.record_list_rows(table, path, subject_format)
    elif "subject_id" in columns and "path" not in columns:
        raise InputError(
            f"{path}: an ECG map needs a path column; MIMIC-IV-ECG's record_list.csv has "
            "one (machine_measurements.csv does not)"
        )
    if "path" not in table.columns or "patient_id" not in table.columns:
        raise InputError(f"{path}: the ECG map needs columns path and patient_id")
    out: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(table.to_dict("records"), start=2):
        key = str(Path(os.path.expanduser(str(row["path"]))).resolve())
        if not key.lower().endswith(ECG_SUFFIXES) and os.path.isfile(key + ".hea"):
            key += ".hea"  # a WFDB record named as record lists do, without extension
        if key in out:  # which line is right cannot be known: the file is rejected
            first = out[key].get("duplicate_of") or out[key]["line"]
            out[key] = {"duplicate_of": first, "line": line, "rows": out[key]["rows"] + 1}
        else:
            out[key] = {**row, "line": line, "rows": 1}
    return out


def _folder_patient(cfg: PhysioConfig, path: Path) -> str | None:
    """The patient a MIMIC-IV-ECG folder gives a record (``p1000/p10000032/s4.../``),
    keyed as ``mimic_subject_format``; None outside that layout."""
    subject = mimic_iv.ecg_folder_subject(path)
    return (
        None if subject is None else mimic_iv.subject_key(subject, cfg.mimic_subject_format, path)
    )


def _shifted(pseudo: Pseudonymizer, patient_raw: str, when: datetime | None) -> str | None:
    """The time moved by the patient's date offset (the images' rule), ISO, or None."""
    if when is None:
        return None
    return (when + timedelta(days=pseudo.date_offset_days(patient_raw))).isoformat()


def id_params(cfg: PhysioConfig, salt: bytes) -> dict[str, Any]:
    """Settings that change the output; the salt only by a keyed fingerprint."""
    params = to_dict(cfg)
    params.pop("out")
    params.pop("salt_file")
    if not cfg.keep_paths:  # folder names carry PHI in real archives: salted tokens only
        token = Pseudonymizer(salt).path_token
        params["ecg"] = [f"path:{token(s)}" for s in cfg.ecg]
        for key in ("labs", "ecg_map", "lab_items"):
            params[key] = f"path:{token(params[key])}" if params[key] else None
    params["salt_fingerprint"] = salt_fingerprint(salt)
    return params


def _tables(cfg: PhysioConfig) -> list[str]:
    """The table files whose bytes the artifact depends on: the lab table, the ECG map,
    and for MIMIC-IV labevents the d_labitems that names its tests."""
    tables = [t for t in (cfg.labs, cfg.ecg_map) if t]
    if cfg.labs and mimic_iv.is_labevents(csv_columns(cfg.labs)):
        tables.append(str(mimic_iv.find_labitems(cfg.labs, cfg.lab_items)))
    return tables


def _raw_inputs(files: list[Path], tables: list[str]) -> list[dict]:
    """One raw-input ref over the bytes of every file (a WFDB record's companions too),
    hashed in chunks through the hash cache; a FIFO, device, link loop or unreadable
    file counts by its name and why (its reader rejects it), so none blocks or fails here.
    """
    import hashlib
    import stat

    from cxrkit.hashcache import sha256_file

    digest = hashlib.sha256()
    for path in files + [Path(t) for t in tables]:
        parts = [path]
        if path.suffix == ".hea":
            parts = sorted(path.parent.glob(glob.escape(path.stem) + ".*"))
        for part in parts:
            try:
                mode = os.stat(part).st_mode
                content = (
                    sha256_file(part) if stat.S_ISREG(mode) else f"special:{stat.S_IFMT(mode)}"
                )
            except OSError as exc:
                content = f"unreadable:{exc.errno}"
            digest.update(f"{part.name}\0{content}\n".encode("utf-8", "surrogateescape"))
    return [{"kind": "raw", "id": digest.hexdigest(), "path": f"{len(files)} ECG files + labs"}]


def run(cfg: PhysioConfig, force: bool = False) -> Artifact:
    """Ingest ECGs and labs; publish the physio artifact at ``cfg.out``.

    Raises ConfigError (nothing to do, no --out), InputError (unreadable table
    or map, missing files), ArtifactError (dataset artifact unusable).
    """
    if not cfg.out:
        raise ConfigError("--out is required")
    cfg.validate()
    salt = load_or_create_salt(Path(os.path.expanduser(cfg.salt_file)))
    pseudo = Pseudonymizer(salt)
    # no --ecg: the ECG files are those the map lists (MIMIC-IV-ECG's record_list.csv);
    # with --ecg the map (its bytes are in the id) is read only when there is work to do
    mapping = None if cfg.ecg else _read_map(cfg.ecg_map, cfg.mimic_subject_format)
    files = _expand(cfg.ecg) if cfg.ecg else sorted(Path(k) for k in mapping or {})
    inputs: list[Any] = _raw_inputs(files, _tables(cfg))
    dataset = open_artifact(cfg.dataset, kind="dataset") if cfg.dataset else None
    if dataset is not None:
        from cxrkit.io.linkage import check_same_salt

        check_same_salt(id_params(cfg, salt), dataset, f"--salt-file {cfg.salt_file}")
        inputs.append(dataset)
    writer = ArtifactWriter(
        Path(cfg.out), "physio", id_params(cfg, salt), inputs, SCHEMA_VERSION, force
    )
    if (done := writer.up_to_date()) is not None:
        return done  # the no-op: no pandas, torch or image decoders imported
    from cxrkit.stages import physio_labs

    if mapping is None:
        mapping = _read_map(cfg.ecg_map, cfg.mimic_subject_format)
    work = writer.begin()
    rejects: list[dict[str, str]] = []
    local: dict[str, str] = {}  # rejects' path token -> what the user can find (local listing)
    ecg_stats = _ingest_ecgs(cfg, pseudo, files, mapping, work, rejects, local)
    lab_stats = physio_labs.ingest_labs(cfg, pseudo, dataset, work, rejects, local)
    pq.write_table(pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA), work / REJECTS)
    by_reason: dict[str, int] = {}
    for row in rejects:
        by_reason[row["reason"]] = by_reason.get(row["reason"], 0) + 1
    stats = {**ecg_stats, **lab_stats, "rejects": len(rejects), "rejects_by_reason": by_reason}
    schema = {
        "ecg": {
            "leads": list(ecg_io.LEADS),
            "rate": cfg.ecg_settings.rate,
            "samples": int(round(cfg.ecg_settings.rate * cfg.ecg_settings.seconds)),
        },
    }
    artifact = writer.publish(schema=schema, stats=stats)
    write_local_rejects(artifact, None, None, local)
    return artifact


def _ingest_ecgs(
    cfg: PhysioConfig,
    pseudo: Pseudonymizer,
    files: list[Path],
    mapping: dict[str, dict[str, Any]],
    work: Path,
    rejects: list[dict[str, str]],
    local: dict[str, str],
) -> dict[str, Any]:
    settings = ecg_io.ECGSettings(**to_dict(cfg.ecg_settings))
    window = max(settings.seconds, settings.min_seconds)
    rows = []
    length = int(round(settings.rate * settings.seconds))
    # signals go to disk one by one (MIMIC-IV-ECG holds ~800k records, 192 GB as float32)
    raw_signals = work / (ECG_ARRAY + ".part")
    with raw_signals.open("wb") as signals:
        for path in files:
            shown = (
                printable_path(str(path)) if cfg.keep_paths else pseudo.path_token(path.resolve())
            )
            local[shown] = str(path)
            try:
                raw = ecg_io.read_ecg(path, max_seconds=window)
            except Reject as rej:
                rejects.append(
                    {"path": shown, "reason": rej.reason, "detail": scrub_detail(rej.detail, path)}
                )
                continue
            except MemoryError:
                raise
            except Exception as exc:  # an unforeseen reader failure must not stop the run
                detail = exception_detail(exc, path)
                rejects.append({"path": shown, "reason": "unreadable", "detail": detail})
                continue
            override = mapping.get(str(path.resolve()), {})
            if override.get("duplicate_of"):
                lines = f"{override['duplicate_of']} and {override['line']}"
                detail = f"ECG map lines {lines} name this file"
                rejects.append({"path": shown, "reason": "duplicate_mapping_row", "detail": detail})
                continue
            patient = (
                cell_text(override.get("patient_id")) or raw.patient or _folder_patient(cfg, path)
            )
            when = parse_time(override.get("time")) or raw.time
            problem = ecg_io.quality_problem(raw, settings) or implausible(when)
            if problem is None and patient is None:
                problem = ("no_patient", "no patient id in the file or the ECG map")
            if problem is not None:
                rejects.append({"path": shown, "reason": problem[0], "detail": problem[1]})
                continue
            signal, lead_mask, sample_mask = ecg_io.preprocess(raw, settings)
            if signal.shape != (12, length):  # the file's shape would be wrong, not an error
                raise ValueError(f"preprocess gave {signal.shape}, not (12, {length})")
            signals.write(np.ascontiguousarray(signal, dtype="<f4").tobytes())
            rows.append(
                {
                    "ecg_id": pseudo.pseudonym("ecg", str(path.resolve())),
                    "patient_id": pseudo.pseudonym("patient", str(patient)),
                    "time": _shifted(pseudo, str(patient), when),
                    "lead_mask": lead_mask.tolist(),
                    "samples": int(sample_mask.sum()),
                    "orig_rate": float(raw.rate),
                    "orig_seconds": float(raw.seconds),
                }
            )
    _write_npy(work / ECG_ARRAY, raw_signals, (len(rows), 12, length))
    counts = {"ecg_files": len(files), "ecgs": len(rows)}
    if cfg.ecg_map:  # every map row names a file read above, or is counted here
        given = {str(path.resolve()) for path in files}
        counts["ecg_map_rows"] = sum(entry["rows"] for entry in mapping.values())
        counts["ecg_map_rows_outside_ecg"] = sum(
            entry["rows"] for key, entry in mapping.items() if key not in given
        )
        if counts["ecg_map_rows_outside_ecg"]:
            log.info(
                "%d of %d ECG map rows name a record outside --ecg: not read",
                counts["ecg_map_rows_outside_ecg"],
                counts["ecg_map_rows"],
            )
    schema = pa.schema(
        [
            ("ecg_id", pa.string()),
            ("patient_id", pa.string()),
            ("time", pa.string()),
            ("lead_mask", pa.list_(pa.uint8())),
            ("samples", pa.int64()),
            ("orig_rate", pa.float64()),
            ("orig_seconds", pa.float64()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), work / ECG_INDEX)
    return counts


def _write_npy(target: Path, raw: Path, shape: tuple[int, ...]) -> None:
    """``target`` as the .npy file ``np.save`` writes for a float32 array of ``shape``
    whose bytes are in ``raw`` (C order), copied in blocks; ``raw`` is removed."""
    import shutil

    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False}
    with target.open("wb") as out, raw.open("rb") as data:
        np.lib.format.write_array_header_1_0(out, {**header, "shape": shape})
        shutil.copyfileobj(data, out, 16 << 20)
    raw.unlink()


# ------------------------------------------------------------------ reading back
def load_ecgs(physio: Artifact) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(signals (N, 12, T) memory-mapped, index rows) of a physio artifact."""
    from cxrkit.io.physio_files import load_ecgs as read

    return read(physio.path)


def load_labs(physio: Artifact) -> list[dict[str, Any]]:
    """The lab panel rows of a physio artifact (values and flags as lists)."""
    from cxrkit.io.physio_files import load_labs as read

    return read(physio.path)
