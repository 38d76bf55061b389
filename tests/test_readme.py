"""The README's two set-up commands stay the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _fenced_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command_verbatim():
    readme_blocks = _fenced_blocks((ROOT / "README.md").read_text())
    test_command = next(b for b in readme_blocks if "pytest" in b and "pip install" in b)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_has_one_demo_setup_command():
    blocks = [b for b in _fenced_blocks((ROOT / "README.md").read_text()) if "cxrkit demo" in b]
    assert len(blocks) == 1
    assert blocks[0].startswith("python3 -m venv .venv && ") and "\n" not in blocks[0]
