"""Do artifacts given together belong together? Lineage checks between a stage's inputs.

An annotations artifact records (in its manifest's ``inputs``) the id of the dataset
it was made from; a pairs artifact the ids of its dataset and physio artifacts.
A stage given several artifacts checks these links before any heavy work:

- made from this very dataset (same id): nothing to say;
- made from another dataset sharing no image: an InputError naming both ids
  (another dataset's annotations; or another salt, which changes every pseudonym);
- made from another version of this dataset (re-ingested with a change) and used
  for something bound to that version's pixels or text (contour masks, entity
  spans): an InputError saying what differs;
- otherwise (labels, prompts of the images in common): a warning sentence with counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq

from cxrkit.artifacts import Artifact, read_manifest
from cxrkit.errors import ArtifactError, InputError

# Batch fields whose annotation values hold only for the exact pixels / report text
# they were computed from (a mask of H x W bits, character offsets into a report).
CONTENT_BOUND = {"contour": "contour masks", "entities": "entity spans"}


def made_from(artifact: Artifact, kind: str) -> list[dict]:
    """The ``inputs`` entries of ``kind`` in an artifact's manifest (id, path), in order."""
    return [i for i in artifact.manifest.get("inputs", []) if i.get("kind") == kind]


def dataset_image_ids(dataset: Artifact, split: str | None = None) -> set[str]:
    """The image ids of a dataset artifact (of one split when ``split`` is given).

    Reads only the small ``image_id`` (and ``split``) columns. Raises ArtifactError
    when a shard cannot be read.
    """
    from cxrkit.io.dataset import dataset_shards

    ids: set[str] = set()
    columns = ["image_id"] + (["split"] if split is not None else [])
    for shard in dataset_shards(dataset, allow_empty=True):
        try:
            table = pq.read_table(shard, columns=columns)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{shard}: cannot read image ids ({exc})") from exc
        values = table.column("image_id").to_pylist()
        if split is not None:
            keep = table.column("split").to_pylist()
            values = [v for v, s in zip(values, keep, strict=True) if s == split]
        ids.update(values)
    return ids


def params_differ(source: dict, here: dict, limit: int = 3) -> str:
    """The settings two artifacts of one kind were made with that differ, as
    ``image_size 48 -> 64`` (at most ``limit``, then ``+N more``); "" when none."""
    flat_a, flat_b = _flatten(source), _flatten(here)
    keys = sorted(k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k) != flat_b.get(k))
    words = [f"{k} {_short(flat_a.get(k))} -> {_short(flat_b.get(k))}" for k in keys[:limit]]
    if len(keys) > limit:
        words.append(f"+{len(keys) - limit} more")
    return ", ".join(words)


def _flatten(params: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _short(value: object) -> str:
    text = "unset" if value is None else str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _origin(entry: dict) -> str:
    """``dataset b9f5773809a9 (/its/recorded/path)`` of a manifest's input entry."""
    return f"dataset {str(entry.get('id', ''))[:12] or 'unknown'} ({entry.get('path', '?')})"


def _what_differs(entry: dict, dataset: Artifact) -> str:
    """Why the dataset an artifact was made from is not ``dataset``: the ingest settings
    that differ when it is still on disk, else that its files differ."""
    path = entry.get("path")
    try:
        source = read_manifest(Path(path)) if path else None
    except ArtifactError:
        source = None
    if source is None or source.get("id") != entry.get("id"):
        return "that dataset is no longer at its recorded path"
    differ = params_differ(source.get("params") or {}, dataset.params)
    return f"ingest settings differ: {differ}" if differ else "same settings, other source files"


def check_annotations(
    annotations: Artifact,
    dataset: Artifact,
    uses: Iterable[str],
    split: str | None = None,
) -> str | None:
    """Check that ``annotations`` belong to ``dataset``, before a stage reads them.

    Takes both artifacts, the batch fields the annotations will give (``uses``,
    e.g. ``{"contour"}``) and the split that will be read (None = every split).
    Returns None when the annotations were made from this dataset, or a warning
    sentence with counts when they were made from another version of it and give
    only labels or prompts. Raises InputError (exit 3), naming both artifacts and
    what differs, when they share no image with the split, or when a field in
    :data:`CONTENT_BOUND` would be taken from another version of the dataset.
    """
    origins = made_from(annotations, "dataset")
    if any(o.get("id") == dataset.id for o in origins):
        return None
    origin = origins[0] if origins else {}
    ids = dataset_image_ids(dataset, split)
    from cxrkit.io.annotations import read_annotations

    noted = set(read_annotations(annotations, ["image_id"]).column("image_id").to_pylist())
    common = len(ids & noted)
    where = f"{dataset.path} (id {dataset.id[:12]}" + (f", split {split}" if split else "") + ")"
    head = f"annotations {annotations.path} were made from {_origin(origin)}, not from {where}"
    if not ids:
        return None  # nothing to read: the caller's own check says the split is empty
    if common == 0:
        raise InputError(
            f"{head}: no image in common (another dataset, or one ingested with another "
            f"salt); run `cxrkit annotate {dataset.path}`"
        )
    bound = sorted(set(uses) & set(CONTENT_BOUND))
    differs = _what_differs(origin, dataset)
    if bound:
        raise InputError(
            f"{head} ({differs}; {common} of {len(ids)} images in common): "
            f"{' and '.join(CONTENT_BOUND[b] for b in bound)} hold only for the pixels and reports they were computed "
            f"from; run `cxrkit annotate {dataset.path}`"
        )
    return (
        f"{head} ({differs}): {common} of {len(ids)} images have annotations, "
        f"{len(ids) - common} are read without them"
    )


def check_same_salt(first: Artifact | dict, second: Artifact, what: str = "") -> None:
    """InputError when two artifacts were pseudonymised with different salts.

    Takes two artifacts (or, for the first, the params of one being made) whose
    params hold ``salt_fingerprint`` (a keyed fingerprint, never the salt): a
    dataset and a physio artifact join only by pseudonyms, and another salt makes
    every pseudonym differ, so no patient could ever match. ``what`` names the
    first when it is params. Nothing is said when either records no fingerprint.
    """
    params = first if isinstance(first, dict) else first.params
    name = what or str(getattr(first, "path", "this run"))
    mine, theirs = params.get("salt_fingerprint"), second.params.get("salt_fingerprint")
    if mine and theirs and mine != theirs:
        raise InputError(
            f"{name} and {second.path} were pseudonymised with different salts (fingerprints "
            f"{str(mine)[:8]} and {str(theirs)[:8]}): no patient can match; give "
            "`cxrkit ingest-physio` the --salt-file `cxrkit ingest` used"
        )


def check_pairs(pairs: Artifact, dataset: Artifact, embeddings: Artifact | None) -> str | None:
    """Check a pairs artifact (and teacher embeddings) against the dataset PaCX trains on.

    Returns None when the pairs were made from this dataset, else a warning with the
    images they cover. Raises InputError, naming both artifacts, when the pairs share
    no image with the dataset (every image would train without a teacher), or when the
    embeddings encode another physio artifact than the one the pairs point into (the
    ECG and lab ids would not be found, or would be other records).
    """
    if embeddings is not None:
        paired = {str(i.get("id")) for i in made_from(pairs, "physio")}
        encoded = {str(i.get("id")) for i in made_from(embeddings, "physio")}
        if paired and encoded and paired.isdisjoint(encoded):
            raise InputError(
                f"embeddings {embeddings.path} encode physio {', '.join(sorted(encoded))[:12]}, "
                f"the pairs {pairs.path} pair images with physio "
                f"{', '.join(sorted(paired))[:12]}: make both from one physio artifact"
            )
    origins = made_from(pairs, "dataset")
    if any(o.get("id") == dataset.id for o in origins):
        return None
    from cxrkit.io.physio_files import PAIRS_FILE

    try:
        table = pq.read_table(pairs.file(PAIRS_FILE), columns=["image_id"])
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{pairs.path}: cannot read {PAIRS_FILE} ({exc})") from exc
    ids = dataset_image_ids(dataset)
    common = len(ids & set(table.column("image_id").to_pylist()))
    head = (
        f"pairs {pairs.path} were made from {_origin(origins[0] if origins else {})}, not "
        f"from {dataset.path} (id {dataset.id[:12]})"
    )
    if ids and common == 0:
        raise InputError(
            f"{head}: no image in common; pair this dataset (`cxrkit distill {dataset.path} "
            "--stage pairs`)"
        )
    return f"{head}: {common} of {len(ids)} images are paired, the others train without teachers"
