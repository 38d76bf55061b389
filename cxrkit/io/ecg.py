"""12-lead ECG records: read WFDB and DICOM waveforms, check them, bring them to one shape.

A :class:`RawECG` is what a file holds (signal in millivolts, its rate, its
lead names, the acquisition time and patient id when the file has them).
:func:`preprocess` turns it into the fixed tensor the physio artifact stores:
``(12, rate * seconds)`` float32 in the canonical lead order
(:data:`LEADS`), with a lead mask (missing leads are zero rows, mask 0) and a
sample mask (1 where the record had signal, 0 where it was padded).

Checks (:func:`quality_problem`) give the rejects table's reasons:
``too_short``, ``nan`` (non-finite samples), ``flat_line`` (every present
lead constant), ``unknown_units`` (no conversion to millivolts),
``no_known_leads``.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from pathlib import Path

import numpy as np

from cxrkit.errors import InputError

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# Units to millivolts. WFDB writes "mV"/"uV"; DICOM uses UCUM codes (uV, mV, V).
UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}
FLAT_STD_MV = 1e-4  # a lead whose standard deviation is below 0.1 uV carries no signal


@dataclasses.dataclass
class RawECG:
    """One record as read: ``signal`` (samples, channels) in mV, its ``rate`` in Hz.

    ``leads`` are the channel names as canonical lead names (None for a channel
    that is not one of the 12); ``time`` the acquisition time (naive, as
    recorded) or None; ``patient`` the raw patient id or None; ``source`` the
    file it came from.
    """

    signal: np.ndarray
    rate: float
    leads: list[str | None]
    time: datetime | None
    patient: str | None
    source: str
    units_ok: bool = True


def canonical_lead(name: str) -> str | None:
    """The canonical name of a lead label ("Lead I (Einthoven)", "avr", "V1") or None."""
    text = str(name).strip()
    text = re.sub(r"^lead\s+", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\s*\(.*\)$", "", text).strip()
    for lead in LEADS:
        if text.lower() == lead.lower():
            return lead
    return None


def _to_mv(unit: str | None) -> float | None:
    return UNIT_TO_MV.get(str(unit or "").strip().lower())


# ------------------------------------------------------------------ readers
def read_wfdb(record: str | Path) -> RawECG:
    """Read a WFDB record (``path/name`` without extension; ``.hea`` + signal files).

    Signals are converted to mV from each channel's units; a channel in a unit
    without a known conversion marks the record ``units_ok = False`` (rejected).
    The time comes from the header's base date/time; the patient id from a
    header comment ``patient_id: X`` (or ``patient: X``) when there is one.
    Raises InputError when the record cannot be read.
    """
    import wfdb

    record = str(record)
    if record.endswith(".hea"):
        record = record[:-4]
    try:
        rec = wfdb.rdrecord(record, physical=True)
    except Exception as exc:  # wfdb raises many kinds
        raise InputError(f"{record}: not a readable WFDB record ({exc})") from exc
    signal = np.asarray(rec.p_signal, dtype=np.float64)
    scales = [_to_mv(u) for u in (rec.units or [None] * signal.shape[1])]
    units_ok = all(s is not None for s in scales)
    if units_ok:
        signal = signal * np.asarray(scales, dtype=np.float64)[None, :]
    when = None
    if rec.base_date is not None:
        when = datetime.combine(rec.base_date, rec.base_time or datetime.min.time())
    patient = None
    for comment in rec.comments or []:
        match = re.match(r"\s*patient(?:_id)?\s*[:=]\s*(\S+)", comment, flags=re.IGNORECASE)
        if match:
            patient = match.group(1)
    return RawECG(
        signal=signal,
        rate=float(rec.fs),
        leads=[canonical_lead(n) for n in rec.sig_name],
        time=when,
        patient=patient,
        source=record,
        units_ok=units_ok,
    )


def read_dicom_ecg(path: str | Path) -> RawECG:
    """Read the rhythm waveform of a DICOM 12-lead ECG (pydicom).

    Takes the first multiplex group labelled RHYTHM (else the first one);
    values are pydicom's ``waveform_array`` (sensitivity and baseline applied)
    converted to mV from the channel sensitivity units. Time: AcquisitionDateTime
    (else ContentDate + ContentTime); patient: PatientID.
    Raises InputError when the file has no waveform.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
        groups = list(ds.WaveformSequence)
    except Exception as exc:
        raise InputError(f"{path}: not a DICOM waveform ({exc})") from exc
    index = next(
        (
            i
            for i, g in enumerate(groups)
            if str(g.get("MultiplexGroupLabel", "")).upper() == "RHYTHM"
        ),
        0,
    )
    group = groups[index]
    signal = np.asarray(ds.waveform_array(index), dtype=np.float64)
    leads, scales = [], []
    for channel in group.ChannelDefinitionSequence:
        source = channel.ChannelSourceSequence[0]
        leads.append(canonical_lead(source.get("CodeMeaning", "")))
        units = channel.get("ChannelSensitivityUnitsSequence")
        scales.append(_to_mv(units[0].get("CodeValue") if units else None))
    units_ok = all(s is not None for s in scales)
    if units_ok:
        signal = signal * np.asarray(scales)[None, :]
    return RawECG(
        signal=signal,
        rate=float(group.SamplingFrequency),
        leads=leads,
        time=_dicom_time(ds),
        patient=str(ds.get("PatientID") or "") or None,
        source=str(path),
        units_ok=units_ok,
    )


def _dicom_time(ds) -> datetime | None:
    text = str(ds.get("AcquisitionDateTime") or "")
    if not text:
        text = str(ds.get("ContentDate") or "") + str(ds.get("ContentTime") or "")
    text = text.split(".")[0].split("+")[0]
    for fmt, width in (("%Y%m%d%H%M%S", 14), ("%Y%m%d%H%M", 12), ("%Y%m%d", 8)):
        try:
            return datetime.strptime(text[:width], fmt)
        except ValueError:
            continue
    return None


def read_ecg(path: str | Path) -> RawECG:
    """Read a WFDB record (``.hea`` or the record path) or a DICOM ECG by its file."""
    path = Path(path)
    if path.suffix == ".hea" or path.with_suffix(".hea").is_file():
        return read_wfdb(path.with_suffix(""))
    return read_dicom_ecg(path)


# ------------------------------------------------------------------ preprocessing
@dataclasses.dataclass
class ECGSettings:
    """How records are brought to one shape (the [ecg] table of ingest-physio)."""

    rate: int = 500
    seconds: float = 10.0
    min_seconds: float = 5.0
    bandpass: bool = True  # baseline wander (high-pass 0.5 Hz) and a 100 Hz low-pass
    notch_hz: float = 0.0  # powerline notch (50 or 60); 0 = off
    normalise: bool = True  # per-lead zero mean, unit standard deviation


def quality_problem(raw: RawECG, settings: ECGSettings) -> tuple[str, str] | None:
    """``(reason, detail)`` when a record cannot be used, else None."""
    if not raw.units_ok:
        return "unknown_units", "a channel's units have no conversion to mV"
    present = [i for i, lead in enumerate(raw.leads) if lead is not None]
    if not present:
        return "no_known_leads", f"channels {raw.leads!r} are none of the 12 leads"
    seconds = raw.signal.shape[0] / raw.rate
    if seconds < settings.min_seconds:
        return "too_short", f"{seconds:.2f} s < {settings.min_seconds} s"
    signal = raw.signal[:, present]
    if not np.isfinite(signal).all():
        bad = int((~np.isfinite(signal)).sum())
        return "nan", f"{bad} non-finite samples"
    if (signal.std(axis=0) < FLAT_STD_MV).all():
        return "flat_line", "every lead is constant"
    return None


def preprocess(raw: RawECG, settings: ECGSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored form of a usable record: ``(signal, lead_mask, sample_mask)``.

    signal (12, rate*seconds) float32: leads reordered to :data:`LEADS` (a
    missing lead is a zero row), resampled (polyphase, scipy) to
    ``settings.rate``, optionally band-passed (0.5-100 Hz zero-phase Butterworth,
    order 2) and notched, cropped to the first ``seconds`` or zero-padded at the
    end, each present lead normalised to zero mean and unit standard deviation
    over its real samples. lead_mask (12,) uint8; sample_mask (T,) uint8.
    """
    from fractions import Fraction

    from scipy import signal as sps

    length = int(round(settings.rate * settings.seconds))
    data = np.zeros((len(LEADS), raw.signal.shape[0]), dtype=np.float64)
    lead_mask = np.zeros(len(LEADS), dtype=np.uint8)
    for channel, lead in enumerate(raw.leads):
        if lead is not None and not lead_mask[LEADS.index(lead)]:
            data[LEADS.index(lead)] = raw.signal[:, channel]
            lead_mask[LEADS.index(lead)] = 1
    if raw.rate != settings.rate:
        ratio = Fraction(settings.rate / raw.rate).limit_denominator(1000)
        data = sps.resample_poly(data, ratio.numerator, ratio.denominator, axis=1)
    nyquist = settings.rate / 2
    if settings.bandpass:
        high = min(100.0, 0.9 * nyquist)
        sos = sps.butter(2, [0.5 / nyquist, high / nyquist], btype="band", output="sos")
        data = sps.sosfiltfilt(sos, data, axis=1)
    if settings.notch_hz and settings.notch_hz < nyquist:
        b, a = sps.iirnotch(settings.notch_hz, Q=30.0, fs=settings.rate)
        data = sps.filtfilt(b, a, data, axis=1)
    real = min(data.shape[1], length)
    out = np.zeros((len(LEADS), length), dtype=np.float64)
    out[:, :real] = data[:, :real]
    if settings.normalise:
        part = out[:, :real]
        mean = part.mean(axis=1, keepdims=True)
        std = part.std(axis=1, keepdims=True)
        out[:, :real] = (part - mean) / np.where(std > FLAT_STD_MV, std, 1.0)
    out *= lead_mask[:, None]
    sample_mask = np.zeros(length, dtype=np.uint8)
    sample_mask[:real] = 1
    return out.astype(np.float32), lead_mask, sample_mask
