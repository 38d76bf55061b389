"""Retrieval when several images share one report (a study's PA and lateral views) or two
reports say the same words: every one of them is a right answer, as in image-text retrieval
with several captions per image; otherwise a perfect model scores R@1 = 0 on those rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxrkit.evaluate import metrics, retrieval


def test_match_matrix_joins_rows_of_one_study_and_rows_with_the_same_text():
    studies = ["s1", "s1", "s2", None, "", "s3"]
    texts = ["A.", "A.", "B.", "C.", "C.", "B."]
    found = retrieval.match_matrix(studies, texts)
    expected = np.array(
        [
            [1, 1, 0, 0, 0, 0],  # s1 PA: its lateral view shares study and text
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 1],  # s2 and s3 reports are the same words "B."
            [0, 0, 0, 1, 1, 0],  # no study ids: the same text "C." still matches
            [0, 0, 0, 1, 1, 0],
            [0, 0, 1, 0, 0, 1],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(found, expected)


def test_match_matrix_without_studies_or_texts_is_the_diagonal():
    np.testing.assert_array_equal(retrieval.match_matrix(None, None, n=3), np.eye(3, dtype=bool))


def test_rank_is_that_of_the_best_right_answer_with_ties_against_wrong_ones_pessimistic():
    similarity = np.array(
        [
            [0.9, 0.9, 0.1],  # rows 0 and 1 are one study (one report, two images)
            [0.9, 0.9, 0.1],
            [0.5, 0.5, 0.5],  # a tie with wrong answers still ranks behind them
        ]
    )
    matches = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(metrics.ranks_of_matches(similarity, matches), [1, 1, 3])
    np.testing.assert_array_equal(metrics.ranks_of_matches(similarity), [2, 2, 3])  # diagonal


def test_an_oracle_on_two_view_studies_has_recall_at_1_of_one():
    """Four studies of two images each sharing their report; the model scores 1 for a right
    pair and 0 otherwise. Chance R@1 is 2/8 (two right answers among eight)."""
    studies = [f"s{i // 2}" for i in range(8)]
    texts = [f"report {i // 2}" for i in range(8)]
    matches = retrieval.match_matrix(studies, texts)
    oracle = matches.astype(float)
    out, ranks = retrieval.similarity_report(oracle, None, 50, 0.95, 0, matches)
    assert out["image_to_report"]["recall_at_1"]["value"] == 1.0
    assert out["report_to_image"]["recall_at_1"]["value"] == 1.0
    assert out["chance_recall_at_1"] == pytest.approx(2 / 8)
    assert out["queries_with_several_matches"] == 8
    np.testing.assert_array_equal(ranks["image_to_report"], np.ones(8))


def test_eval_on_real_images_with_two_view_studies_counts_the_shared_report(
    tmp_path, salt_file, monkeypatch
):
    """Six real pediatric JPEGs in the test split: two studies of two images with one IU
    report each, two single-image studies. Chance R@1 = (2+2+2+2+1+1)/6/6."""
    from cxrkit.io.bundled import pediatric_jpegs
    from cxrkit.io.reports import iter_iu_reports
    from cxrkit.stages.eval import EvalConfig, metrics_of, run
    from cxrkit.stages.ingest import IngestConfig
    from cxrkit.stages.ingest import run as ingest

    monkeypatch.setenv("CXRKIT_CACHE", str(tmp_path / "cache"))
    reports = [r.text for r, _ in zip(iter_iu_reports(), range(4), strict=False)]
    study = [0, 0, 1, 1, 2, 3]
    rows = ["image_path,report_text,patient_id,study_id,split,Pneumonia"]
    for i, path in enumerate(pediatric_jpegs()[:6]):
        text = json.dumps(reports[study[i]])  # a CSV-quoted field
        rows.append(f"{path},{text},P{study[i]},S{study[i]},test,{i % 2}")
    (tmp_path / "map.csv").write_text("\n".join(rows) + "\n")
    dataset = ingest(
        IngestConfig(mapping=str(tmp_path / "map.csv"), out=str(tmp_path / "ds"),
                     image_size=64, salt_file=str(salt_file))
    ).path  # fmt: skip
    clip = tmp_path / "clip.json"
    clip.write_text(
        json.dumps(
            {
                "embed_dim": 16,
                "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
                "text_cfg": {
                    "context_length": 77,
                    "vocab_size": 49408,
                    "width": 32,
                    "heads": 2,
                    "layers": 1,
                },
            }  # fmt: skip
        )
    )
    cfg = EvalConfig(
        dataset=str(dataset), open_clip_config=str(clip), out=str(tmp_path / "ev"),
        tasks=["retrieval"], bootstrap=20, plots=False,
    )  # fmt: skip
    result = metrics_of(run(cfg))["tasks"]["retrieval"]
    assert result["n"] == 6
    assert result["chance_recall_at_1"] == pytest.approx(10 / 36)
    assert result["queries_with_several_matches"] == 4
