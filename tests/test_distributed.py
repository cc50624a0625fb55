"""watch() under torch.distributed: real processes, gloo, 2 ranks on CPU over loopback.

The runs (tests/dist_scripts/) start together, once per module; each test reads one run's
results. Every combined number is compared with the same quantity computed in one process on
the whole global batch, without torch.distributed and without gradlens.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from dist_scripts.launch import ROOT, Rank, base_env, free_port, run_ranks

SCRIPTS = Path(__file__).parent / "dist_scripts"
RTOL = 1e-5  # float32 sums in another order: the observed worst is ~1.3e-6


def _torchrun(out: Path) -> list[Rank]:
    """``torchrun --nproc-per-node 2 -m gradlens run train_fsdp.py --json --plot``."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-port", str(free_port()), "-m", "gradlens", "run",
        str(SCRIPTS / "train_fsdp.py"), "--json", str(out / "w.json"), "--plot", str(out / "w.png"),
    ]  # fmt: skip
    p = subprocess.run(cmd, env=base_env(), cwd=str(ROOT), capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    return [Rank(0, p.returncode, p.stdout, p.stderr, 0.0)]


# name: (scenario, environment)
RUNS = {
    "ddp": ("ddp", {}),
    "fsdp": ("fsdp", {}),
    "faults": ("faults", {"GRADLENS_ALL_RANKS": "1"}),
    "dead": ("dead", {"GRADLENS_DIST_TIMEOUT": "20"}),  # dies after the first exchange
    "dead-early": ("dead", {"GRADLENS_DIST_TIMEOUT": "8", "DEAD_STEP": "10"}),  # before it
    "hung": ("dead", {"GRADLENS_DIST_TIMEOUT": "8", "HANG": "40"}),  # stuck for 40 s at 70
    "rank0-only": ("rank0-only", {"GRADLENS_DIST_TIMEOUT": "300"}),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Starts every run at once (their time is mostly importing torch) and waits for all."""
    dirs = {name: tmp_path_factory.mktemp(name) for name in [*RUNS, "cli"]}
    with ThreadPoolExecutor(len(dirs)) as pool:
        futures: dict[str, Any] = {
            name: pool.submit(
                run_ranks, [str(SCRIPTS / "scenarios.py"), mode, str(dirs[name])], 2, env, 600.0
            )
            for name, (mode, env) in RUNS.items()
        }
        futures["cli"] = pool.submit(_torchrun, dirs["cli"])
        return {name: (f.result(), dirs[name]) for name, f in futures.items()}


def _results(runs: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    ranks, out = runs[mode]
    for r in ranks:
        assert r.code == 0, f"{mode} rank {r.rank} exited {r.code}:\n{r.out}\n{r.err}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-7)


def _assert_matches_reference(
    steps: list[dict[str, Any]], ref: list[dict[str, Any]], loss: bool = True
) -> int:
    """Every kept step's combined loss, norm, mean, max |g| (and weight norm when measured)
    equals one process's on the global batch; returns how many numbers were compared."""
    compared = 0
    for s in steps:
        want = ref[s["step"]]
        if loss:
            assert _close(s["loss"], want["loss"]), (s["step"], s["loss"], want["loss"])
        assert set(s["grads"]) == set(want["grads"])
        for name, (norm, mean, gmax, wnorm, _) in s["grads"].items():
            r_norm, r_mean, r_max, r_wnorm = want["grads"][name]
            assert _close(norm, r_norm), (s["step"], name, norm, r_norm)
            assert _close(mean, r_mean), (s["step"], name, mean, r_mean)
            assert _close(gmax, r_max), (s["step"], name, gmax, r_max)
            compared += 4
            if wnorm is not None:
                assert _close(wnorm, r_wnorm), (s["step"], name, wnorm, r_wnorm)
                compared += 1
    return compared


def test_ddp_combined_norm_equals_single_process(runs: dict[str, Any]) -> None:
    for data in _results(runs, "ddp"):
        assert data["world_size"] == 2
        assert [s["step"] for s in data["steps"]] == list(range(130))
        assert _assert_matches_reference(data["steps"], data["reference"]) > 130 * 4 * 4
        assert data["findings"] == [] and data["notes"] == []


def test_ddp_one_collective_per_flush(runs: dict[str, Any]) -> None:
    # 130 steps: exchanges at steps 64 and 128 and when the block ends; none per step. The
    # group gradlens makes for them (gloo, with its timeout) is made once.
    for data in _results(runs, "ddp"):
        assert data["calls"] == {"new_group": 1, "all_gather": 3}


def test_ddp_output_on_rank_zero_only(runs: dict[str, Any]) -> None:
    (rank0, rank1), out = runs["ddp"]
    assert rank0.out.count("watch report") == 1 and "step 128 |" in rank0.out
    assert "step 100 |" not in rank0.out  # a line comes with combined steps, not before
    assert rank1.out == ""  # no live line, no report
    data = _results(runs, "ddp")
    assert (out / "plot-r0.png").stat().st_size > 0
    assert not (out / "plot-r1.png").exists() and data[1]["plot"].endswith("plot-r1.png")


def test_fsdp2_dtensor_gradients_combined(runs: dict[str, Any]) -> None:
    ranks = _results(runs, "fsdp")
    for data in ranks:
        assert set(data["kinds"].values()) == {"DTensor"}  # FSDP2's sharded parameters
        combined = [s for s in data["steps"] if s["step"] < 64]
        assert len(combined) == 64
        assert _assert_matches_reference(combined, data["reference"]) > 64 * 4 * 4
        # The whole gradient's norm is the root of the shards' squares, not one rank's shard.
        last = combined[-1]["grads"]
        for name, (norm, *_rest) in last.items():
            shards = [r["shards"][name] for r in ranks]
            assert _close(norm, math.hypot(*shards)), (name, norm, shards)
            assert all(norm > s * (1 + 1e-3) for s in shards)
        assert data["calls"] == {"new_group": 1, "all_gather": 1}


def test_fsdp2_group_destroyed_before_the_flush(runs: dict[str, Any]) -> None:
    # The script destroyed the group inside the block (with the function it took before
    # gradlens started): the last 3 steps are not combined, and a shard is never passed off
    # as the gradient: they keep their loss but no sharded statistics, and a note says so.
    for data in _results(runs, "fsdp"):
        late = [s for s in data["steps"] if s["step"] >= 64]
        assert [s["step"] for s in late] == [64, 65, 66]
        assert all(s["grads"] == {} for s in late)
        assert any("could not combine across ranks" in n for n in data["notes"])


def test_torchrun_gradlens_run_fsdp2(runs: dict[str, Any]) -> None:
    (run,), out = runs["cli"]
    assert run.code == 0, run.out + run.err
    assert run.out.count("gradlens report") == 1 and run.out.count("watch report") == 1
    assert (out / "w.png").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["w.json", "w.png"]  # rank 0's only
    data = json.loads((out / "w.json").read_text())["data"]
    assert data["world_size"] == 2 and data["notes"] == [] and data["diagnostics"] == []
    sys.path.insert(0, str(SCRIPTS))
    try:
        from train_fsdp import reference

        ref = reference(2)
    finally:
        sys.path.remove(str(SCRIPTS))
    # Every step combined, the last 6 too: gradlens ran its exchange when the script called
    # dist.destroy_process_group(), before the group went.
    assert [s["step"] for s in data["steps"]] == list(range(70))
    for s in data["steps"]:
        assert _close(s["loss"], ref[s["step"]]["loss"])
        for name, stats in s["grads"].items():
            want = ref[s["step"]]["norms"][name.removeprefix("model.")]
            assert _close(stats["grad_norm"], want), (s["step"], name)


def test_rank_aware_findings(runs: dict[str, Any]) -> None:
    for data in _results(runs, "faults"):
        facts = {(f[0], f[2]): f for f in data["facts"]}
        # Step 1: rank 1's forward skipped the branch; DDP filled its gradient in.
        for name in ("b.weight", "b.bias"):
            _, step, _, ranks, detail = facts[("unused-on-some-ranks", name)]
            assert (step, ranks, detail) == (1, [1], "filled|1")
        # Step 2: rank 1 tripled out.bias's gradient after the all-reduce.
        _, step, _, ranks, detail = facts[("replica-divergence", "out.bias")]
        assert (step, ranks) == (2, [0, 1]) and detail.startswith("out.bias|")
        # Step 4: rank 1's own backward made NaN (its loss was finite).
        _, step, _, ranks, detail = facts[("nonfinite-rank", "a.weight")]
        assert (step, ranks) == (4, [1]) and detail.startswith("own-gradient|")
        assert len(data["facts"]) == 4
        messages = {f[0]: f[3] for f in data["findings"]}
        assert "came from rank 1: its own backward" in messages["nonfinite-rank"]
        assert "find_unused_parameters=True) filled it in" in messages["unused-on-some-ranks"]
        assert "(1 of 2)" in messages["unused-on-some-ranks"]
        assert "differ between ranks 0 and 1" in messages["replica-divergence"]
        assert messages["nan-grad"].startswith("step 4:")
    # What the unused-parameter finding says DDP does: rank 0's gradient averaged with zero.
    assert set(_results(runs, "faults")[0]["fill_ratio"]) == {0.5}


def test_all_ranks_asked(runs: dict[str, Any]) -> None:
    (rank0, rank1), out = runs["faults"]  # GRADLENS_ALL_RANKS=1
    assert rank0.out.count("watch report") == 1 and rank1.out.count("watch report") == 1
    assert (out / "plot-r0.png").exists() and (out / "plot-r1.png").exists()


@pytest.mark.parametrize(
    ("run", "error"),
    [
        ("dead", "by peer"),  # gloo sees the peer gone at once: connection closed, or reset
        ("dead-early", "wait timeout after 8000ms"),  # making gradlens's group: the timeout
    ],
)
def test_dead_rank_does_not_hang_the_others(runs: dict[str, Any], run: str, error: str) -> None:
    (rank0, rank1), out = runs[run]
    assert rank1.code == 3  # it died (at step 70, or 10)
    assert rank0.code == 0, rank0.err  # and rank 0 trained on to the end
    data = json.loads((out / "rank0.json").read_text())
    assert data["seconds"] < 120  # all 140 steps, waits included (timeouts: 20 s, 8 s)
    assert [s["step"] for s in data["steps"]] == list(range(140))
    (note,) = data["notes"]
    assert note.startswith("gradlens stopped combining statistics across ranks: the exchange")
    assert error in note


def test_hung_rank_times_out(runs: dict[str, Any]) -> None:
    # Rank 1 sleeps 40 s at step 70; rank 0 waits 8 s at its exchange at step 128, then goes
    # on with its own numbers and ends before rank 1 wakes; rank 1, awake, finds rank 0 gone at
    # its own exchange.
    ranks = _results(runs, "hung")
    assert ranks[0]["ended"] < ranks[1]["woke"]
    assert "Timed out waiting 8000ms" in ranks[0]["notes"][0]
    assert "stopped combining" in ranks[1]["notes"][0]
    for data in ranks:
        assert [s["step"] for s in data["steps"]] == list(range(140))
        assert data["world_size"] == 2  # the first exchange (steps 0-63) combined both ranks


def test_watch_on_rank_zero_only(runs: dict[str, Any]) -> None:
    # Rank 1 never watches: rank 0 sees it has no partner at its first exchange (through the
    # store, waiting 10 s at most, never the 300 s timeout), keeps what is true on its own
    # (DDP's replicated gradients are the whole gradient), and says why nothing was combined.
    (rank0, rank1), out = runs["rank0-only"]
    assert rank0.code == 0 and rank1.code == 0, rank0.err + rank1.err
    data = json.loads((out / "rank0.json").read_text())
    assert data["seconds"] < 200 and data["calls"] == {}
    assert data["world_size"] == 1  # and the loss is rank 0's own batch's
    assert _assert_matches_reference(data["steps"], data["reference"], loss=False) > 70 * 4 * 4
    (note,) = data["notes"]
    assert "does not watch rank(s) 1 (watch() on some ranks only?)" in note
