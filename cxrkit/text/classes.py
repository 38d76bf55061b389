"""The 14 CheXpert observations: the one canonical class list and order (no spaCy import)."""

from __future__ import annotations

CHEXPERT_CLASSES: list[str] = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
    "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
    "Pleural Other", "Fracture", "Support Devices",
]  # fmt: skip
"""The canonical class order of every labels vector cxrkit writes."""

CLASS_INDEX = {name: i for i, name in enumerate(CHEXPERT_CLASSES)}
