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
import hmac
import json
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
from cxrkit.io import labs as labs_io
from cxrkit.io.deid import Pseudonymizer, load_or_create_salt
from cxrkit.io.local_rejects import write_local_rejects
from cxrkit.io.physio_files import ECG_ARRAY, ECG_INDEX, LABS_INFO, LABS_TABLE
from cxrkit.io.rows import printable_path
from cxrkit.io.schema import REJECTS_SCHEMA

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
REJECTS = "rejects.parquet"
ECG_SUFFIXES = (".hea", ".dcm")
# Times outside these years are corrupt (MIMIC's shifted dates reach the 2200s).
PLAUSIBLE_YEARS = (1900, 2300)


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
    labs: str | None = doc("lab table (CSV/Parquet), long or wide (see cxrkit.io.labs)", None)
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
        if not self.ecg and not self.labs:
            raise ConfigError("ingest-physio needs --ecg FILES and/or --labs TABLE")


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


def _read_map(path: str | None) -> dict[str, dict[str, Any]]:
    if not path:
        return {}
    table = labs_io.read_table(path)
    if "path" not in table.columns or "patient_id" not in table.columns:
        raise InputError(f"{path}: the ECG map needs columns path and patient_id")
    out: dict[str, dict[str, Any]] = {}
    for line, row in enumerate(table.to_dict("records"), start=2):
        key = str(Path(os.path.expanduser(str(row["path"]))).resolve())
        if not key.lower().endswith(ECG_SUFFIXES) and os.path.isfile(key + ".hea"):
            key += ".hea"  # a WFDB record named as record lists do, without extension
        if key in out:  # which line is right cannot be known: the file is rejected
            out[key] = {"duplicate_of": out[key].get("duplicate_of") or out[key]["line"]}
            out[key]["line"] = line
        else:
            out[key] = {**row, "line": line}
    return out


def _shifted(pseudo: Pseudonymizer, patient_raw: str, when: datetime | None) -> str | None:
    """The time moved by the patient's date offset (the images' rule), ISO, or None."""
    if when is None:
        return None
    return (when + timedelta(days=pseudo.date_offset_days(patient_raw))).isoformat()


def _implausible(when: datetime | None) -> tuple[str, str] | None:
    """``("bad_time", detail)`` for a time outside PLAUSIBLE_YEARS (the detail gives the
    year only: a full date is PHI), else None."""
    low, high = PLAUSIBLE_YEARS
    if when is not None and not low <= when.year <= high:
        return "bad_time", f"year {when.year} outside {low}-{high}"
    return None


def _text(value: Any) -> str | None:
    """A table cell as text, None for an empty or missing one (pandas reads them as NaN)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _parse_time(value: Any) -> datetime | None:
    import pandas as pd

    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None
    return None if pd.isna(stamp) else stamp.to_pydatetime().replace(tzinfo=None)


def id_params(cfg: PhysioConfig, salt: bytes) -> dict[str, Any]:
    """Settings that change the output; the salt only by a keyed fingerprint."""
    params = to_dict(cfg)
    params.pop("out")
    params.pop("salt_file")
    if not cfg.keep_paths:  # folder names carry PHI in real archives: salted tokens only
        token = Pseudonymizer(salt).path_token
        params["ecg"] = [f"path:{token(s)}" for s in cfg.ecg]
        for key in ("labs", "ecg_map"):
            params[key] = f"path:{token(params[key])}" if params[key] else None
    params["salt_fingerprint"] = hmac.new(salt, b"cxrkit-salt-fingerprint", "sha256").hexdigest()[
        :16
    ]
    return params


def _raw_inputs(files: list[Path], labs: str | None) -> list[dict]:
    """One raw-input ref over the bytes of every file (a WFDB record's companions too),
    hashed in chunks through the hash cache; a FIFO, device, link loop or unreadable
    file counts by its name and why (its reader rejects it), so none blocks or fails here.
    """
    import hashlib
    import stat

    from cxrkit.hashcache import sha256_file

    digest = hashlib.sha256()
    for path in files + ([Path(labs)] if labs else []):
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
    files = _expand(cfg.ecg)
    inputs: list[Any] = _raw_inputs(files, cfg.labs)
    dataset = open_artifact(cfg.dataset, kind="dataset") if cfg.dataset else None
    if dataset is not None:
        from cxrkit.io.linkage import check_same_salt

        check_same_salt(id_params(cfg, salt), dataset, f"--salt-file {cfg.salt_file}")
        inputs.append(dataset)
    writer = ArtifactWriter(
        Path(cfg.out), "physio", id_params(cfg, salt), inputs, SCHEMA_VERSION, force
    )
    if (done := writer.up_to_date()) is not None:
        return done
    work = writer.begin()
    rejects: list[dict[str, str]] = []
    local: dict[str, str] = {}  # rejects' path token -> what the user can find (local listing)
    ecg_stats = _ingest_ecgs(cfg, pseudo, files, _read_map(cfg.ecg_map), work, rejects, local)
    lab_stats = _ingest_labs(cfg, pseudo, dataset, work, rejects, local)
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
    signals, rows = [], []
    for path in files:
        shown = printable_path(str(path)) if cfg.keep_paths else pseudo.path_token(path.resolve())
        local[shown] = str(path)
        try:
            raw = ecg_io.read_ecg(path, max_seconds=window)
        except Reject as rej:
            rejects.append({"path": shown, "reason": rej.reason, "detail": rej.detail})
            continue
        except MemoryError:
            raise
        except Exception as exc:  # an unforeseen reader failure must not stop the run
            detail = ecg_io.scrub_detail(f"{type(exc).__name__}: {exc}", path)
            rejects.append({"path": shown, "reason": "unreadable", "detail": detail})
            continue
        override = mapping.get(str(path.resolve()), {})
        if override.get("duplicate_of"):
            detail = (
                f"ECG map lines {override['duplicate_of']} and {override['line']} name this file"
            )
            rejects.append({"path": shown, "reason": "duplicate_mapping_row", "detail": detail})
            continue
        patient = _text(override.get("patient_id")) or raw.patient
        when = _parse_time(override.get("time")) or raw.time
        problem = ecg_io.quality_problem(raw, settings) or _implausible(when)
        if problem is None and patient is None:
            problem = ("no_patient", "no patient id in the file or the ECG map")
        if problem is not None:
            rejects.append({"path": shown, "reason": problem[0], "detail": problem[1]})
            continue
        signal, lead_mask, sample_mask = ecg_io.preprocess(raw, settings)
        signals.append(signal)
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
    length = int(round(settings.rate * settings.seconds))
    array = np.stack(signals) if signals else np.zeros((0, 12, length), np.float32)
    np.save(work / ECG_ARRAY, array)
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
    return {"ecg_files": len(files), "ecgs": len(rows)}


def _ingest_labs(
    cfg: PhysioConfig,
    pseudo: Pseudonymizer,
    dataset: Artifact | None,
    work: Path,
    rejects: list[dict[str, str]],
    local: dict[str, str],
) -> dict[str, Any]:
    schema = pa.schema(
        [
            ("lab_id", pa.string()),
            ("patient_id", pa.string()),
            ("time", pa.string()),
            ("values", pa.list_(pa.float32())),
            ("flags", pa.list_(pa.float32())),
            ("fit", pa.bool_()),
        ]
    )
    if not cfg.labs:
        pq.write_table(pa.Table.from_pylist([], schema=schema), work / LABS_TABLE)
        (work / LABS_INFO).write_text(json.dumps({"tests": [], "units": {}, "knots": []}))
        return {"lab_panels": 0, "lab_tests": 0}
    wide, units = labs_io.to_wide(labs_io.read_table(cfg.labs), cfg.labs)
    tests = [c for c in wide.columns if c not in ("patient_id", "time")]
    held_out = _held_out_patients(dataset) if dataset is not None else set()
    keep, pseudonyms, times = [], [], []
    for index, row in wide.iterrows():
        patient = str(row["patient_id"]).strip()
        when = _parse_time(row["time"])
        token = f"{cfg.labs}#{index}"
        token = printable_path(token) if cfg.keep_paths else pseudo.path_token(token)
        local[token] = f"{cfg.labs}: patient_id {row['patient_id']}, time {row['time']}"
        if not patient:
            rejects.append({"path": token, "reason": "no_patient", "detail": "no patient id"})
            continue
        if when is None:  # the raw cell may hold anything (names, phone numbers): not quoted
            detail = "no time" if _text(row["time"]) is None else "a time that is not a date"
            rejects.append({"path": token, "reason": "no_time", "detail": detail})
            continue
        if (problem := _implausible(when)) is not None:
            rejects.append({"path": token, "reason": problem[0], "detail": problem[1]})
            continue
        if not np.isfinite(row[tests].to_numpy(dtype=float)).any():
            rejects.append({"path": token, "reason": "empty_panel", "detail": "no value measured"})
            continue
        keep.append(index)
        pseudonyms.append(pseudo.pseudonym("patient", patient))
        times.append(_shifted(pseudo, patient, when))
    values = wide.loc[keep, tests].to_numpy(dtype=float)
    fit = np.array([p not in held_out for p in pseudonyms], dtype=bool)
    knots = labs_io.fit_percentiles(values[fit] if fit.any() else values[:0])
    scaled, flags = labs_io.apply_percentiles(values, knots)
    rows = [
        {
            "lab_id": pseudo.pseudonym("lab", f"{pseudonyms[i]}|{times[i]}"),
            "patient_id": pseudonyms[i],
            "time": times[i],
            "values": scaled[i].tolist(),
            "flags": flags[i].tolist(),
            "fit": bool(fit[i]),
        }
        for i in range(len(keep))
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), work / LABS_TABLE)
    info = {"tests": tests, "units": units, "knots": np.nan_to_num(knots, nan=0.0).tolist()}
    (work / LABS_INFO).write_text(json.dumps(info))
    return {
        "lab_panels": len(rows),
        "lab_tests": len(tests),
        "lab_panels_fit": int(fit.sum()),
        "lab_missing_fraction": round(float(1 - flags.mean()), 4) if len(rows) else 0.0,
    }


def _held_out_patients(dataset: Artifact) -> set[str]:
    """Pseudonymised patients whose images are all outside the train split."""
    from cxrkit.io.dataset import dataset_shards

    splits: dict[str, set[str]] = {}
    for shard in dataset_shards(dataset):
        table = pq.read_table(shard, columns=["patient_id", "split"])
        for patient, split in zip(
            table.column("patient_id").to_pylist(), table.column("split").to_pylist(), strict=True
        ):
            splits.setdefault(str(patient), set()).add(str(split))
    return {p for p, s in splits.items() if "train" not in s}


# ------------------------------------------------------------------ reading back
def load_ecgs(physio: Artifact) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(signals (N, 12, T) memory-mapped, index rows) of a physio artifact."""
    from cxrkit.io.physio_files import load_ecgs as read

    return read(physio.path)


def load_labs(physio: Artifact) -> list[dict[str, Any]]:
    """The lab panel rows of a physio artifact (values and flags as lists)."""
    from cxrkit.io.physio_files import load_labs as read

    return read(physio.path)
