"""The artifact contract: manifest, content id, atomic publish, verify, lineage.

An artifact is a directory holding ``manifest.json`` plus its data files. Its id is
a sha256 over (kind, schema version, params, input ids). It is built inside
``DIR.tmp-<pid>`` and published with a rename, so a crash never leaves a directory
that looks complete.

The package exports what stages need to make and read artifacts; the rest lives in
its modules, by responsibility:

- :mod:`~cxrkit.artifacts.manifest`: format, kinds, ids, file entries,
  :class:`Artifact`, :func:`read_manifest`, :func:`lineage`;
- :mod:`~cxrkit.artifacts.integrity`: :func:`open_artifact`, :func:`verify`,
  :func:`verify_model_artifact`;
- :mod:`~cxrkit.artifacts.writer`: :class:`ArtifactWriter` (lock, adopt a killed
  build, kill-safe publish);
- :mod:`~cxrkit.artifacts.files`: atomic JSON, output paths;
- :mod:`~cxrkit.artifacts.owners`: who is building, and whether it still runs.

Modules inside the package import each other directly, never this package root.
"""

from __future__ import annotations

from cxrkit.artifacts.integrity import open_artifact, verify, verify_model_artifact
from cxrkit.artifacts.manifest import MANIFEST, Artifact, lineage, read_manifest
from cxrkit.artifacts.writer import ArtifactWriter

__all__ = [
    "MANIFEST",
    "Artifact",
    "ArtifactWriter",
    "lineage",
    "open_artifact",
    "read_manifest",
    "verify",
    "verify_model_artifact",
]
