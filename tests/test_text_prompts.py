"""Prompt sets: the shipped default, validation, template expansion, hashing."""

from __future__ import annotations

import json

import pytest

from cxrkit.errors import InputError
from cxrkit.text.labeler import CHEXPERT_CLASSES
from cxrkit.text.prompts import (
    default_class_prompts,
    expand_template,
    fill_templates,
    load_prompts,
    prompts_bytes,
    prompts_sha256,
)
from cxrkit.text.prompts import load_class_prompts as eval_load_prompts


def test_default_prompts_cover_the_14_classes_with_both_sides():
    prompts = load_prompts()
    assert prompts["version"]
    assert list(prompts["classes"]) == CHEXPERT_CLASSES
    cardio = prompts["classes"]["Cardiomegaly"]
    assert "There is cardiomegaly." in cardio["positive"]
    assert "There is no cardiomegaly." in cardio["negative"]
    assert len(prompts["disease_prompts"]) == 14


def test_written_prompts_are_readable_by_zero_shot_eval(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_bytes(prompts_bytes(load_prompts()))
    read = eval_load_prompts(path)
    assert read["Edema"]["negative"] == load_prompts()["classes"]["Edema"]["negative"]


def test_templates_and_names_expand_into_classes(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"version": "x1", "templates": {"positive": ["{C} seen."],
                                "negative": ["No {c}."]}, "names": {"Edema": "edema"}}))  # fmt: skip
    assert load_prompts(path)["classes"] == {
        "Edema": {"positive": ["Edema seen."], "negative": ["No edema."]}
    }


@pytest.mark.parametrize(
    "data",
    [{"classes": {"Edema": {"positive": ["Edema."]}}},  # no version
     {"version": "1", "classes": {"Edema": {"positive": []}}},  # no positive prompt
     ["not", "an", "object"]],
)  # fmt: skip
def test_invalid_prompt_sets_are_input_errors(tmp_path, data):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="bad.json"):
        load_prompts(path)


def test_hash_changes_with_the_wording():
    prompts = load_prompts()
    changed = json.loads(json.dumps(prompts))
    changed["classes"]["Edema"]["positive"][0] = "Edema is seen."
    assert prompts_sha256(prompts) != prompts_sha256(changed)


def test_capital_template_capitalises_only_the_first_letter():
    assert expand_template("{C} is present.", "pleural effusion") == "Pleural effusion is present."
    assert (
        expand_template("There is no {c}.", "pleural effusion") == "There is no pleural effusion."
    )


def test_expansion_rebuilds_the_shipped_sentences():
    shipped = load_prompts()
    for cls, name in shipped["names"].items():
        if cls in ("No Finding", "Support Devices"):  # written by hand, not from the templates
            continue
        assert shipped["classes"][cls] == fill_templates(shipped["templates"], name), cls


def test_classes_missing_from_the_default_set_get_sentence_case_prompts():
    prompts = default_class_prompts(["Pleural_Thickening"])
    assert prompts["Pleural_Thickening"]["positive"][:2] == [
        "There is pleural_thickening.",
        "Pleural_thickening is present.",
    ]
    assert prompts["Pleural_Thickening"]["negative"][0] == "There is no pleural_thickening."
