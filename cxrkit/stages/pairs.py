"""Pairing: a dataset + a physio artifact -> a `pairs` artifact (``pairs.parquet``).

One row per image of the dataset (every split): ``image_id, patient_id, split,
ecg_id, ecg_delta_hours, lab_id, lab_delta_hours``; the rule is in
:mod:`cxrkit.io.pairing`. Coverage (images with ECG / labs / both / none) is
in the stats.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from cxrkit.artifacts import Artifact, ArtifactWriter, open_artifact
from cxrkit.config import doc, to_dict
from cxrkit.errors import ConfigError
from cxrkit.io import pairing
from cxrkit.io.linkage import check_same_salt
from cxrkit.io.physio_files import PAIRS_FILE

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PAIRS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("patient_id", pa.string()),
        ("split", pa.string()),
        ("ecg_id", pa.string()),
        ("ecg_delta_hours", pa.float64()),
        ("lab_id", pa.string()),
        ("lab_delta_hours", pa.float64()),
    ]
)


@dataclasses.dataclass
class PairsConfig:
    """How images find their physiology partners (the [pairs] table of distill)."""

    ecg_window_hours: float = doc(
        "an ECG pairs with an image when taken within this many hours of it (either side)", 24.0
    )
    lab_window_hours: float = doc(
        "a lab panel pairs with an image when drawn within this many hours of it", 24.0
    )

    undated: Literal["skip", "latest"] = doc(
        "images without a study date: skip (no partner) | latest (the patient's latest "
        "record, no time delta; for datasets that publish no dates)",
        "skip",
    )

    def validate(self) -> None:
        """Raise ConfigError on a negative window."""
        if self.ecg_window_hours < 0 or self.lab_window_hours < 0:
            raise ConfigError("pairs.ecg_window_hours and pairs.lab_window_hours must be >= 0")


def run(
    dataset_dir: str | Path,
    physio_dir: str | Path,
    out: str | Path,
    cfg: PairsConfig,
    force: bool = False,
) -> Artifact:
    """Pair every image of the dataset; publish the pairs artifact at ``out``.

    Raises ArtifactError when an input is not a dataset / physio artifact, InputError when
    they were pseudonymised with different salts.
    """
    from cxrkit.io.dataset import dataset_shards
    from cxrkit.io.physio_files import ECG_INDEX, LABS_TABLE

    dataset = open_artifact(dataset_dir, kind="dataset")
    physio = open_artifact(physio_dir, kind="physio")
    check_same_salt(physio, dataset)
    writer = ArtifactWriter(
        Path(out), "pairs", to_dict(cfg), [dataset, physio], SCHEMA_VERSION, force
    )
    if (done := writer.up_to_date()) is not None:
        return done
    images: list[dict[str, Any]] = []
    for shard in dataset_shards(dataset):
        columns = ["image_id", "patient_id", "study_date", "split"]
        images.extend(pq.read_table(shard, columns=columns).to_pylist())
    # ids and times only: the panels' values and flags (100 floats each, millions of
    # panels from MIMIC-IV) are not needed to pair
    ecg_rows = pq.read_table(physio.path / ECG_INDEX, columns=["ecg_id", "patient_id", "time"])
    lab_rows = pq.read_table(physio.path / LABS_TABLE, columns=["lab_id", "patient_id", "time"])
    ecgs = _records(ecg_rows.to_pylist(), "ecg_id")
    labs = _records(lab_rows.to_pylist(), "lab_id")
    _warn_about_shared_patients(images, ecgs, labs, dataset.path, physio.path)
    rows = pairing.pair_images(
        images, ecgs, labs, cfg.ecg_window_hours, cfg.lab_window_hours, cfg.undated
    )
    work = writer.begin()
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIRS_SCHEMA), work / PAIRS_FILE)
    stats = {"coverage": pairing.coverage(rows)}
    train = [r for r in rows if r["split"] == "train"]
    stats["coverage_train"] = pairing.coverage(train)
    return writer.publish(schema={"columns": PAIRS_SCHEMA.names}, stats=stats)


# Fewer patients than this share of the smaller side (image patients, one modality's
# patients) found on the other: most likely ids written two ways or another salt.
FEW_SHARED = 0.2


def _warn_about_shared_patients(
    images: list[dict[str, Any]],
    ecgs: list[pairing.Record],
    labs: list[pairing.Record],
    dataset_path: Path,
    physio_path: Path,
) -> None:
    """Log a warning when the images and the physiology hardly share patients.

    No patient shared: every image would go unpaired, almost always from ids written
    differently (MIMIC-CXR folders key patients as ``p10000032``, MIMIC-IV tables as
    ``10000032``) or from another salt. Some shared, but for one modality (ECG, lab)
    fewer than :data:`FEW_SHARED` of the smaller side (its patients or the image
    patients): the same mistakes made for part of the ids, or for one table only (an
    ECG map keyed one way, labs the other). One side being a subset of the other (a
    few hundred images against all of MIMIC-IV's lab patients) is not warned about.
    """
    image_patients = {r["patient_id"] for r in images if r["patient_id"]}
    physio_patients = {r.patient_id for r in ecgs} | {r.patient_id for r in labs}
    if not physio_patients or not image_patients:
        return
    if physio_patients.isdisjoint(image_patients):
        log.warning(
            "no patient of %s (%d) has an image in %s: every image is unpaired. Patient "
            "ids must be written as ingest keys them (a MIMIC-CXR layout keys p10000032: "
            "MIMIC-IV's labevents and record_list.csv are keyed so unless "
            "mimic_subject_format says otherwise; write subject_id 10000032 as p10000032 "
            "in a table of your own), and ingest-physio needs ingest's --salt-file",
            physio_path,
            len(physio_patients),
            dataset_path,
        )
        return
    for name, records in (("ECG", ecgs), ("lab", labs)):
        patients = {r.patient_id for r in records}
        shared = len(patients & image_patients)
        if patients and shared < FEW_SHARED * min(len(patients), len(image_patients)):
            log.warning(
                "few patients have both images and %s records: %d of the %d image patients "
                "of %s have one in %s, and %d of its %d %s patients have an image. If they "
                "are one cohort, part of the ids are likely written another way (a "
                "MIMIC-CXR layout keys p10000032, a table of your own may write 10000032; "
                "see mimic_subject_format) or ingest-physio used another --salt-file than "
                "ingest",
                name,
                shared,
                len(image_patients),
                dataset_path,
                physio_path,
                shared,
                len(patients),
                name,
            )


def _records(rows: list[dict[str, Any]], key: str) -> list[pairing.Record]:
    return [pairing.Record(r[key], r["patient_id"], pairing.parse_time(r["time"])) for r in rows]


def load_pairs(pairs: Artifact) -> list[dict[str, Any]]:
    """The rows of a pairs artifact."""
    from cxrkit.io.physio_files import load_pairs as read

    return read(pairs.path)
