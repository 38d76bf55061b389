"""Batch fields: the one registry of what the loader can hand an objective.

An objective names fields in ``needs``; the loader reads the dataset columns
and annotation columns those fields declare, builds each sample's values with
the fields' providers (in the DataLoader workers) and collates them with each
field's rule. Unknown names are a ConfigError with a did-you-mean.

Per-sample fields (``kind = "sample"``; the batch holds one value per sample):

============  ==============================================================
image         float (B, 1, H, W), normalised, augmented (always loaded)
contour       bool (B, H, W) chest-contour mask at the image size (annotations)
labels        float (B, 14) CheXpert 1/0/-1, NaN = not mentioned (annotations,
              else the dataset's ``labels`` column)
text          list[str] report text; the section is ``data.text_section``
              (findings / impression / both)
entities      list[list[dict]] per sample: annotation entities whose span lies in
              ``text``, offsets re-based onto that exact string
              (``text[e["start"]:e["end"]] == e["text"]``) (annotations)
image_id, study_id, patient_id, view   list[str | None]
============  ==============================================================

Per-dataset fields (``kind = "dataset"``; read once, handed to the objective
by ``Objective.on_dataset_fields`` before training, never put in a batch):

============  ==============================================================
prompts       the prompt set of the annotations artifact's ``prompts.json``
============  ==============================================================

After the fields, an objective's :class:`SampleTransform` (tokenising,
whole-word masking) runs on each sample in the worker; its outputs are
collated by the transform's own :meth:`SampleTransform.collate`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from cxrkit.errors import ArtifactError, ConfigError
from cxrkit.io.text_sections import TEXT_SECTIONS as TEXT_SECTIONS  # re-exported

TextSection = Literal["both", "findings", "impression"]


@dataclass
class SampleContext:
    """What a provider sees for one sample: the dataset row, its annotations, decoded tensors."""

    row: dict[str, Any]  # dataset columns of the sample (the ones the fields asked for)
    annotations: dict[str, Any] | None  # annotation columns of the sample; None when absent
    image: torch.Tensor  # (1, H, W) after the image transform
    contour: torch.Tensor | None  # (H, W) bool after the same transform
    text_section: str
    cache: dict[str, Any]  # values shared between providers of one sample (e.g. the text layout)


@dataclass(frozen=True)
class Field:
    """One batch field.

    ``provide(ctx) -> value`` builds a sample's value (per-sample fields) and
    ``collate(values) -> batch value`` stacks them. ``columns`` are dataset
    columns it reads, ``annotation_columns`` columns of annotations.parquet,
    ``requires_annotations`` makes an annotations artifact mandatory.
    """

    name: str
    help: str
    provide: Callable[[SampleContext], Any] | None
    collate: Callable[[list[Any]], Any]
    columns: tuple[str, ...] = ()
    annotation_columns: tuple[str, ...] = ()
    requires_annotations: bool = False
    kind: Literal["sample", "dataset"] = "sample"
    columns_without_annotations: tuple[str, ...] = ()  # read instead when no annotations


FIELDS: dict[str, Field] = {}


def register_field(field: Field) -> Field:
    """Add a field to the registry (a name may be registered once)."""
    if field.name in FIELDS and FIELDS[field.name] != field:
        raise ValueError(f"batch field {field.name!r} registered twice")
    FIELDS[field.name] = field
    return field


def available_fields() -> list[str]:
    """Names of every registered batch field."""
    return sorted(FIELDS)


def resolve_fields(needs: frozenset[str] | set[str], where: str = "objective") -> list[Field]:
    """The Field objects for ``needs`` (plus image and image_id, always loaded).

    Raises ConfigError naming an unknown field, with a did-you-mean.
    """
    out = []
    for name in sorted(set(needs) | {"image", "image_id"}):
        if name not in FIELDS:
            close = difflib.get_close_matches(name, list(FIELDS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where} needs unknown batch field {name!r}{hint}; "
                f"known: {', '.join(available_fields())}"
            )
        out.append(FIELDS[name])
    return out


# ------------------------------------------------------------------ collate rules
def stack(values: list[Any]) -> torch.Tensor:
    """Stack equal-shape tensors along a new batch dimension."""
    return torch.stack(values)


def as_list(values: list[Any]) -> list[Any]:
    """Keep per-sample values as a Python list."""
    return list(values)


def collate_value(name: str, values: list[Any]) -> Any:
    """Default rule for transform outputs: tensors stacked, dicts per key, else a list.

    Raises ValueError naming the key when tensors differ in shape (pad in the
    transform, e.g. tokenise to a fixed length).
    """
    first = values[0]
    if torch.is_tensor(first):
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) > 1:
            raise ValueError(
                f"sample transform output {name!r} has different shapes {sorted(shapes)[:3]}; "
                "pad to a fixed length in the transform or override SampleTransform.collate"
            )
        return torch.stack(values)
    if isinstance(first, dict):
        return {k: collate_value(f"{name}.{k}", [v[k] for v in values]) for k in first}
    return list(values)


class SampleTransform:
    """Per-sample work an objective runs in the DataLoader workers.

    Subclass it, keep it picklable (plain attributes; a tokenizer that pickles),
    and return it from ``Objective.sample_transform()``. ``__call__`` takes one
    sample (field name -> value, e.g. ``sample["text"]``) and returns the NEW or
    replaced entries (e.g. ``{"tokens": {"input_ids": (L,), ...}}``); they are
    merged into the sample. :meth:`collate` stacks them into the batch.
    Randomness must come from ``sample["seed"]`` (a per-sample, per-epoch seed
    independent of workers), so resume stays exact.
    """

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def collate(self, key: str, values: list[Any]) -> Any:
        """Batch value of transform output ``key`` (default: :func:`collate_value`)."""
        return collate_value(key, values)


# ------------------------------------------------------------------ text and entities
def compose_text(row: dict[str, Any], section: str) -> tuple[str, list[tuple[int, int, int]]]:
    """The report text for ``section`` and where its pieces sit in ``report_text``.

    ``both`` = findings, a newline, impression (each stripped; either may be
    missing); ``findings`` / ``impression`` = that section alone. When the chosen
    sections are empty the whole report (``report_text`` stripped) is used.
    Returns ``(text, pieces)`` with one ``(source_start, target_start, length)``
    per piece: ``text[target_start:+length] == report_text[source_start:+length]``;
    a piece not found verbatim in report_text is left out of ``pieces``.
    """
    source = row.get("report_text") or ""
    names = ("findings", "impression") if section == "both" else (section,)
    parts = [(n, (row.get(f"report_{n}") or "").strip()) for n in names]
    parts = [(n, p) for n, p in parts if p]
    if not parts:
        text = source.strip()
        lead = len(source) - len(source.lstrip())
        return text, ([(lead, 0, len(text))] if text else [])
    pieces, chunks, cursor, search_from = [], [], 0, 0
    for name, part in parts:
        at = _find_section(source, name, part, search_from)
        if at >= 0:
            pieces.append((at, cursor, len(part)))
            search_from = at + len(part)
        chunks.append(part)
        cursor += len(part) + 1  # "\n" between parts
    return "\n".join(chunks), pieces


def _find_section(source: str, name: str, part: str, start: int) -> int:
    headed = source.find(f"{name.upper()}: {part}", start)
    if headed >= 0:
        return headed + len(name) + 2
    return source.find(part, start)


def rebase_entities(
    entities: list[dict] | None, text: str, pieces: list[tuple[int, int, int]]
) -> list[dict]:
    """Annotation entities (offsets into report_text) re-based onto ``text``.

    Keeps an entity only when its span lies inside one piece and the re-based
    span reads the entity's own text; the others (in sections not delivered)
    are left out. Returns dicts with ``start``/``end`` into ``text``.
    """
    out = []
    for entity in entities or []:
        start, end = int(entity["start"]), int(entity["end"])
        for source_start, target_start, length in pieces:
            if source_start <= start and end <= source_start + length:
                new_start = target_start + start - source_start
                new_end = new_start + end - start
                if text[new_start:new_end] == entity["text"]:
                    out.append({**entity, "start": new_start, "end": new_end})
                break
    return out


def _text_layout(ctx: SampleContext) -> tuple[str, list[tuple[int, int, int]]]:
    if "text_layout" not in ctx.cache:
        ctx.cache["text_layout"] = compose_text(ctx.row, ctx.text_section)
    return ctx.cache["text_layout"]


def _labels(ctx: SampleContext) -> torch.Tensor:
    from cxrkit.text.classes import CHEXPERT_CLASSES

    if ctx.annotations is not None:
        values = ctx.annotations.get("labels")
        if values is None:
            return torch.full((len(CHEXPERT_CLASSES),), float("nan"))
        return torch.tensor(values, dtype=torch.float32)
    raw = ctx.row.get("labels")
    mapping = json.loads(raw) if raw else {}
    return torch.tensor(
        [float(mapping.get(c, float("nan"))) for c in CHEXPERT_CLASSES], dtype=torch.float32
    )


def load_prompts_file(annotations_file: Path) -> dict[str, Any]:
    """The prompt set stored next to ``annotations.parquet`` (``prompts.json``). ArtifactError."""
    path = Path(annotations_file).parent / "prompts.json"
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; the annotations artifact holds no prompt set")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable prompt set ({exc})") from exc


def _row_value(column: str) -> Callable[[SampleContext], Any]:
    def provide(ctx: SampleContext) -> Any:
        return ctx.row.get(column)

    provide.__name__ = f"row_{column}"
    return provide


def _image(ctx: SampleContext) -> torch.Tensor:
    return ctx.image


def _contour(ctx: SampleContext) -> torch.Tensor | None:
    return ctx.contour


def _text(ctx: SampleContext) -> str:
    return _text_layout(ctx)[0]


def _entities(ctx: SampleContext) -> list[dict]:
    text, pieces = _text_layout(ctx)
    entities = ctx.annotations.get("entities") if ctx.annotations is not None else None
    return rebase_entities(entities, text, pieces)


REPORT_COLUMNS = ("report_findings", "report_impression", "report_text")

for _field in (
    Field("image", "float (B, 1, H, W) normalised image", _image, stack),
    Field(
        "contour",
        "bool (B, H, W) chest-contour mask",
        _contour,
        stack,
        annotation_columns=("contour_mask",),
        requires_annotations=True,
    ),
    Field(
        "labels",
        "float (B, 14) CheXpert labels, NaN = not mentioned",
        _labels,
        stack,
        annotation_columns=("labels",),
        columns_without_annotations=("labels",),
    ),
    Field("text", "list[str] report text (data.text_section)", _text, as_list, REPORT_COLUMNS),
    Field(
        "entities",
        "list[list[dict]] entity spans re-based onto `text`",
        _entities,
        as_list,
        REPORT_COLUMNS,
        ("entities",),
        requires_annotations=True,
    ),
    Field(
        "prompts",
        "the annotations' prompt set (once per dataset)",
        None,
        as_list,
        requires_annotations=True,
        kind="dataset",
    ),
    *(
        Field(name, f"list[str] {name}", _row_value(name), as_list, (name,))
        for name in ("image_id", "study_id", "patient_id", "view")
    ),
):
    register_field(_field)
