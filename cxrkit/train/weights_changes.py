"""Whether two runs are the same run, and which of their starting weights differ.

Used by :mod:`cxrkit.train.runs` to extend a run (same settings, longer) and to refuse
resuming one whose weights changed (same settings, other weights content).
"""

from __future__ import annotations

import copy


def same_run(a: dict, b: dict) -> bool:
    """Equal params apart from train.max_steps."""

    def strip(params: dict) -> dict:
        params = copy.deepcopy(params)
        params.get("train", {}).pop("max_steps", None)
        return params

    return strip(a) == strip(b)


def _weights(refs: list[dict]) -> dict[str, dict]:
    return {r["setting"]: r for r in refs if isinstance(r, dict) and r.get("setting")}


def changed_weights(
    params: dict, refs: list[dict], earlier_params: dict, earlier_refs: list[dict]
) -> list[tuple[str, str, str, str]]:
    """Weights settings whose content differs from an earlier run of the same settings.

    Takes this run's params and input entries and an earlier run's (a published OUT's
    manifest, a run directory's :data:`RUN_FILE`). The runs are "the same" when their
    other inputs and their params, weights digests and ``train.max_steps`` aside, are
    equal; where the weights are read from does not matter (moved weights are the same
    run, other weights at any path are not). Returns (setting, earlier path, earlier
    sha256, current sha256) per weights setting whose content differs; [] for another
    run, or one recorded before weights had settings in their entries.
    """
    mine, theirs = _weights(refs), _weights(earlier_refs)
    others = [r.get("id") for r in refs if not r.get("setting")]
    if not theirs or others != [r.get("id") for r in earlier_refs if not r.get("setting")]:
        return []

    def without_weights(p: dict) -> dict:
        p = copy.deepcopy(p)
        for setting in {*mine, *theirs}:
            *parents, leaf = setting.split(".")
            table = p
            for key in parents:
                table = table.get(key, {}) if isinstance(table, dict) else {}
            if isinstance(table, dict):
                table.pop(leaf, None)
        return p

    if not same_run(without_weights(params), without_weights(earlier_params)):
        return []
    return [
        (setting, str(theirs[setting].get("path")), str(theirs[setting].get("id")), ref["id"])
        for setting, ref in mine.items()
        if setting in theirs and theirs[setting].get("id") != ref["id"]
    ]
