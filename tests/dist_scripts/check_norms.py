"""Prints how far watch()'s combined gradient statistics under DDP and FSDP2 (2 ranks, gloo,
CPU) are from one process's on the same global batch: ``python tests/dist_scripts/check_norms.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from launch import HERE, run_ranks


def worst(mode: str, steps: int) -> None:
    with tempfile.TemporaryDirectory() as out:
        ranks = run_ranks([str(HERE / "scenarios.py"), mode, out])
        assert all(r.code == 0 for r in ranks), [r.err for r in ranks]
        data = json.loads((Path(out) / "rank0.json").read_text())
    diffs: dict[str, float] = {"loss": 0.0, "norm": 0.0, "max |g|": 0.0}
    mean_abs = 0.0
    count = 0
    for s in data["steps"]:
        if s["step"] >= steps:
            continue
        want = data["reference"][s["step"]]
        diffs["loss"] = max(diffs["loss"], abs(s["loss"] / want["loss"] - 1))
        for name, (norm, mean, gmax, *_) in s["grads"].items():
            r_norm, r_mean, r_max, _ = want["grads"][name]
            diffs["norm"] = max(diffs["norm"], abs(norm / r_norm - 1))
            mean_abs = max(mean_abs, abs(mean - r_mean))
            diffs["max |g|"] = max(diffs["max |g|"], abs(gmax / r_max - 1))
            count += 1
    text = ", ".join(f"{k} {v:.2g}" for k, v in diffs.items())
    print(
        f"{mode}: {count} (step, parameter) pairs, worst relative difference: {text}; "
        f"worst absolute difference of the mean: {mean_abs:.2g}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    worst("ddp", 130)
    worst("fsdp", 64)  # the run destroys its group before its last 3 steps are combined
