"""``gradlens run script.py``: a user's unchanged training script run with every optimizer
watched, its arguments, gradlens's own flags, the live lines, the report, the output files and
the exit codes; and the training examples through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn.modules import module as torch_module
from torch.optim import optimizer as torch_optimizer

import gradlens
from gradlens.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MARKER = "ran.marker"

# A small correct training loop: argparse flags, prints what it got, zero_grad every step.
TRAIN = """\
import argparse
import json
import sys

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--lr", type=float, default=0.1)
args = parser.parse_args()
print(f"SCRIPT steps={args.steps} lr={args.lr}")
print("ARGV=" + json.dumps(sys.argv[1:]))

torch.manual_seed(0)
x = torch.randn(32, 3)
y = (x.sum(1, keepdim=True) > 0).float()
model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
criterion = nn.BCEWithLogitsLoss()
for step in range(args.steps):
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
"""

# Prints its arguments and touches a marker file: tells whether (and with what) it ran.
ECHO = f"""\
import json
import sys
from pathlib import Path

Path({MARKER!r}).write_text("ran", encoding="utf-8")
print("ARGV=" + json.dumps(sys.argv[1:]))
"""

# The loop without optimizer.zero_grad().
NO_ZERO_GRAD = """\
import torch
from torch import nn

torch.manual_seed(0)
x = torch.randn(16, 3)
y = (x.sum(1, keepdim=True) > 0).float()
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(5):
    loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
    loss.backward()
    optimizer.step()
"""

# Raises after a few steps.
RAISES = """\
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(8, 3)
for step in range(10):
    optimizer.zero_grad()
    model(x).pow(2).mean().backward()
    optimizer.step()
    if step == 3:
        raise ValueError("the data loader broke at step 3")
"""

# Calls sys.exit(3) after a few steps.
EXITS = """\
import sys

import torch
from torch import nn

model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(8, 3)
for step in range(4):
    optimizer.zero_grad()
    model(x).pow(2).mean().backward()
    optimizer.step()
sys.exit(3)
"""

# An extra parameter the loss never uses, and BCEWithLogitsLoss fed probabilities.
MISTAKES = """\
import torch
from torch import nn

torch.manual_seed(0)
x = torch.randn(16, 3)
y = (x.sum(1, keepdim=True) > 0).float()
model = nn.Linear(3, 1)
unused = nn.Parameter(torch.zeros(2))
optimizer = torch.optim.SGD([*model.parameters(), unused], lr=0.1)
criterion = nn.BCEWithLogitsLoss()
for step in range(5):
    optimizer.zero_grad()
    loss = criterion(torch.sigmoid(model(x)), y)
    loss.backward()
    optimizer.step()
"""


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Runs every test in its own folder, with rich's output not forced to a terminal."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "train.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Returns the exit code, the raw output and the output with whitespace collapsed."""
    code = main(list(argv))
    captured = capsys.readouterr()
    raw = captured.out + captured.err
    return code, raw, " ".join(raw.split())


def line_no(text: str, needle: str) -> int:
    """Returns the 1-based number of the only line of ``text`` that contains ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def argv_of(raw: str) -> list[str]:
    """Returns the arguments the script printed as ``ARGV=[...]``."""
    (line,) = [line for line in raw.splitlines() if line.startswith("ARGV=")]
    argv = json.loads(line[len("ARGV=") :])
    assert isinstance(argv, list)
    return argv


def finding_lines(raw: str, kind: str) -> list[str]:
    return [
        line for line in raw.splitlines() if line.startswith("gradlens ") and f": [{kind}] " in line
    ]


def _no_constants(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def hooks_gone() -> bool:
    return (
        not torch_optimizer._global_optimizer_pre_hooks
        and not torch_module._global_forward_pre_hooks
        and torch._C._len_torch_function_stack() == 0
    )


# ---- a correct script ------------------------------------------------------------------------


def test_a_correct_script_with_its_args_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, TRAIN)
    code, raw, out = run_cli(
        capsys,
        "run",
        "train.py",
        "--steps",
        "150",
        "--lr",
        "0.05",
        "--json",
        "out.json",
        "--plot",
        "out.png",
    )
    assert code == 0, out
    assert "SCRIPT steps=150 lr=0.05" in raw
    assert argv_of(raw) == ["--steps", "150", "--lr", "0.05"]  # not gradlens's own flags

    lines = raw.splitlines()
    step_lines = [line for line in lines if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in step_lines] == ["step 100", "step 150"]
    assert "| loss " in step_lines[0] and "| lr 0.05 |" in step_lines[0]
    assert step_lines[0].endswith("| 0 findings")
    assert not [line for line in lines if line.startswith("gradlens warning")]

    assert "gradlens run train.py" in out
    assert "gradlens report" in out
    assert out.index("step 150 |") < out.index("gradlens report")
    assert "watch report: 150 of 150 steps kept" in out
    assert "no problems found" in out
    assert "wrote" in out and "out.png" in out and "out.json" in out

    lens = gradlens.load(tmp_path / "out.json")
    assert isinstance(lens, gradlens.Lens)
    assert len(lens.steps) == 150
    assert lens.record.total_steps == 150
    assert lens.diagnostics == []
    assert {p.name for p in lens.record.params} == {
        "model.0.weight",
        "model.0.bias",
        "model.2.weight",
        "model.2.bias",
    }
    assert (tmp_path / "out.png").read_bytes().startswith(PNG_MAGIC)


def test_own_flags_before_the_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, TRAIN)
    code, raw, out = run_cli(
        capsys, "run", "--json", "out.json", "--plot", "out.svg", "train.py", "--steps", "7"
    )
    assert code == 0, out
    assert argv_of(raw) == ["--steps", "7"]
    lens = gradlens.load(tmp_path / "out.json")
    assert isinstance(lens, gradlens.Lens) and len(lens.steps) == 7
    assert (tmp_path / "out.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_own_flags_with_equals_sign(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, TRAIN)
    code, raw, out = run_cli(capsys, "run", "train.py", "--json=out.json", "--steps", "3")
    assert code == 0, out
    assert argv_of(raw) == ["--steps", "3"]
    assert (tmp_path / "out.json").is_file()


def test_everything_after_a_double_dash_goes_to_the_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, ECHO, "echo.py")
    code, raw, out = run_cli(
        capsys, "run", "echo.py", "--a", "1", "--", "--json", "x.json", "--plot", "p.png"
    )
    assert code == 0, out
    assert argv_of(raw) == ["--a", "1", "--json", "x.json", "--plot", "p.png"]
    assert not (tmp_path / "x.json").exists()
    assert not (tmp_path / "p.png").exists()
    assert "wrote" not in out


def test_a_double_dash_right_after_the_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, ECHO, "echo.py")
    code, raw, out = run_cli(capsys, "run", "echo.py", "--", "--json", "x.json")
    assert code == 0, out
    assert not (tmp_path / "x.json").exists()
    assert argv_of(raw) == ["--json", "x.json"]


def test_argv_and_path_are_restored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, ECHO, "echo.py")
    argv, path = sys.argv[:], sys.path[:]
    code, raw, _ = run_cli(capsys, "run", "echo.py", "--x")
    assert code == 0
    assert argv_of(raw) == ["--x"]
    assert sys.argv == argv and sys.path == path


# ---- scripts with mistakes -------------------------------------------------------------------


def test_a_missed_zero_grad_points_at_the_backward_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, NO_ZERO_GRAD)
    code, raw, out = run_cli(capsys, "run", "train.py")
    assert code == 0, out
    line = line_no(NO_ZERO_GRAD, "loss.backward()")
    (finding,) = finding_lines(raw, "grad-accumulation")
    assert finding.endswith(f"(train.py:{line})")
    assert "zero_grad() was not called" in finding
    assert "grad-accumulation" in out[out.index("gradlens report") :]  # in the report too
    assert "no problems found" not in out


def test_a_script_that_raises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The absolute path: rich finds a relative frame filename from the folder it was imported
    # in, not from this test's folder, and would show no source line.
    script = write(tmp_path, RAISES)
    assert hooks_gone()
    argv, path = sys.argv[:], sys.path[:]
    code, _, out = run_cli(capsys, "run", str(script), "--flag")
    assert code == 1, out
    assert "Traceback" in out
    assert "ValueError: the data loader broke at step 3" in out
    assert "in <module>" in out  # the script's own frame, with its source line
    assert 'raise ValueError("the data loader broke at step 3")' in out
    assert out.index("ValueError") < out.index("gradlens report")
    assert "watch report: 4 of 4 steps kept" in out
    assert "the script exited with code 1" in out
    assert hooks_gone()
    assert sys.argv == argv and sys.path == path


def test_sys_exit_code_is_passed_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, EXITS)
    code, _, out = run_cli(capsys, "run", "train.py")
    assert code == 3
    assert "Traceback" not in out
    assert "gradlens report" in out
    assert "watch report: 4 of 4 steps kept" in out
    assert "the script exited with code 3" in out
    assert hooks_gone()


def test_sys_exit_zero_is_success(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, EXITS.replace("sys.exit(3)", "sys.exit(0)"))
    code, _, out = run_cli(capsys, "run", "train.py")
    assert code == 0, out
    assert "exited with code" not in out


def test_sys_exit_with_a_message_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, EXITS.replace("sys.exit(3)", "sys.exit('fatal: no data found')"))
    code, _, out = run_cli(capsys, "run", "train.py")
    assert code == 1
    assert "fatal: no data found" in out


def test_unused_parameter_and_sigmoid_into_bce_with_logits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, MISTAKES)
    code, raw, out = run_cli(capsys, "run", "train.py")
    assert code == 0, out
    (no_grad,) = finding_lines(raw, "no-grad")
    assert no_grad.startswith("gradlens warning: [no-grad] ")
    assert "[no-grad] unused requires grad" in no_grad and "got no gradient" in no_grad
    (loss_input,) = finding_lines(raw, "loss-input")
    assert "BCEWithLogitsLoss got sigmoid outputs" in loss_input
    assert loss_input.endswith(f"(train.py:{line_no(MISTAKES, 'torch.sigmoid(')})")
    assert not finding_lines(raw, "grad-accumulation")


# ---- refused before running ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--plot", "out.txt"], "--plot takes a path ending in .png or .svg or .pdf"),
        (["--plot", "missing_dir/out.png"], "the folder 'missing_dir' does not exist"),
        (["--json", "out.txt"], "--json takes a path ending in .json"),
        (
            ["--svg", "x.svg"],
            "--svg is not available for a script: gradlens watches its training and draws "
            "plots, not a graph; use --json, --plot",
        ),
        (["--dot", "x.dot"], "--dot is not available for a script"),
        (["--json"], "--json needs a PATH"),
    ],
)
def test_bad_flags_are_refused_before_the_script_runs(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, ECHO)
    code, raw, out = run_cli(capsys, "run", "train.py", *flags)
    assert code == 2, out
    assert out.startswith("error: "), out
    assert message in out
    assert "Traceback" not in out
    assert "ARGV=" not in raw
    assert not (tmp_path / MARKER).exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "train.py"]  # nothing written


def test_bad_flags_before_the_script_are_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, ECHO)
    code, _, out = run_cli(capsys, "run", "--plot", "out.txt", "train.py")
    assert code == 2
    assert "--plot takes a path ending in" in out
    assert not (tmp_path / MARKER).exists()


def test_a_missing_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, out = run_cli(capsys, "run", "nope.py", "--steps", "3")
    assert code == 2
    assert out.startswith("error: no such script: nope.py")
    assert "Traceback" not in out
    assert "gradlens report" not in out


# ---- the training examples -------------------------------------------------------------------


def test_logistic_2d_writes_plots_and_strict_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, out = run_cli(capsys, "run", "logistic-2d", "--plot", "p.png", "--json", "j.json")
    assert code == 0, out
    for name in ("p.png", "p-boundary.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC), name
    data = json.loads(
        (tmp_path / "j.json").read_text(encoding="utf-8"), parse_constant=_no_constants
    )
    assert set(data) == {"example", "watch", "values"}
    assert data["example"] == "logistic-2d"
    watch = data["watch"]
    iterations = data["values"]["iterations"]
    assert watch["total_steps"] == iterations > 0
    assert len(watch["steps"]) == iterations
    assert [s["step"] for s in watch["steps"]] == list(range(iterations))
    assert {p["name"] for p in watch["params"]} == {"linear.weight", "linear.bias"}
    assert watch["diagnostics"] == []


def test_forgot_zero_grad_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, out = run_cli(capsys, "run", "forgot-zero-grad")
    assert code == 0, out
    assert "grad-accumulation" in out
    assert "gradlens/examples/forgot_zero_grad.py:" in out


def test_a_graph_format_for_an_example_without_a_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, out = run_cli(capsys, "run", "logistic-1d", "--svg", "x.svg")
    assert code == 2
    assert (
        "error: --svg is not available for example 'logistic-1d': it is a training run and "
        "draws plots, not a graph; use --json, --plot"
    ) in out
    assert not (tmp_path / "x.svg").exists()


def test_a_graph_format_for_an_example_without_a_graph_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, out = run_cli(capsys, "run", "logistic-1d", "--svg", "x.svg")
    assert code == 2
    assert "watch report" not in out


# ---- a real process --------------------------------------------------------------------------


def test_python_m_gradlens_run_script(tmp_path: Path) -> None:
    write(tmp_path, TRAIN)
    done = subprocess.run(
        [sys.executable, "-m", "gradlens", "run", "train.py", "--steps", "5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SCRIPT steps=5 lr=0.1" in done.stdout
    assert "gradlens report" in done.stdout
    assert "watch report: 5 of 5 steps kept" in done.stdout
    assert "step 5 |" in done.stdout  # the final compact line: stdout is a pipe
