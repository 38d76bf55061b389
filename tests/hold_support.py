"""Hold a process the test signals or kills at a known point of its work.

A test that kills or signals a run once it sees a checkpoint, a logged row or a build
directory races the run: a step of the tiny models takes ~15 ms, so the run can finish
(or pass the point the test expects) between the moment the test looks and its signal.
A run started with :func:`held_env` waits before training step ``step``; a process
started with :func:`held_call_env` waits in its Nth call of a function and says so with
a file. Either waits until the release file exists: the test kills it meanwhile, or
signals it and then creates the file.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HOLD_HOOK = """
import os, time
from cxrkit.train import loop
_step = loop.Trainer.train_step
def _held(self, micro):
    if self.step + 1 == int(os.environ["CXRKIT_TEST_HOLD_STEP"]):
        release, deadline = os.environ["CXRKIT_TEST_RELEASE"], time.monotonic() + 300
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
    return _step(self, micro)
loop.Trainer.train_step = _held
"""


def held_env(tmp_path: Path, step: int, base: dict[str, str]) -> tuple[dict[str, str], Path]:
    """``base`` plus what makes the run wait before training step ``step`` (a
    sitecustomize on PYTHONPATH), and the file whose creation releases it.

    Takes: the test's tmp_path (the hook and the release file go there), the step, the
    environment the run would get otherwise. Returns: (environment, release file).
    """
    hook = tmp_path / "hold-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_HOOK)
    release = tmp_path / "release"
    path = os.pathsep.join(filter(None, [str(hook), str(ROOT), base.get("PYTHONPATH")]))
    env = {**base, "PYTHONPATH": path, "CXRKIT_TEST_HOLD_STEP": str(step),
           "CXRKIT_TEST_RELEASE": str(release)}  # fmt: skip
    return env, release


CALL_HOOK = """
import importlib, os, time
_where, _name, _call = os.environ["CXRKIT_TEST_HOLD_CALL"].split(":")
_module = importlib.import_module(_where)
_real, _calls = getattr(_module, _name), [0]
def _held(*args, **kwargs):
    _calls[0] += 1
    if _calls[0] == int(_call):
        open(os.environ["CXRKIT_TEST_HELD"], "w").close()
        release, deadline = os.environ["CXRKIT_TEST_RELEASE"], time.monotonic() + 300
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
    return _real(*args, **kwargs)
setattr(_module, _name, _held)
"""


def held_call_env(
    tmp_path: Path, target: str, call: int, base: dict[str, str]
) -> tuple[dict[str, str], Path, Path]:
    """``base`` plus what makes a process wait in its ``call``-th call of ``target``
    ("package.module:function", looked up on the module at each call) until the
    release file exists; on entering the wait it creates the held file.

    Takes: the test's tmp_path, the target, the 1-based call number, the environment the
    process would get otherwise. Returns: (environment, held file, release file).
    """
    hook = tmp_path / "hold-call-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CALL_HOOK)
    held, release = tmp_path / "held", tmp_path / "release"
    path = os.pathsep.join(filter(None, [str(hook), str(ROOT), base.get("PYTHONPATH")]))
    env = {**base, "PYTHONPATH": path, "CXRKIT_TEST_HOLD_CALL": f"{target}:{call}",
           "CXRKIT_TEST_HELD": str(held), "CXRKIT_TEST_RELEASE": str(release)}  # fmt: skip
    return env, held, release
