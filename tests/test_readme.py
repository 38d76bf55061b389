"""The README's two set-up commands stay the ones CI and users run."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _fenced_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command_verbatim():
    readme_blocks = _fenced_blocks((ROOT / "README.md").read_text())
    test_command = next(b for b in readme_blocks if "pytest" in b and "pip install" in b)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def _fake_python3(bin_dir: Path, pytest_status: int) -> None:
    """A ``python3`` whose ``-m venv .venv`` makes a pip that succeeds and a python that exits."""
    venv = (
        "#!/bin/sh\nmkdir -p .venv/bin\n"
        "printf '#!/bin/sh\\nexit 0\\n' > .venv/bin/pip\n"
        f"printf '#!/bin/sh\\nexit {pytest_status}\\n' > .venv/bin/python\n"
        "chmod +x .venv/bin/pip .venv/bin/python\n"
    )
    (bin_dir / "python3").write_text(venv)
    (bin_dir / "python3").chmod(stat.S_IRWXU)


@pytest.mark.parametrize("pytest_status", [0, 1, 5])
def test_ci_exit_status_is_pytest_s_and_no_tests_collected_fails(tmp_path, pytest_status):
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_python3(bin_dir, pytest_status)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", str(tmp_path / ".ci" / "run")], env=env, capture_output=True, text=True
    )
    assert result.returncode == pytest_status, result.stderr


def test_readme_has_one_demo_setup_command():
    blocks = [b for b in _fenced_blocks((ROOT / "README.md").read_text()) if "cxrkit demo" in b]
    assert len(blocks) == 1
    assert blocks[0].startswith("python3 -m venv .venv && ") and "\n" not in blocks[0]
