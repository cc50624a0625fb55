"""Without an optional extra, its part of gradlens says which extra to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECK = """
import sys
for name in ("lightning", "transformers", "tensorboard", "wandb"):
    sys.modules[name] = None  # as if not installed: importing it raises ImportError
import gradlens
from gradlens import GradlensError

def message(make):
    try:
        make()
    except GradlensError as e:
        return str(e)
    return "no error"

def lightning():
    import gradlens.integrations.lightning

def transformers():
    import gradlens.integrations.transformers

print(message(lightning))
print(message(transformers))
print(message(lambda: gradlens.sinks.TensorBoard("runs")))
print(message(lambda: gradlens.sinks.Wandb()))
"""


def test_each_missing_extra_is_named() -> None:
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, check=True
    ).stdout.splitlines()
    assert len(out) == 4, out
    for line, extra in zip(out, ("lightning", "transformers", "tensorboard", "wandb"), strict=True):
        assert f"pip install 'gradlens[{extra}]'" in line, line
