"""The distributed side of watch(), in this process: combining shards' numbers, the replica
comparison, the rank-aware messages, rank-0-only output, and FSDP2 (DTensor gradients) on a
one-rank gloo group, measured by local shard. The multi-process runs: test_distributed.py."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from rich.console import Console
from torch import nn

import gradlens
from gradlens.analysis.distributed import rank_finding
from gradlens.capture import distributed
from gradlens.capture.distributed import _F, _K, _put_stats, _Row, _same, _stats, rank_path
from gradlens.capture.pending import _light
from gradlens.cli import main
from gradlens.records import ParamStats, StepRecord, WatchFact, WatchRecord
from gradlens.records.serialize import dumps, loads


def _shard_row(t: torch.Tensor, detail: bool) -> _Row:
    """The packet row one rank would send for its shard ``t`` (through ParamStats, as the real
    path does)."""
    n = t.numel()
    if n:
        lo, hi = t.min().item(), t.max().item()
        light = _light(t.square().sum().item(), t.sum().item(), lo, hi, n)
    else:
        light = (0.0, 0.0, 0.0, 0.0, False)
    extra = {}
    if detail:
        extra = dict(
            zero_frac=(t == 0).sum().item() / n if n else 0.0,
            nan=int(t.isnan().sum()),
            inf=int(t.isinf().sum()),
            weight_norm=2.0 * math.sqrt(n),  # a weight of all 2s
            update_ratio=(0.1 * math.sqrt(n)) / (2.0 * math.sqrt(n)) if n else None,
        )
    row = [math.nan] * _K
    row[_F["present"]], row[_F["kind"]], row[_F["numel"]] = 1.0, 1.0, float(n)
    _put_stats(row, ParamStats(*light, **extra), n)  # type: ignore[arg-type]
    return _Row(row)


@pytest.mark.parametrize("sizes", [(4, 3), (7, 0), (3, 3, 1)])
def test_shards_combine_into_the_whole_gradient(sizes: tuple[int, ...]) -> None:
    whole = torch.tensor([0.5, -2.0, 0.0, 1.25, 3.0, 0.0, -0.75], dtype=torch.float64)
    shards = torch.split(whole, [s for s in sizes])
    combined = _stats([_shard_row(s, detail=True) for s in shards], detail=True)
    n = whole.numel()
    norm, mean, std, _, _ = _light(
        whole.square().sum().item(), whole.sum().item(), whole.min().item(), whole.max().item(), n
    )
    assert combined.grad_norm == pytest.approx(norm, rel=1e-12)
    assert combined.grad_mean == pytest.approx(mean, rel=1e-12)
    assert combined.grad_std == pytest.approx(std, rel=1e-12)
    assert combined.grad_max == 3.0 and not combined.nonfinite  # an empty shard's 0 is no max
    assert combined.zero_frac == pytest.approx(2 / 7)
    assert combined.weight_norm == pytest.approx(2.0 * math.sqrt(7))
    assert combined.update_ratio == pytest.approx(0.05)


def test_a_nonfinite_shard_makes_the_whole_nonfinite() -> None:
    good = _shard_row(torch.ones(3), detail=True)
    bad = _shard_row(torch.tensor([1.0, math.nan, math.inf]), detail=True)
    combined = _stats([good, bad], detail=True)
    assert combined.nonfinite and math.isnan(combined.grad_max)
    assert (combined.nan, combined.inf) == (1, 1)


def test_replicas_compare_to_rounding_not_beyond() -> None:
    a = _shard_row(torch.linspace(-1, 1, 101), detail=False)
    same = _Row(list(a.values))
    same.values[_F["sumsq"]] *= 1 + 1e-7  # float32 sums added in another order
    assert _same(a, same)
    off = _Row(list(a.values))
    off.values[_F["sumsq"]] *= 1.001
    assert not _same(a, off)
    moved = _Row(list(a.values))
    moved.values[_F["sum"]] += 1e-3
    assert not _same(a, moved)


def test_ranks_holding_different_sizes_are_not_replicas() -> None:
    # FSDP1 with use_orig_params=True: plain tensors, a different slice on each rank. Neither
    # passed off as the whole gradient nor compared as replicas: left out, with a note.
    facts: list[WatchFact] = []
    notes: list[str] = []
    ranks = distributed.Ranks(facts, notes)
    meta = distributed._Meta("SGD", 0, ["w", "b"], [0, 0], [3, 2], [-1, -1], [None, None])
    w0, w1 = _shard_row(torch.ones(3), False), _shard_row(torch.ones(2) * 5, False)
    b0, b1 = _shard_row(torch.ones(2), False), _shard_row(torch.ones(2), False)
    for row in (w0, w1, b0, b1):
        row.values[_F["kind"]] = 0.0  # plain tensors: replicated, as far as the rank knows
    record = StepRecord(0, {"w": ParamStats(3**0.5, 1.0, 0.0, 1.0, False)}, optimizer="SGD")
    record = StepRecord(0, {**record.grads, "b": ParamStats(2**0.5, 1.0, 0.0, 1.0, False)})
    combined = ranks._combine(meta, record, [1.0, 3.0], [[w0, b0], [w1, b1]])
    assert set(combined.grads) == {"b"} and combined.loss == 2.0
    assert notes and notes[0].startswith("w: its gradient is split across the ranks")
    ranks._divergence(meta, [[w0, b0], [w1, b1]])
    assert facts == []


def test_rank_path() -> None:
    assert rank_path("out.json", 0) == "out.json"
    assert rank_path(Path("runs/out.json"), 3) == os.path.join("runs", "out.rank3.json")


def _fact(kind: str, detail: str, ranks: tuple[int, ...], param: str = "fc.weight") -> WatchFact:
    return WatchFact(kind, 7, param, None, detail, "SGD", ranks=ranks)  # type: ignore[arg-type]


def test_rank_findings_say_which_rank_and_why() -> None:
    d = rank_finding(_fact("nonfinite-rank", "loss|rank 0: 0.5, rank 1: nan", (1,)))
    assert d.kind == "nonfinite-rank" and d.step == 7 and d.name == "fc.weight"
    assert d.message.startswith("step 7: the first non-finite gradient came from rank 1, whose")
    assert "(losses: rank 0: 0.5, rank 1: nan)" in d.message
    assert d.fix is not None and "dist.get_rank() == 1" in d.fix
    d = rank_finding(_fact("nonfinite-rank", "shard|rank 0: 1, rank 1: 2", (0,)))
    assert "lies in the shard of rank 0" in d.message and "not known" in d.message
    d = rank_finding(_fact("nonfinite-rank", "after-reduce|", (0, 1)))
    assert "was on ranks 0 and 1 after the all-reduce;" in d.message
    d = rank_finding(_fact("replica-divergence", "fc.weight, fc.bias|rank 0: 1, rank 1: 2", (0, 1)))
    assert "the gradients of fc.weight, fc.bias differ between ranks 0 and 1" in d.message
    assert d.fix is not None and "DistributedDataParallel" in d.fix
    d = rank_finding(_fact("unused-on-some-ranks", "none|3", (2,)))
    assert "got no gradient from the backward of rank 2" in d.message
    assert "while the backward of 3 other ranks did" in d.message
    assert "find_unused_parameters=True" in d.message and "hangs" in d.message


def test_records_round_trip_with_ranks() -> None:
    fact = _fact("unused-on-some-ranks", "filled|1", (1,))
    record = WatchRecord(params=(), steps=(StepRecord(0, {}),), facts=(fact,), world_size=2)
    assert loads(dumps(record)) == record


# -- one process: silent unless rank 0 ----------------------------------------------------------
def _loop(steps: int = 3) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 3, zero: str = "none"):
    for i in range(steps):
        if zero == "none":
            opt.zero_grad()
        elif zero == "zeros":
            opt.zero_grad(set_to_none=False)
        x = torch.randn(5, 4, generator=torch.Generator().manual_seed(i))
        model(x).square().mean().backward()
        opt.step()


def test_other_ranks_are_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(distributed, "_last_rank", None)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("GRADLENS_ALL_RANKS", raising=False)
    model, opt = _loop()
    with gradlens.watch(model, opt, live=True) as lens:
        _train(model, opt)
    assert lens.silent
    lens.report()
    assert lens.plot(tmp_path / "p.png") == tmp_path / "p.png"
    assert not (tmp_path / "p.png").exists() and capsys.readouterr().out == ""
    assert lens.record.rank == 1 and lens.record.world_size == 1 and len(lens.steps) == 3
    monkeypatch.setenv("GRADLENS_ALL_RANKS", "1")  # asked: every rank
    model, opt = _loop()
    with gradlens.watch(model, opt, live=False) as lens:
        _train(model, opt)
    console = Console(width=100, record=True)
    lens.report(console)
    assert "watch report" in console.export_text()
    assert lens.plot(tmp_path / "p.png").stat().st_size > 0


TRAIN = """\
import torch
from torch import nn
model = nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(4):
    opt.zero_grad()
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
"""


def test_cli_other_ranks_write_nothing_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "train.py").write_text(TRAIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(distributed, "_last_rank", None)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("GRADLENS_ALL_RANKS", raising=False)
    assert main(["run", "train.py", "--json", "out.json"]) == 0
    assert capsys.readouterr().out == "" and not list(tmp_path.glob("out*"))
    monkeypatch.setenv("GRADLENS_ALL_RANKS", "1")
    assert main(["run", "train.py", "--json", "out.json"]) == 0
    out = capsys.readouterr().out
    assert "train.py (rank 1)" in out and "wrote out.rank1.json" in out
    assert [p.name for p in tmp_path.glob("out*")] == ["out.rank1.json"]


# -- FSDP2 on a one-rank group: DTensor gradients, measured by their local shard ----------------
@pytest.fixture
def one_rank_group(tmp_path: Path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("zero", ["none", "zeros"])
def test_fsdp2_gradients_watched_by_local_shard(one_rank_group: None, zero: str) -> None:
    from torch.distributed.fsdp import fully_shard

    plain, plain_opt = _loop()
    with gradlens.watch(plain, plain_opt, live=False) as want:
        _train(plain, plain_opt, zero=zero)
    model, _ = _loop()
    fully_shard(model)  # new (DTensor) parameters: the optimizer comes after
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert type(model[0].weight).__name__ == "DTensor"
    with gradlens.watch(model, opt, live=False) as lens:
        _train(model, opt, zero=zero)
    assert lens.record.notes == () and lens.diagnostics == []  # no false no-grad at step 0
    for got, ref in zip(lens.steps, want.steps, strict=True):
        assert got.loss == pytest.approx(ref.loss, rel=1e-6) and got.backward_calls == 1
        assert set(got.grads) == set(ref.grads)
        for name, stats in got.grads.items():
            assert stats.grad_norm == pytest.approx(ref.grads[name].grad_norm, rel=1e-6)


def test_fsdp2_missed_zero_grad_is_found(one_rank_group: None) -> None:
    from torch.distributed.fsdp import fully_shard

    model, _ = _loop()
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradlens.watch(model, opt, live=False) as lens:
        _train(model, opt, zero="never")  # FSDP2 adds each step's gradient into .grad
    kinds = [d.kind for d in lens.diagnostics]
    assert kinds == ["grad-accumulation"] and lens.diagnostics[0].step == 1
