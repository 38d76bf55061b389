"""The default install is permissively licensed (cxrkit is Apache-2.0).

Walks the installed closure of the core dependencies declared in pyproject.toml
(extras excluded) and fails when any distribution's licence metadata says GPL
(LGPL, weak copyleft for libraries, is allowed and listed in the README).
"""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
STRONG_COPYLEFT = re.compile(r"\b(A?GPL|General Public License)", re.IGNORECASE)
WEAK_COPYLEFT = re.compile(r"LGPL|Lesser General Public", re.IGNORECASE)


def _core_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(line) for line in project["dependencies"]]


def _licence_text(dist: md.Distribution) -> str:
    meta = dist.metadata
    parts = [meta.get("License-Expression") or "", (meta.get("License") or "")[:200]]
    parts += [c for c in meta.get_all("Classifier") or [] if c.startswith("License")]
    return " | ".join(p for p in parts if p)


def _closure() -> dict[str, str]:
    """Installed core dependencies and everything they require: name -> licence text."""
    seen: dict[str, str] = {}
    stack = [r for r in _core_requirements() if not r.marker or r.marker.evaluate()]
    while stack:
        req = stack.pop()
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            seen[key] = ""
            continue
        seen[key] = _licence_text(dist)
        for line in dist.requires or []:
            child = Requirement(line)
            if child.marker and not child.marker.evaluate({"extra": ""}):
                continue
            stack.append(child)
    return seen


def is_strong_copyleft(licence: str) -> bool:
    """True for GPL/AGPL licence metadata; LGPL does not count."""
    stripped = WEAK_COPYLEFT.sub("", licence)
    return bool(STRONG_COPYLEFT.search(stripped))


def test_licence_rule_tells_gpl_from_lgpl_and_permissive():
    assert is_strong_copyleft("GPL V3.0 | License :: OSI Approved :: GNU General Public License v3")
    assert is_strong_copyleft("AGPL-3.0-only")
    assert not is_strong_copyleft("License :: OSI Approved :: GNU Lesser General Public License v3")
    assert not is_strong_copyleft("MIT | License :: OSI Approved :: MIT License")
    assert not is_strong_copyleft("Apache-2.0")


def test_no_core_dependency_is_gpl():
    closure = _closure()
    assert "pydicom" in closure and "torch" in closure, "closure walk found nothing"
    offenders = {name: text for name, text in closure.items() if is_strong_copyleft(text)}
    assert not offenders, f"GPL-licensed packages in the default install: {offenders}"


def test_gpl_jpeg_decoder_is_only_an_extra():
    names = {r.name.lower() for r in _core_requirements()}
    assert "pylibjpeg-libjpeg" not in names
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(Requirement(x).name == "pylibjpeg-libjpeg" for x in extras["gpl-jpeg"])


@pytest.mark.parametrize("name", ["JPEG-LL.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_lossless_jpeg_decodes_with_permissive_decoders(name):
    from pydicom.data import get_testdata_file
    from pydicom.pixels import pixel_array

    path = get_testdata_file(name)
    gdcm_pixels = pixel_array(path, decoding_plugin="gdcm")
    assert gdcm_pixels.size > 0
    if "jpeg_ls" in name:
        assert (pixel_array(path, decoding_plugin="pyjpegls") == gdcm_pixels).all()


def test_ingest_decodes_jpeg_ls_with_pyjpegls_and_matches_gdcm(monkeypatch):
    from pydicom.data import get_testdata_file
    from pydicom.pixels import pixel_array

    from cxrkit.io import dicom

    path = get_testdata_file("emri_small_jpeg_ls_lossless.dcm")
    used = []
    decoder_cls = type(dicom.get_decoder(dicom.JPEGLSLossless))
    original = decoder_cls.as_array

    def spy(self, src, **kwargs):
        used.append(kwargs.get("decoding_plugin"))
        return original(self, src, **kwargs)

    monkeypatch.setattr(decoder_cls, "as_array", spy)
    ds = dicom.pydicom.dcmread(path)
    arr = dicom._decode_frame0(ds)
    assert used == ["pyjpegls"]
    assert (arr == pixel_array(path, decoding_plugin="gdcm")[0]).all()
