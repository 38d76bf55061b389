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
``no_known_leads``, ``bad_rate``.

The readers trust no header: before a sample is read they check the header's
size, channel count, sampling rate, format codes and signal file names (plain
names in the record's folder, regular files), and that each signal file holds
the samples its header claims; they read at most ``max_seconds`` (+ a margin),
so neither a lying header nor a 24-hour recording makes them allocate more than
one window. A file they cannot use raises :class:`~cxrkit.errors.Reject` with a
reason (``missing_file``, ``not_a_file``, ``symlink_loop``, ``unreadable_file``,
``bad_header``, ``bad_rate``, ``too_many_channels``, ``bad_format``, ``bad_signal_file``,
``truncated``, ``no_waveform``, ``too_large``, ``unreadable``) and a detail that never holds
the file's path or name (paths carry patient names in real archives).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from datetime import datetime
from pathlib import Path

import numpy as np

from cxrkit.errors import Reject
from cxrkit.io.path_scrub import exception_detail

LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# Units to millivolts. WFDB writes "mV"/"uV"; DICOM uses UCUM codes (uV, mV, V).
UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}
FLAT_STD_MV = 1e-4  # a lead whose standard deviation is below 0.1 uV carries no signal
# What a header may claim before a byte of signal is read (ECG carts record 12-15
# channels at 250-10000 Hz; headers are a few kB even with long comments).
MAX_CHANNELS = 64
RATE_RANGE_HZ = (25.0, 20_000.0)
MAX_HEADER_BYTES = 1 << 20
MAX_DICOM_BYTES = 256 << 20  # a 12-lead DICOM ECG is well under 10 MB; pydicom reads it whole
READ_MARGIN_S = 2.0  # read this much past the kept window so filters see no cut edge
# Bytes per sample of the WFDB signal formats (0: FLAC-compressed, size not checkable).
WFDB_BYTES_PER_SAMPLE = {
    "8": 1.0, "16": 2.0, "24": 3.0, "32": 4.0, "61": 2.0, "80": 1.0, "160": 2.0,
    "212": 1.5, "310": 4 / 3, "311": 4 / 3, "508": 0.0, "516": 0.0, "524": 0.0,
}  # fmt: skip


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
    total_samples: int | None = None  # the record's length when only a window was read

    @property
    def seconds(self) -> float:
        """The record's full duration (not only the window read)."""
        return (self.total_samples or self.signal.shape[0]) / self.rate


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
def _check_rate(rate: object) -> float:
    """The sampling rate as a float. Raises Reject("bad_rate") outside RATE_RANGE_HZ."""
    try:
        value = float(rate)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Reject("bad_rate", f"sampling rate {str(rate)[:20]!r} is not a number") from None
    if (problem := _rate_outside(value)) is not None:
        raise Reject("bad_rate", problem)
    return value


def _rate_outside(rate: float) -> str | None:
    """Why ``rate`` (Hz) is outside RATE_RANGE_HZ, or None when it is inside."""
    low, high = RATE_RANGE_HZ
    if math.isfinite(rate) and low <= rate <= high:
        return None
    return f"sampling rate {rate:g} Hz outside {low:g}-{high:g} Hz"


def _stated_rate(header_file: Path, parsed: float) -> object:
    """The rate the header's record line states: wfdb reads a field it cannot parse
    (``-1000``, ``0.5e``) as its default of 250 Hz; the stated text is checked instead."""
    for line in header_file.read_bytes().decode("latin-1").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            fields = line.split()
            if len(fields) < 3:
                return parsed  # no rate given: WFDB's default
            text = re.split(r"[/(]", fields[2])[0]
            try:
                return float(text)
            except ValueError:
                return text
    return parsed


def _check_channels(count: object) -> int:
    """The channel count. Raises Reject: ``bad_header`` when there is none or it is below
    1 (not "too many"), ``too_many_channels`` above MAX_CHANNELS."""
    if not isinstance(count, int | np.integer) or int(count) < 1:
        raise Reject("bad_header", f"header claims {str(count)[:20]} channels")
    if int(count) > MAX_CHANNELS:
        raise Reject(
            "too_many_channels", f"header claims {count} channels (1-{MAX_CHANNELS} allowed)"
        )
    return int(count)


def _window(rate: float, total: int, max_seconds: float | None) -> int:
    """Samples to read: the whole record, or ``max_seconds`` + the margin of it."""
    if max_seconds is None:
        return total
    return min(total, int(math.ceil((max_seconds + READ_MARGIN_S) * rate)))


def _check_wfdb_files(header, folder: Path) -> int:
    """Every signal file a single-segment header names: a plain name of a regular file in
    the record's folder, a known format, and (uncompressed) big enough for the samples
    the header claims. Returns the record's length in samples (from the file size when
    the header gives none, as wfdb does). Raises Reject."""
    from cxrkit.io.rows import check_source_file

    files: dict[str, list[float]] = {}  # name -> [byte offset, bytes a frame]
    for name, fmt, offset, spf in zip(
        header.file_name,
        header.fmt,
        header.byte_offset or [0] * header.n_sig,
        header.samps_per_frame or [1] * header.n_sig,
        strict=True,
    ):
        if name in ("", ".", "..") or name != os.path.basename(name) or os.path.isabs(name):
            raise Reject("bad_signal_file", "the header names a signal file outside its folder")
        if str(fmt) not in WFDB_BYTES_PER_SAMPLE:
            raise Reject(
                "bad_format", f"WFDB signal format {str(fmt)[:10]!r} is not one wfdb reads"
            )
        entry = files.setdefault(name, [float(offset or 0), 0.0])
        entry[1] += WFDB_BYTES_PER_SAMPLE[str(fmt)] * (spf or 1)
    sizes = {}
    for name in files:
        check_source_file(folder / name)
        sizes[name] = (folder / name).stat().st_size
    length = header.sig_len
    if length is None:
        first = header.file_name[0]
        offset, frame = files[first]
        if not frame:
            raise Reject("bad_header", "a compressed record whose header gives no length")
        length = int(max(sizes[first] - offset, 0) // frame)
    if length < 0:
        raise Reject("bad_header", f"a negative record length ({length})")
    for name, (offset, frame) in files.items():
        need = math.floor(offset + frame * length)
        if frame and sizes[name] < need:
            raise Reject(
                "truncated",
                f"the header claims {length} samples a channel; a signal file holds "
                f"{sizes[name]} of the {need} bytes they need",
            )
    return int(length)


def read_wfdb(record: str | Path, max_seconds: float | None = None) -> RawECG:
    """Read a WFDB record (``path/name`` without extension; ``.hea`` + signal files).

    Signals are converted to mV from each channel's units; a channel in a unit
    without a known conversion marks the record ``units_ok = False`` (rejected).
    The time comes from the header's base date/time; the patient id from a
    header comment ``patient_id: X`` (or ``patient: X``) when there is one.
    The header is checked first (size, channels, rate, formats, signal files and
    their sizes); with ``max_seconds`` only that much (+ READ_MARGIN_S) is read
    (``total_samples`` keeps the record's length).
    Raises Reject (reasons in the module docstring) when the record cannot be used.
    """
    import wfdb

    from cxrkit.io.rows import check_source_file

    record = str(record)
    if record.endswith(".hea"):
        record = record[:-4]
    header_file = Path(record + ".hea")
    check_source_file(header_file)
    if header_file.stat().st_size > MAX_HEADER_BYTES:
        raise Reject("bad_header", f"a header of {header_file.stat().st_size} bytes (> 1 MiB)")
    try:
        header = wfdb.rdheader(record)
    except Exception as exc:  # wfdb raises many kinds
        raise Reject(
            "bad_header", f"not a readable WFDB header ({exception_detail(exc, record)})"
        ) from exc
    _check_channels(header.n_sig)
    rate = _check_rate(_stated_rate(header_file, header.fs))
    if isinstance(header, wfdb.MultiRecord):
        if header.sig_len is None or header.sig_len < 0:
            raise Reject("bad_header", "a multi-segment header without a record length")
        for name in header.seg_name or []:
            if name != os.path.basename(name):
                raise Reject("bad_signal_file", "the header names a segment outside its folder")
        length = int(header.sig_len)
    else:
        length = _check_wfdb_files(header, header_file.parent)
    if length == 0:
        raise Reject("too_short", "the record holds no samples")
    sampto = _window(rate, length, max_seconds)
    try:
        rec = wfdb.rdrecord(record, physical=True, sampto=max(sampto, 1))
        signal = np.asarray(rec.p_signal, dtype=np.float64)
        if signal.ndim != 2 or signal.shape[1] != len(rec.sig_name):
            raise ValueError(f"signal of shape {signal.shape} for {len(rec.sig_name)} channels")
    except Exception as exc:  # wfdb raises many kinds
        raise Reject(
            "unreadable", f"not a readable WFDB record ({exception_detail(exc, record)})"
        ) from exc
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
        rate=rate,
        leads=[canonical_lead(n) for n in rec.sig_name],
        time=when,
        patient=patient,
        source=record,
        units_ok=units_ok,
        total_samples=length,
    )


def read_dicom_ecg(path: str | Path, max_seconds: float | None = None) -> RawECG:
    """Read the rhythm waveform of a DICOM 12-lead ECG (pydicom).

    Takes the first multiplex group labelled RHYTHM (else the first one);
    values are pydicom's ``waveform_array`` (sensitivity and baseline applied)
    converted to mV from the channel sensitivity units. Time: AcquisitionDateTime
    (else ContentDate + ContentTime); patient: PatientID. The group's channel
    count and rate are checked first; with ``max_seconds`` only that much
    (+ READ_MARGIN_S) is kept.
    Raises Reject (``no_waveform``, ``bad_rate``, ``too_many_channels``,
    ``unreadable``...) when the file cannot be used.
    """
    import pydicom

    from cxrkit.io.rows import check_source_file

    check_source_file(Path(path))
    if (size := Path(path).stat().st_size) > MAX_DICOM_BYTES:
        raise Reject("too_large", f"{size} bytes, more than a DICOM ECG holds (256 MiB)")
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise Reject("unreadable", f"not a DICOM file ({exception_detail(exc, path)})") from exc
    try:
        groups = list(ds.get("WaveformSequence") or [])
    except Exception as exc:
        raise Reject(
            "no_waveform", f"unreadable WaveformSequence ({exception_detail(exc, path)})"
        ) from exc
    if not groups:
        raise Reject("no_waveform", "no WaveformSequence: not a DICOM waveform")
    index = next(
        (
            i
            for i, g in enumerate(groups)
            if str(g.get("MultiplexGroupLabel", "")).upper() == "RHYTHM"
        ),
        0,
    )
    group = groups[index]
    _check_channels(group.get("NumberOfWaveformChannels"))
    rate = _check_rate(group.get("SamplingFrequency"))
    try:
        signal = np.asarray(ds.waveform_array(index), dtype=np.float64)
        leads, scales = [], []
        for channel in group.ChannelDefinitionSequence:
            source = channel.ChannelSourceSequence[0]
            leads.append(canonical_lead(source.get("CodeMeaning", "")))
            units = channel.get("ChannelSensitivityUnitsSequence")
            scales.append(_to_mv(units[0].get("CodeValue") if units else None))
        if signal.ndim != 2 or signal.shape[1] != len(leads):
            raise ValueError(f"waveform of shape {signal.shape} for {len(leads)} channels")
        when = _dicom_time(ds)
        patient = str(ds.get("PatientID") or "") or None
    except Exception as exc:  # pydicom raises many kinds on a broken waveform
        raise Reject(
            "unreadable", f"a broken DICOM waveform ({exception_detail(exc, path)})"
        ) from exc
    total = signal.shape[0]
    signal = signal[: _window(rate, total, max_seconds)]
    units_ok = all(s is not None for s in scales)
    if units_ok:
        signal = signal * np.asarray(scales)[None, :]
    return RawECG(
        signal=signal,
        rate=rate,
        leads=leads,
        time=when,
        patient=patient,
        source=str(path),
        units_ok=units_ok,
        total_samples=total,
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


def read_ecg(path: str | Path, max_seconds: float | None = None) -> RawECG:
    """Read a WFDB record (``.hea`` or the record path) or a DICOM ECG by its file.

    ``max_seconds``: read only that much (+ READ_MARGIN_S). Raises Reject."""
    path = Path(path)
    if path.suffix == ".hea" or path.with_suffix(".hea").is_file():
        return read_wfdb(path.with_suffix(""), max_seconds)
    return read_dicom_ecg(path, max_seconds)


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
    if (problem := _rate_outside(raw.rate)) is not None:
        return "bad_rate", problem
    present = [i for i, lead in enumerate(raw.leads) if lead is not None]
    if not present:
        return "no_known_leads", f"channels {raw.leads!r} are none of the 12 leads"
    seconds = raw.seconds
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
