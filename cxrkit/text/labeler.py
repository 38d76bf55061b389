"""CheXpert-style labels (1 / 0 / -1 / NaN) for the 14 observations, from report entities.

Conventions (those of the CheXpert labeler, Irvin et al. 2019, unless noted):

- Only mentions in the findings, impression or header-less body count;
  indication / history / comparison / technique never make a label.
- Per class, over its mentions: any positive -> 1; else any uncertain -> -1;
  else any negated -> 0; no mention -> NaN.
- Hierarchy: each class is labelled from its own mentions only. A positive
  child (Consolidation, Edema, Atelectasis, Pneumonia, Lung Lesion under Lung
  Opacity; Cardiomegaly under Enlarged Cardiomediastinum) does **not** set its
  parent, and does not make the parent NaN either -- like the CheXpert
  labeler's output, which leaves such propagation to the consumer.
- No Finding = 1 when the report says something (at least one entity in a
  label section) and no class other than Support Devices is 1 or -1 and no
  other finding (a lexicon finding outside the 14, e.g. granuloma, scoliosis,
  emphysema) is asserted. Else NaN. The last condition is our deliberate
  addition: CheXpert looks at its 13 classes only, which calls "calcified
  granuloma, scoliosis" a normal study.
- A text with no entity at all (empty, non-English, garbage) is all NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

from cxrkit.text.classes import CHEXPERT_CLASSES, CLASS_INDEX
from cxrkit.text.entities import Entity, EntityExtractor
from cxrkit.text.lexicon import FINDING
from cxrkit.text.sections import LABEL_SECTIONS

NAN = float("nan")
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0


def mention_value(entity: Entity) -> float:
    """1 / 0 / -1 for one mention (uncertainty wins over negation, see negation.py)."""
    if entity.uncertain:
        return UNCERTAIN
    return NEGATIVE if entity.negated else POSITIVE


def _combine(current: float, value: float) -> float:
    if math.isnan(current):
        return value
    order = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
    return value if order[value] > order[current] else current


def labels_from_entities(entities: Iterable[Entity]) -> list[float]:
    """The 14 labels (order of CHEXPERT_CLASSES) from a report's entities. Never raises."""
    labels = [NAN] * len(CHEXPERT_CLASSES)
    said_something = other_finding = False
    for entity in entities:
        if entity.section not in LABEL_SECTIONS:
            continue
        said_something = True
        index = CLASS_INDEX.get(entity.chexpert)
        if index is not None and index != 0:
            labels[index] = _combine(labels[index], mention_value(entity))
        elif entity.label == FINDING and not entity.chexpert and not entity.negated:
            other_finding = True
    if said_something:
        blocked = any(labels[i] in (POSITIVE, UNCERTAIN) for i in range(1, 13))
        if not blocked and not other_finding:
            labels[0] = POSITIVE
    return labels


class Labeler:
    """Report text -> (labels, entities), streaming; build once per process."""

    def __init__(self, scispacy_model: str | Path | None = None, abbreviations: bool = True,
                 extractor: EntityExtractor | None = None) -> None:  # fmt: skip
        self.extractor = extractor or EntityExtractor(scispacy_model, abbreviations)

    def label(self, texts: Iterable[str | None],
              batch_size: int = 256) -> Iterator[tuple[list[float], list[Entity]]]:  # fmt: skip
        """(labels, entities) per text, in input order."""
        for entities in self.extractor.extract(texts, batch_size=batch_size):
            yield labels_from_entities(entities), entities


def format_label(value: float) -> str:
    """CheXpert labeler CSV cell: "1.0" / "0.0" / "-1.0", blank for NaN."""
    return "" if math.isnan(value) else f"{value:.1f}"
