"""Import spaCy without torch: `cxrkit label` starts in about the time of spaCy itself.

``import spacy`` imports thinc, whose ``thinc.compat`` imports torch when it is
installed (about 3 s of start-up here), only to offer torch-backed layers. The
model-free labeling pipeline (tokenizer, abbreviation detector, entity ruler,
matchers) never uses them. :func:`import_spacy_without_torch` imports spaCy with
``torch`` marked absent for the duration of that import, so thinc records "no
torch" and moves on; afterwards ``import torch`` works as usual. Only for a fresh
process that labels text with the model-free pipeline: a scispaCy model with a
torch-backed component needs thinc's torch support, and callers load such a
model through plain ``import spacy``.
"""

from __future__ import annotations

import sys


def import_spacy_without_torch() -> bool:
    """Import spaCy (and thinc) with torch support off; True when that was done here.

    Does nothing (returns False) when spaCy or torch is already imported: then the
    process already paid for torch, or thinc already decided.
    """
    if "spacy" in sys.modules or "thinc" in sys.modules or "torch" in sys.modules:
        return False
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` -> ImportError
    try:
        import spacy  # noqa: F401
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    return True
