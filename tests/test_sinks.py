"""gradlens.sinks: TensorBoard event files read back with TensorBoard's own reader, W&B offline
runs read back from their files, both equal to the lens's records; no extra host copy."""

from __future__ import annotations

import glob
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from integ_support import require
from torch import nn

import gradlens
from gradlens import GradlensError
from gradlens.cli import main
from gradlens.sinks import TensorBoard, Wandb

require("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

BINS = 8


def train(sinks: list[Any], steps: int = 6, bad_step: int | None = 3, **watch: Any) -> Any:
    """Trains a tiny model; at ``bad_step`` one input is infinite (NaN and inf gradients).
    Returns the lens and every step's gradients as seen by an optimizer pre-hook."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    seen: list[dict[str, torch.Tensor]] = []
    handle = opt.register_step_pre_hook(
        lambda *a: seen.append({n: p.grad.clone() for n, p in net.named_parameters()})
    )
    options = {"live": False, "detail_every": 1, **watch}
    with gradlens.watch(net, opt, sinks=sinks, **options) as lens:
        for i in range(steps):
            opt.zero_grad()
            xi = x.clone()
            if i == bad_step:
                xi[0, 0] = math.inf
            loss = nn.functional.mse_loss(net(xi), y)
            loss.backward()
            opt.step()
    handle.remove()
    return lens, seen


def expected_counts(g: torch.Tensor, lo: float, hi: float) -> list[float]:
    """Counts by hand: below lo, BINS equal bins over [lo, hi), at or above hi; NaN nowhere."""
    width = (hi - lo) / BINS
    counts = [0.0] * (BINS + 2)
    for v in g.double().flatten().tolist():
        if math.isnan(v):
            continue
        i = 0 if v < lo else BINS + 1 if v >= hi else 1 + min(int((v - lo) / width), BINS - 1)
        counts[i] += 1
    return counts


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_tensorboard_scalars_histograms_and_findings_equal_the_records(tmp_path: Path) -> None:
    lens, seen = train([TensorBoard(tmp_path, bins=BINS, hist_every=1)])
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    steps = lens.steps
    assert len(steps) == 6
    for tag in ("loss", "lr", "grad_norm/0.weight", "nan/0.weight", "update_ratio/2.bias"):
        written = {e.step: e.value for e in events.Scalars(tag)}
        field, _, param = tag.partition("/")
        want = {
            s.step: getattr(s.grads[param], field) if param else getattr(s, field) for s in steps
        }
        assert written.keys() == want.keys()
        assert all(same(written[k], f32(float(want[k]))) for k in want), (tag, written, want)
    bad = steps[3].grads["0.weight"]
    assert bad.nonfinite and bad.nan is not None and bad.nan > 0  # counted, never dropped
    # Ranges: from step 0's largest |g|, the power of two just above it; no histogram at step 0.
    for name in ("0.weight", "2.bias"):
        r = 2.0 ** (math.floor(math.log2(steps[0].grads[name].grad_max)) + 1)
        hists = events.Histograms(f"grad/{name}")
        assert [h.step for h in hists] == [1, 2, 3, 4, 5]
        for h in hists:
            v = h.histogram_value
            want = expected_counts(seen[h.step][name], -r, r)
            assert list(v.bucket) == want
            width = 2 * r / BINS
            assert list(v.bucket_limit) == pytest.approx([-r + i * width for i in range(BINS + 2)])
            nan = lens.steps[h.step].grads[name].nan
            assert v.num + nan == seen[h.step][name].numel()  # every element: a bin or NaN
    texts = events.Tensors("gradlens/findings/text_summary")
    lines = [t.tensor_proto.string_val[0].decode() for t in texts]
    assert [d.kind for d in lens.diagnostics] == ["nan-grad"]
    assert len(lines) == 1 and "[nan-grad]" in lines[0] and texts[0].step == 3


SYNCS = ("item", "tolist", "cpu", "numpy", "__float__", "__bool__", "__int__", "__index__")


@pytest.fixture
def host_copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Returns a list recording every tensor → host copy (as tests/test_watch.py counts)."""
    calls: list[str] = []
    depth = [0]
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def wrapper(self: torch.Tensor, *args: Any, _o: Any = original, _n: str = name) -> Any:
            if depth[0] == 0:
                calls.append(_n)
            depth[0] += 1
            try:
                return _o(self, *args)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


def test_sinks_add_no_host_copy_beyond_one_to_fix_the_ranges(
    tmp_path: Path, host_copies: list[str]
) -> None:
    train([TensorBoard(tmp_path / "fixed", hist_range=1.0)], steps=20, bad_step=None)
    assert host_copies == ["cpu", "tolist"]  # the whole run's numbers and histograms, at once
    host_copies.clear()
    train([TensorBoard(tmp_path / "auto")], steps=20, bad_step=None)
    assert host_copies == ["cpu", "tolist"] * 2  # once after step 0 (ranges), once at the end


def test_a_writer_of_yours_keeps_your_tags_and_stays_open(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    writer.add_scalar("loss", 123.0, 0)
    lens, _ = train([TensorBoard(writer, histograms=False)], bad_step=None)
    writer.add_scalar("loss", 456.0, 1)  # still open
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.value for e in events.Scalars("loss")] == [123.0, 456.0]
    written = [e.value for e in events.Scalars("gradlens/loss")]
    assert written == [f32(s.loss) for s in lens.steps]
    assert events.Tags()["histograms"] == []


def test_a_failing_sink_is_dropped_with_a_note_and_training_goes_on(tmp_path: Path) -> None:
    sink = TensorBoard(tmp_path)

    def broken(*args: Any) -> None:
        raise OSError("disk full")

    sink.write = broken  # type: ignore[method-assign]
    lens, _ = train([sink], bad_step=None)
    assert len(lens.steps) == 6
    assert lens.record.notes == ("gradlens stopped writing to TensorBoard: OSError: disk full",)


def test_sink_arguments_are_checked() -> None:
    with pytest.raises(GradlensError, match="bins"):
        TensorBoard("x", bins=0)
    with pytest.raises(GradlensError, match="hist_range"):
        TensorBoard("x", hist_range=-1.0)
    with pytest.raises(GradlensError, match="hist_every"):
        TensorBoard("x", hist_every=0)
    with pytest.raises(GradlensError, match="different histograms"):
        gradlens.watch(sinks=[TensorBoard("x", bins=8), TensorBoard("y", bins=16)])
    with pytest.raises(GradlensError, match="takes gradlens"):
        gradlens.watch(sinks=["runs"])  # type: ignore[list-item]


def wandb_history(folder: Path) -> list[dict[str, Any]]:
    """Returns the history rows of the offline run in ``folder``, read from its .wandb file
    (a LevelDB-style log of ``wandb_internal_pb2.Record`` protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb"))
    data = Path(path).read_bytes()
    block, pos, chunks, rows = 32768, 7, b"", []  # after the 7-byte W&B header
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        chunks = payload if kind in (1, 2) else chunks + payload
        if kind in (1, 4) and chunks:
            record = pb.Record()
            record.ParseFromString(chunks)
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
    return rows


def test_wandb_offline_rows_equal_the_records(tmp_path: Path, monkeypatch: Any) -> None:
    wandb = require("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="gradlens-test", dir=str(tmp_path), mode="offline")
    try:
        run.log({"mine": 1.0})  # the user's own row stays theirs
        lens, seen = train([Wandb(run, bins=BINS, hist_every=1)])
    finally:
        run.finish()
        wandb.teardown()  # the service writes the run's file; this waits until it is done
    rows = wandb_history(tmp_path)
    assert rows[0]["mine"] == 1.0 and "gradlens/step" not in rows[0]
    ours = [r for r in rows if "gradlens/step" in r]
    assert [r["gradlens/step"] for r in ours] == [s.step for s in lens.steps]
    for row, step in zip(ours, lens.steps, strict=True):
        loss = row["gradlens/loss"]  # beside the user's keys, never on them
        assert loss == step.loss or (math.isnan(loss) and math.isnan(step.loss))
        for name, stats in step.grads.items():
            for field in ("grad_norm", "grad_max", "nan", "inf", "update_ratio", "weight_norm"):
                value = getattr(stats, field)
                assert same(float(row[f"{field}/{name}"]), float(value)), (field, name)
            if step.step > 0:
                r = 2.0 ** (math.floor(math.log2(lens.steps[0].grads[name].grad_max)) + 1)
                assert row[f"grad/{name}/values"] == expected_counts(seen[step.step][name], -r, r)
                edges = [-r + (i - 1) * 2 * r / BINS for i in range(BINS + 3)]
                assert row[f"grad/{name}/bins"] == pytest.approx(edges)
    assert math.isnan(ours[3]["grad_max/0.weight"])  # NaN logged as NaN, not dropped
    table = ours[-1]["gradlens/findings/path"]
    (path,) = glob.glob(str(tmp_path / "wandb" / "offline-run-*" / "files" / table))
    findings = json.loads(Path(path).read_text())
    assert findings["columns"][:3] == ["step", "severity", "kind"]
    assert [row[:3] for row in findings["data"]] == [[3, "error", "nan-grad"]]


SCRIPT = """
import torch
torch.manual_seed(0)
w = torch.nn.Parameter(torch.randn(3))
opt = torch.optim.SGD([w], lr=0.1)
for step in range(5):
    opt.zero_grad()
    (w ** 2).sum().backward()
    opt.step()
"""


def test_gradlens_run_tensorboard_dir(tmp_path: Path, capsys: Any) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    assert main(["run", str(script), "--tensorboard", str(tmp_path / "tb")]) == 0
    assert "wrote TensorBoard events to" in capsys.readouterr().out
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    norms = [e.value for e in events.Scalars("grad_norm/w")]
    torch.manual_seed(0)
    w = torch.randn(3)
    want = [f32(float((2 * w * 0.8**k).norm())) for k in range(5)]  # w ← 0.8 w each step
    assert norms == pytest.approx(want, rel=1e-6)
    assert main(["run", "forgot_zero_grad", "--tensorboard", str(tmp_path)]) == 2
