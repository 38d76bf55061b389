"""Helpers for the loader and trainer tests: tiny REAL artifacts and a tiny objective.

The dataset is built from the 16 real pediatric JPEGs (decoded with PIL) with
ArtifactWriter + DATASET_SCHEMA, small row groups so that order and sharding
across row groups are exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from cxrkit.artifacts import Artifact, ArtifactWriter
from cxrkit.io import bundled
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.schema import DATASET_SCHEMA, REJECTS_SCHEMA
from cxrkit.objectives.base import Objective, register


def pediatric_images(size: int = 48) -> list[tuple[str, np.ndarray, int]]:
    """(name, uint8 (H, W) with long side ``size``, pneumonia label) for the 16 real JPEGs."""
    from PIL import Image

    out = []
    for path in bundled.pediatric_jpegs():
        with Image.open(path) as image:
            grey = image.convert("L")
            grey.thumbnail((size, size))
            out.append((path.stem, np.asarray(grey, dtype=np.uint8), bundled.pediatric_label(path)))
    return out


def write_dataset(
    out: Path,
    size: int = 48,
    row_group_rows: int = 3,
    val_names: tuple[str, ...] = (),
    uint16: bool = False,
) -> Artifact:
    """A dataset artifact of the real pediatric JPEGs; ``val_names`` go to the val split."""
    rows = []
    for index, (name, pixels, label) in enumerate(pediatric_images(size)):
        if uint16:
            pixels = pixels.astype(np.uint16) * 257
        rows.append(
            {
                "image_id": f"img-{index:02d}",
                "study_id": f"st-{index:02d}",
                "patient_id": f"pt-{index:02d}",
                "view": "PA",
                "pixels": pixels.tobytes(),
                "dtype": str(pixels.dtype),
                "height": pixels.shape[0],
                "width": pixels.shape[1],
                "orig_height": pixels.shape[0],
                "orig_width": pixels.shape[1],
                "source_format": "jpeg",
                "labels": json.dumps({"Pneumonia": label}),
                "report_findings": f"findings {index}." if index % 3 else None,
                "report_impression": f"impression {index}." if index % 3 else None,
                "report_text": f"whole report {index}.",
                "split": "val" if name in val_names else "train",
            }
        )
    writer = ArtifactWriter(
        Path(out),
        "dataset",
        {"test": "pediatric", "size": size, "val": list(val_names), "uint16": uint16},
        inputs=[{"kind": "raw", "id": "pediatric-jpegs", "path": "package"}],
    )
    work = writer.begin()
    table = pa.Table.from_pylist(rows, schema=DATASET_SCHEMA)
    pq.write_table(
        table, work / "shard-00000.parquet", row_group_size=row_group_rows, compression="zstd"
    )
    pq.write_table(REJECTS_SCHEMA.empty_table(), work / "rejects.parquet")
    return writer.publish(stats={"rows": len(rows)})


def write_annotations(out: Path, dataset: Artifact) -> Artifact:
    """An annotations artifact: contour = brighter-than-median pixels, labels from the dataset."""
    table = pa.concat_tables(pq.read_table(p) for p in dataset_shards(dataset))
    rows = []
    for row in table.to_pylist():
        pixels = np.frombuffer(row["pixels"], dtype=row["dtype"]).reshape(
            row["height"], row["width"]
        )
        mask = pixels > np.median(pixels)
        labels = [float("nan")] * 14
        # "Pneumonia" is class 7
        labels[7] = float(json.loads(row["labels"] or "{}").get("Pneumonia", float("nan")))
        rows.append(
            {
                "image_id": row["image_id"],
                "labels": labels,
                "contour_mask": np.packbits(mask).tobytes(),
                "contour_quality": "ok",
            }
        )
    writer = ArtifactWriter(Path(out), "annotations", {"test": True}, inputs=[dataset])
    work = writer.begin()
    schema = pa.schema(
        [
            ("image_id", pa.string()),
            ("labels", pa.list_(pa.float32())),
            ("contour_mask", pa.binary()),
            ("contour_quality", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), work / "annotations.parquet")
    (work / "prompts.json").write_text("{}")
    return writer.publish()


class SquareTransform:
    """Test transform with the TrainTransform call signature: resize to a square, random flip."""

    def __init__(self, size: int, flip: bool = True) -> None:
        self.size, self.flip = size, flip

    def __call__(self, image, contour, generator):
        maxval = 65535.0 if image.dtype == torch.uint16 else 255.0
        x = image.to(torch.float32)[None, None] / maxval
        x = F.interpolate(
            x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False
        )[0]
        flip = self.flip and bool(torch.rand((), generator=generator) < 0.5)
        out_contour = None
        if contour is not None:
            c = F.interpolate(contour[None, None].float(), size=(self.size, self.size))[0, 0] > 0.5
            out_contour = c.flip(-1) if flip else c
        x = x.flip(-1) if flip else x
        return (x - 0.5) / 0.5, out_contour


@register("tiny-test")
class TinyObjective(Objective):
    """A masked linear autoencoder: enough moving parts (global RNG masks, norms) to test the trainer."""

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.size = int(config.get("model", {}).get("image_size", 32))
        self.patch = 8
        dim = int(config.get("dim", 32))
        self.encoder = nn.Sequential(nn.Conv2d(1, dim, self.patch, self.patch), nn.GELU())
        self.norm = nn.LayerNorm(dim)
        self.decoder = nn.Linear(dim, self.patch * self.patch)

    def image_encoder(self) -> nn.Module:
        return self.encoder

    def loss(self, batch: dict, step: int = 0) -> dict[str, torch.Tensor]:
        images = batch["image"]  # (B, 1, S, S)
        tokens = self.encoder(images).flatten(2).transpose(1, 2)  # (B, L, D)
        hidden = (torch.rand(tokens.shape[:2], device=images.device) < 0.5).float()  # (B, L)
        pred = self.decoder(self.norm(tokens * (1 - hidden[..., None])))  # (B, L, p*p)
        target = F.unfold(images, self.patch, stride=self.patch).transpose(1, 2)  # (B, L, p*p)
        per_patch = ((pred - target) ** 2).mean(-1)
        loss = (per_patch * hidden).sum() / hidden.sum().clamp_min(1)
        return {"loss": loss, "visible_mse": (per_patch * (1 - hidden)).mean().detach()}


def write_report_dataset(root: Path, count: int = 6) -> tuple[Artifact, Artifact]:
    """(dataset, annotations) of real IU reports (with findings and impression) paired with
    real pediatric images (48 px), annotated by the real `cxrkit annotate` (entities, labels,
    contours, prompts.json)."""
    import itertools

    from cxrkit.io.reports import iter_iu_reports
    from cxrkit.stages.annotate import AnnotateConfig, run

    reports = [r for r in itertools.islice(iter_iu_reports(), 60) if r.findings and r.impression]
    writer = ArtifactWriter(Path(root) / "dataset", "dataset", {"test": "iu-reports", "n": count})
    work = writer.begin()
    rows = []
    images = pediatric_images(48)[:count]
    for index, (report, (_, pixels, _)) in enumerate(zip(reports[:count], images, strict=True)):
        rows.append({name: None for name in DATASET_SCHEMA.names} | report.columns() | {
            "image_id": f"img-{index}", "study_id": f"st-{index}", "patient_id": f"pt-{index}",
            "view": "PA", "pixels": pixels.tobytes(), "dtype": "uint8",
            "height": pixels.shape[0], "width": pixels.shape[1], "split": "train"})  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=DATASET_SCHEMA), work / "shard-00000.parquet")
    pq.write_table(REJECTS_SCHEMA.empty_table(), work / "rejects.parquet")
    dataset = writer.publish(stats={"rows": len(rows)})
    annotations = run(AnnotateConfig(dataset=str(dataset.path), out=str(Path(root) / "ann")))
    return dataset, annotations
