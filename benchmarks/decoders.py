"""JPEG Lossless / JPEG-LS decoders: equality and speed, permissive against GPL.

cxrkit's default install decodes JPEG Lossless (process 14) with python-gdcm
(BSD-style licence) and JPEG-LS with pyjpegls (MIT; CharLS is BSD-3). The GPL-3.0
``pylibjpeg-libjpeg`` decoder is an opt-in extra (``pip install 'cxrkit[gpl-jpeg]'``).
This script measures, on the same files, whether each installed decoder returns
the same pixels and how fast it is.

Files: the real adult PA radiograph ``RG1_UNCR.dcm`` (pydicom-data, 1955x1841,
15-bit) re-encoded here, in a temporary folder, as JPEG Lossless SV1 (GDCM's
encoder) and JPEG-LS lossless (pyjpegls's encoder), plus pydicom's own small
JPEG Lossless / JPEG-LS test files. The reference for every file is its
uncompressed original where we made it, else the first decoder's output.

Run: ``python benchmarks/decoders.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLSLossless

PLUGINS = ("pylibjpeg", "gdcm", "pyjpegls")  # GPL first: it is the baseline of the ratio
SMALL_FILES = (
    "JPEG-LL.dcm",
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
)


def make_real_files(folder: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """RG1_UNCR re-encoded as JPEG Lossless SV1 and JPEG-LS; returns name -> (path, original)."""
    import gdcm

    source = get_testdata_file("RG1_UNCR.dcm", download=False)
    original = pydicom.dcmread(source).pixel_array
    out: dict[str, tuple[Path, np.ndarray]] = {}

    reader = gdcm.ImageReader()
    reader.SetFileName(source)
    if not reader.Read():
        raise RuntimeError(f"GDCM cannot read {source}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError("GDCM could not encode JPEG Lossless")
    writer = gdcm.ImageWriter()
    jpll = folder / "RG1_JPEG_lossless_SV1.dcm"
    writer.SetFileName(str(jpll))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError("GDCM could not write the JPEG Lossless file")
    out[jpll.name] = (jpll, original)

    ds = pydicom.dcmread(source)
    ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls")
    jls = folder / "RG1_JPEG-LS_lossless.dcm"
    ds.save_as(jls)
    out[jls.name] = (jls, original)
    return out


def decode_with(path: Path, plugin: str) -> np.ndarray:
    """Decode ``path`` with one named pydicom decoding plugin (raises if unavailable)."""
    from pydicom.pixels import pixel_array

    return pixel_array(str(path), decoding_plugin=plugin)


def time_decode(path: Path, plugin: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decode_with(path, plugin)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files = make_real_files(Path(tmp))
        for name in SMALL_FILES:
            path = Path(get_testdata_file(name))
            files[name] = (path, None)  # reference: the first decoder that works
        print(f"{'file':36} {'decoder':10} {'equal':>6} {'ms/img':>9} {'speed vs GPL':>13}")
        for name, (path, original) in files.items():
            reference = original
            timings: dict[str, float] = {}
            for plugin in PLUGINS:
                try:
                    pixels = decode_with(path, plugin)
                except Exception as exc:  # a decoder that is absent or refuses this syntax
                    print(f"{name:36} {plugin:10} {'-':>6} {'n/a':>9}  ({type(exc).__name__})")
                    continue
                if reference is None:
                    reference = pixels
                equal = pixels.shape == reference.shape and np.array_equal(pixels, reference)
                timings[plugin] = time_decode(path, plugin, args.repeats)
                gpl = timings.get("pylibjpeg")
                ratio = f"{gpl / timings[plugin]:.2f}x" if gpl and plugin != "pylibjpeg" else ""
                print(
                    f"{name:36} {plugin:10} {str(equal):>6} {timings[plugin] * 1e3:9.1f} {ratio:>13}"
                )


if __name__ == "__main__":
    main()
