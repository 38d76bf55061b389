"""Text helpers of the model card: local paths removed, eval metrics summarised.

A card travels (a Hub upload, an e-mail): it must not tell where files sat on the
machine that wrote it, and it should show a few headline numbers per task, not
every key of ``metrics.json`` (which ``metadata.json`` keeps in full).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

# An absolute POSIX path inside any text (not a URL): kept as its last component.
_ABS_PATH = re.compile(r"(?<![\w.:/~])(?:~/|/)(?:[^\s/'\"(),]+/)+([^\s/'\"(),]+)")


def scrub_local_paths(value: Any) -> Any:
    """A copy of ``value`` in which every absolute local path in a string is reduced to
    its last component, so a card never tells where the files sat on the machine."""
    if isinstance(value, dict):
        return {k: scrub_local_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_local_paths(v) for v in value]
    if isinstance(value, str):
        return _ABS_PATH.sub(lambda m: m.group(1), value)
    return value


def scrub_known_paths(value: Any, paths: Any) -> Any:
    """A copy of ``value`` in which each of ``paths`` (as typed, relative or with spaces, and
    as absolute) is reduced to its last component wherever a string holds it.

    The regex of :func:`scrub_local_paths` cannot see a relative path, nor one with
    spaces or quotes, which run folders named after a patient often have; the paths a
    run was given are known, so they are replaced as whole strings (longest first).
    """
    forms: dict[str, str] = {}
    for path in paths:
        if not path:
            continue
        text = str(path).rstrip("/")
        if not text:
            continue
        for form in (text, os.path.abspath(text), str(Path(text).resolve())):
            if "/" in form:
                forms[form] = Path(text).name or text
    ordered = sorted(forms, key=len, reverse=True)

    def scrub(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: scrub(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [scrub(v) for v in item]
        if isinstance(item, str):
            for form in ordered:
                item = item.replace(form, forms[form])
        return item

    return scrub(value)


def public_path(path: Any) -> str:
    """A local path reduced to its last component (``/home/me/runs/mae`` -> ``mae``)."""
    if not path:
        return ""
    return ", ".join(Path(p.strip()).name or p.strip() for p in str(path).split(", "))


def _ci_text(entry: Any) -> str:
    if not isinstance(entry, dict) or entry.get("value") is None:
        return "-"
    low, high = entry.get("ci") or (None, None)
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f"{entry['value']:.3f}{interval}"


def _scored_row(task: str, scored: dict) -> dict[str, str]:
    classes = scored.get("classes", {})
    ok = [c for c, r in classes.items() if r.get("status") == "ok"]
    macro = scored.get("macro", {})
    if len(ok) == 1 and not macro.get("macro_auroc"):
        only = classes[ok[0]]
        auroc, auprc = _ci_text(only.get("auroc")), _ci_text(only.get("auprc"))
    else:
        auroc, auprc = _ci_text(macro.get("macro_auroc")), _ci_text(macro.get("macro_auprc"))
    return {
        "task": task,
        "scored classes": f"{len(ok)} of {len(classes)}",
        "AUROC [95% CI]": auroc,
        "AUPRC": auprc,
    }


def summarise_metrics(metrics: dict) -> list[dict[str, str]]:
    """A few rows for the card: per task (and fraction), macro AUROC/AUPRC with intervals
    and how many classes had enough labels; retrieval recall. metadata.json keeps all."""
    rows: list[dict[str, str]] = []
    for task, result in (metrics.get("tasks") or {}).items():
        if not isinstance(result, dict):
            continue
        if "skipped" in result:
            rows.append(
                {
                    "task": task,
                    "scored classes": "skipped",
                    "AUROC [95% CI]": str(result["skipped"]),
                    "AUPRC": "",
                }
            )
        elif task == "zeroshot":
            rows += [
                _scored_row(f"zero-shot {v}", result[v])
                for v in ("maco", "clip")
                if isinstance(result.get(v), dict) and "classes" in result[v]
            ]
        elif task in ("probe", "finetune"):
            for fraction, entry in (result.get("fractions") or {}).items():
                seeds = entry.get("seeds") or {}
                if seeds:
                    first = next(iter(seeds))
                    row = _scored_row(
                        f"{task} {float(fraction):.0%} labels (seed {first})", seeds[first]
                    )
                    spread = (entry.get("over_seeds") or {}).get("macro_auroc") or {}
                    if spread.get("seeds", 0) > 1:
                        row["AUROC [95% CI]"] += (
                            f"; {spread['auroc_mean']:.3f} ± {spread['auroc_sd']:.3f} over {spread['seeds']} seeds"
                        )
                    rows.append(row)
        elif task == "retrieval":
            for direction in ("image_to_report", "report_to_image"):
                entry = result.get(direction) or {}
                recalls = ", ".join(
                    f"R@{k} {_ci_text(entry.get(f'recall_at_{k}'))}" for k in (1, 5, 10)
                )
                rows.append(
                    {
                        "task": f"retrieval {direction.replace('_', ' ')}",
                        "scored classes": "",
                        "AUROC [95% CI]": recalls,
                        "AUPRC": "",
                    }
                )
    return rows
