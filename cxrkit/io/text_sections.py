"""The report sections a text field can deliver: the one list, without importing torch.

:mod:`cxrkit.io.fields` composes them; the eval stage's ``text_section`` setting
adds ``auto`` to this list and checks it before any heavy import.
"""

from __future__ import annotations

TEXT_SECTIONS = ("both", "findings", "impression")
"""both = findings + impression; a row whose chosen sections are empty uses its whole report."""
DEFAULT_TEXT_SECTION = "both"
"""pretrain's ``data.text_section`` default, and what eval's ``auto`` takes when a checkpoint
records no section."""
