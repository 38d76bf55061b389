"""Batch fields: one registry, text sections, entity spans re-based onto the delivered text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_support import SquareTransform, write_report_dataset

from cxrkit.errors import ConfigError, InputError
from cxrkit.io.dataset import dataset_shards
from cxrkit.io.fields import SampleTransform, available_fields, compose_text, rebase_entities
from cxrkit.io.shards import ShardDataset, make_loader
from cxrkit.io.tokens import TokenizeText, entity_token_mask

REPORT = "INDICATION: cough\n\nFINDINGS: Small left effusion.\n\nIMPRESSION: Effusion."


def _row(text: str, findings: str | None, impression: str | None) -> dict:
    return {"report_text": text, "report_findings": findings, "report_impression": impression}


def test_unknown_field_is_a_config_error_with_a_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'entities'"):
        ShardDataset([tmp_path / "x.parquet"], transform=None, batch_size=1, needs={"entitys"})


def test_registry_lists_every_documented_field():
    assert set(available_fields()) == {
        "image", "contour", "labels", "text", "entities", "prompts",
        "image_id", "study_id", "patient_id", "view",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("both", "Small left effusion.\nEffusion."),
        ("findings", "Small left effusion."),
        ("impression", "Effusion."),
    ],
)
def test_text_section_selects_what_the_loader_delivers(section, expected):
    text, _ = compose_text(_row(REPORT, "Small left effusion.", "Effusion."), section)
    assert text == expected


def test_missing_sections_fall_back_to_the_whole_report():
    text, pieces = compose_text(_row("  free text only ", None, None), "impression")
    assert text == "free text only" and pieces == [(2, 0, 14)]


def test_entity_offsets_move_from_report_text_to_the_delivered_text():
    # Hand computation: "INDICATION: cough\n\n" is 19 characters, "FINDINGS: " 10, so the
    # findings start at 29 and "effusion" sits at 40..48; the findings end at 49, "\n\n" and
    # "IMPRESSION: " take 14, so "Effusion" sits at 63..71. The delivered "both" text is
    # "Small left effusion.\nEffusion.": 11..19 and 21..29.
    entities = [
        {"text": "effusion", "start": 40, "end": 48, "label": "FINDING"},
        {"text": "Effusion", "start": 63, "end": 71, "label": "FINDING"},
        {"text": "cough", "start": 12, "end": 17, "label": "FINDING"},  # indication: not delivered
    ]
    assert [REPORT[e["start"] : e["end"]] for e in entities] == ["effusion", "Effusion", "cough"]
    row = _row(REPORT, "Small left effusion.", "Effusion.")
    text, pieces = compose_text(row, "both")
    spans = [(e["start"], e["end"]) for e in rebase_entities(entities, text, pieces)]
    assert spans == [(11, 19), (21, 29)]
    text, pieces = compose_text(row, "impression")
    assert [(e["start"], e["end"]) for e in rebase_entities(entities, text, pieces)] == [(0, 8)]


# ------------------------------------------------------------------ real reports, real labeler
@pytest.fixture(scope="module")
def annotated_iu(tmp_path_factory) -> tuple[Path, Path]:
    """6 real IU reports paired with real pediatric images, annotated by `cxrkit annotate`."""
    dataset, annotations = write_report_dataset(tmp_path_factory.mktemp("iu"))
    return dataset.path, annotations.path / "annotations.parquet"


def _dataset(paths, needs, **kw) -> ShardDataset:
    from cxrkit.artifacts import open_artifact

    shards = dataset_shards(open_artifact(paths[0], kind="dataset"))
    return ShardDataset(
        shards, transform=SquareTransform(32), batch_size=3, needs=needs,
        annotations=paths[1], shuffle=False, loop=False, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("section", ["both", "impression"])
def test_real_entity_spans_read_their_text_in_the_delivered_report(annotated_iu, section):
    data = _dataset(annotated_iu, {"text", "entities"}, text_section=section)
    batches = list(make_loader(data))
    spans = [
        (text, entity)
        for batch in batches
        for text, entities in zip(batch["text"], batch["entities"], strict=True)
        for entity in entities
    ]
    assert len(spans) >= 6  # the labeler finds findings in real reports
    assert all(text[e["start"] : e["end"]] == e["text"] for text, e in spans)
    if section == "impression":
        assert {e["section"] for _, e in spans} == {"impression"}


def test_ids_view_labels_and_prompts_come_from_the_registry(annotated_iu):
    data = _dataset(annotated_iu, {"labels", "study_id", "patient_id", "view", "prompts"})
    batch = next(iter(make_loader(data)))
    assert batch["study_id"] == ["st-0", "st-1", "st-2"] and batch["view"] == ["PA"] * 3
    assert batch["labels"].shape == (3, 14) and "prompts" not in batch
    prompts = data.dataset_fields()["prompts"]
    assert "Cardiomegaly" in prompts["classes"]


def test_fields_that_need_annotations_refuse_to_run_without(annotated_iu):
    with pytest.raises(InputError, match="entities"):
        _dataset((annotated_iu[0], None), {"entities"})


class _Lengths(SampleTransform):
    """Picklable per-sample work: the text's length and a seeded random draw."""

    def __call__(self, sample: dict) -> dict:
        draw = torch.rand((), generator=torch.Generator().manual_seed(sample["seed"]))
        return {"aux": {"length": torch.tensor(len(sample["text"])), "draw": draw}}


def test_sample_transform_runs_in_workers_and_its_tensors_are_collated(annotated_iu):
    data = _dataset(annotated_iu, {"text"}, sample_transform=_Lengths())
    inline = list(make_loader(data, num_workers=0))
    workers = list(make_loader(data, num_workers=2))
    for a, b in zip(inline, workers, strict=True):
        assert torch.equal(a["aux"]["length"], torch.tensor([len(t) for t in a["text"]]))
        assert torch.equal(a["aux"]["draw"], b["aux"]["draw"])  # seeded per sample, not per worker
    images_without = list(make_loader(_dataset(annotated_iu, {"text"})))
    assert all(
        torch.equal(a["image"], b["image"]) for a, b in zip(inline, images_without, strict=True)
    )  # a transform does not shift the augmentation
    assert np.unique(torch.cat([b["aux"]["draw"] for b in inline]).numpy()).size == 6


# ------------------------------------------------------------------ tokens in the workers
class _WordTokenizer:
    """Whitespace words padded to 64 tokens, with [CLS]-style first token (offsets -1)."""

    def __call__(self, texts):
        import re

        length = 64
        out = {
            k: torch.zeros(len(texts), length, dtype=torch.long)
            for k in ("input_ids", "attention_mask")
        }
        out["offsets"] = torch.full((len(texts), length, 2), -1, dtype=torch.long)
        for row, text in enumerate(texts):
            words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)][: length - 1]
            out["input_ids"][row, : len(words) + 1] = torch.arange(1, len(words) + 2)
            out["attention_mask"][row, : len(words) + 1] = 1
            if words:
                out["offsets"][row, 1 : len(words) + 1] = torch.tensor(words)
        return out


def test_entity_token_mask_marks_tokens_overlapping_a_span():
    # "Small left effusion." -> [CLS] Small(0,5) left(6,10) effusion.(11,20); entity 11..19
    offsets = torch.tensor([[-1, -1], [0, 5], [6, 10], [11, 20], [-1, -1]])
    mask = entity_token_mask(offsets, [{"start": 11, "end": 19}])
    assert mask.tolist() == [False, False, False, True, False]
    assert entity_token_mask(offsets, [{"start": 4, "end": 7}]).tolist() == [
        False, True, True, False, False,
    ]  # fmt: skip


def test_tokens_and_entity_masks_come_batched_from_the_workers(annotated_iu):
    transform = TokenizeText(_WordTokenizer(), entities=True)
    data = _dataset(annotated_iu, {"text", "entities"}, sample_transform=transform)
    batch = next(iter(make_loader(data, num_workers=2)))
    tokens = batch["tokens"]
    assert tokens["input_ids"].shape == (3, 64) and tokens["entity_mask"].dtype == torch.bool
    for row, entities in enumerate(batch["entities"]):
        marked = tokens["offsets"][row][tokens["entity_mask"][row]].tolist()
        # every marked word overlaps an entity, and a report with entities has marked words
        assert all(any(s < e["end"] and t > e["start"] for e in entities) for s, t in marked)
        assert bool(marked) == bool(entities)


def test_minilm_wordpiece_tokens_and_entity_masks_from_real_reports(annotated_iu):
    from cxrkit.io.bundled import minilm_dir
    from cxrkit.models.tokenizers import WordPieceTokenizer

    transform = TokenizeText(WordPieceTokenizer(minilm_dir(), context_length=96), entities=True)
    data = _dataset(annotated_iu, {"text", "entities"}, sample_transform=transform)
    batch = next(iter(make_loader(data, num_workers=2)))  # the tokenizer pickles to workers
    tokens = batch["tokens"]
    assert tokens["input_ids"].shape == (3, 96) and tokens["attention_mask"].sum() > 0
    for row, (text, entities) in enumerate(zip(batch["text"], batch["entities"], strict=True)):
        marked = tokens["offsets"][row][tokens["entity_mask"][row]].tolist()
        assert bool(marked) == bool(entities)
        for entity in entities:  # every word piece of an entity is marked, and only those
            inside = [(s, e) for s, e in marked if entity["start"] <= s and e <= entity["end"]]
            assert (
                "".join(text[s:e] for s, e in inside).lower()
                == entity["text"].replace(" ", "").lower()
            )
