"""Arrow schemas of the dataset (one row per image) and annotations (one row per
dataset image) artifacts, DESIGN.md §3."""

from __future__ import annotations

import pyarrow as pa

DATASET_SCHEMA_VERSION = 1

DATASET_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),  # HMAC pseudonym of the source
        pa.field("study_id", pa.string()),  # pseudonym
        pa.field("patient_id", pa.string()),  # pseudonym
        pa.field("view", pa.string()),  # PA / AP / LATERAL / LL / UNKNOWN
        pa.field("sex", pa.string()),  # M / F / O / None
        pa.field("age", pa.float32()),  # years, None if unknown
        pa.field("study_date", pa.string()),  # ISO date, shifted per patient
        pa.field("pixels", pa.binary()),  # raw row-major bytes, dtype below
        pa.field("dtype", pa.string()),  # "uint8" or "uint16"
        pa.field("height", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("orig_height", pa.int32()),
        pa.field("orig_width", pa.int32()),
        pa.field("pixel_spacing", pa.list_(pa.float32())),  # mm (row, col) at the original size
        pa.field("source_sha256", pa.string()),  # hash of the raw file bytes
        pa.field("source_path", pa.string()),  # salted hash, or the path with --keep-paths
        pa.field("source_format", pa.string()),  # dicom / png / jpeg
        pa.field("photometric", pa.string()),  # as found in the source
        pa.field("labels", pa.string()),  # JSON {class: 1/0/-1} from a mapping CSV, else None
        pa.field("report_findings", pa.string()),
        pa.field("report_impression", pa.string()),
        pa.field("report_text", pa.string()),
        pa.field("report_source", pa.string()),  # mimic / iu_xml / iu_csv / r2gen / mapping / none
        pa.field("split", pa.string()),  # train / val / test
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string()),  # salted hash unless --keep-paths
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)

# ---------------------------------------------------------------- annotations

ANNOTATIONS_SCHEMA_VERSION = 1
ENTITY_TYPE = pa.struct([
    ("text", pa.string()), ("label", pa.string()), ("chexpert", pa.string()),
    ("start", pa.int32()), ("end", pa.int32()), ("negated", pa.bool_()),
    ("uncertain", pa.bool_()), ("section", pa.string()),
])  # fmt: skip
ANNOTATIONS_SCHEMA = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("labels", pa.list_(pa.float32())),  # 14, order of CHEXPERT_CLASSES; NaN = not mentioned
    pa.field("entities", pa.list_(ENTITY_TYPE)),  # offsets into the dataset row's report_text
    pa.field("contour_mask", pa.binary()),  # np.packbits of the (height, width) bool mask
    pa.field("contour_bbox", pa.list_(pa.int32())),  # (y0, x0, y1, x1), end-exclusive
    pa.field("contour_quality", pa.string()),  # ok / low / none
])  # fmt: skip
