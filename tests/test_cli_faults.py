"""``gradlens run`` when things go wrong: Ctrl-C, a script that raises or exits, a backward that
PyTorch refuses under ``--guard``, output paths that cannot be written, and paths, names and
messages that look like rich markup. Nothing the user asked for is lost or mangled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.nn.modules import module as torch_module
from torch.optim import optimizer as torch_optimizer

import gradlens
from gradlens.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MARKER = "ran.marker"

# Trains until it is stopped; says so once it is looping.
SLOW = """\
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(8, 3)
step = 0
while True:
    optimizer.zero_grad()
    model(x).pow(2).mean().backward()
    optimizer.step()
    step += 1
    if step == 5:
        print("LOOPING", flush=True)
"""

# Four steps, then the user's code ends the run in the way put in place of END.
FOUR_STEPS = """\
import sys

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(8, 3)
for step in range(4):
    optimizer.zero_grad()
    model(x).pow(2).mean().backward()
    optimizer.step()
END
"""

# A write to a tensor sigmoid saved, then the backward PyTorch refuses (step 2).
BROKEN_BACKWARD = """\
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(3, 3)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(4, 3)
for step in range(3):
    optimizer.zero_grad()
    y = torch.sigmoid(model(x))
    if step == 2:
        y.mul_(2)
    y.sum().backward()
    optimizer.step()
"""


@pytest.fixture(autouse=True)
def _plain_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Runs every test in its own folder, with rich's output not forced to a terminal."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def write(folder: Path, text: str, name: str = "train.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Returns the exit code, the raw output and the output with whitespace collapsed."""
    code = main(list(argv))
    captured = capsys.readouterr()
    raw = captured.out + captured.err
    return code, raw, " ".join(raw.split())


def hooks_gone() -> bool:
    return (
        not torch_optimizer._global_optimizer_pre_hooks
        and not torch_module._global_forward_pre_hooks
        and torch._C._len_torch_function_stack() == 0
    )


def loaded_steps(path: Path) -> int:
    lens = gradlens.load(path)
    assert isinstance(lens, gradlens.Lens)
    return len(lens.steps)


# ---- Ctrl-C and other ways out: the report and the files are still there ---------------------


def interrupt_when_looping(folder: Path, *argv: str) -> tuple[int, str]:
    """Runs ``python -m gradlens run ARGV`` in ``folder``, sends it SIGINT once the script
    prints LOOPING, and returns the exit code and everything printed after that line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gradlens", "run", *argv],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A shell running the tests in the background makes its children ignore SIGINT; a
        # user's terminal does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None
    try:
        seen = []
        for line in process.stdout:
            seen.append(line)
            if line.strip() == "LOOPING":
                break
        else:
            pytest.fail("the script never reported that it loops:\n" + "".join(seen))
        os.kill(process.pid, signal.SIGINT)
        rest = process.stdout.read()
        return process.wait(timeout=120), rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_still_reports_and_writes_the_files(tmp_path: Path) -> None:
    write(tmp_path, SLOW, "slow_train.py")
    code, rest = interrupt_when_looping(tmp_path, "slow_train.py", "--json", "r.json")
    out = " ".join(rest.split())
    assert code == 130, rest
    assert "gradlens report" in out
    assert "interrupted (Ctrl-C): the report and the files hold what was recorded" in out
    assert "the script was interrupted" in out
    assert "wrote r.json" in out
    assert "Traceback" not in out
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["format"] == "gradlens"
    assert loaded_steps(tmp_path / "r.json") >= 5


@pytest.mark.parametrize(
    ("end", "code", "says"),
    [
        ("raise KeyboardInterrupt", 130, "the script was interrupted"),
        ("raise ValueError('the loader broke')", 1, "the script exited with code 1"),
        ("sys.exit(3)", 3, "the script exited with code 3"),
    ],
)
def test_every_way_out_keeps_the_report_and_files(
    end: str, code: int, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, FOUR_STEPS.replace("END", end))
    got, _, out = run_cli(capsys, "run", "train.py", "--json", "r.json", "--plot", "p.png")
    assert got == code, out
    assert "watch report: 4 of 4 steps kept" in out
    assert says in out
    assert loaded_steps(tmp_path / "r.json") == 4
    assert (tmp_path / "p.png").read_bytes().startswith(PNG_MAGIC)
    assert hooks_gone()


def test_a_file_that_cannot_be_written_after_the_run_does_not_stop_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The script removes the folder --plot writes to: found only when the run is over.
    (tmp_path / "plots").mkdir()
    end = "import shutil; shutil.rmtree('plots')"
    write(tmp_path, FOUR_STEPS.replace("END", end))
    code, _, out = run_cli(capsys, "run", "train.py", "--plot", "plots/p.png", "--json", "r.json")
    assert code == 2, out
    assert "error: --plot: cannot write 'plots/p.png': the folder 'plots' does not exist" in out
    assert loaded_steps(tmp_path / "r.json") == 4


# ---- --guard: the finding, then PyTorch's error with the user's line, then the report -------


def test_guard_finding_then_traceback_then_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = write(tmp_path, BROKEN_BACKWARD)
    code, raw, out = run_cli(capsys, "run", str(script), "--guard")
    assert code == 1, out
    finding = out.index("error inplace-saved y train.py:12")
    traceback = out.index("Traceback")
    error = out.index("RuntimeError: one of the variables needed for gradient computation")
    report = out.index("gradlens report")
    assert finding < traceback < error < report
    shown = out[traceback:error]
    assert "y.sum().backward()" in shown and f"{script}:13 in <module>" in shown
    for machinery in ("gradlens/", "runpy", "_on_backward", "frames hidden", "cli.py"):
        assert machinery not in shown, machinery
    # The explanation is printed once, when it was confirmed; the report has the table.
    assert raw.count("y was overwritten by mul_ at train.py:12") == 1
    assert "in-place violations" in out[report:]
    assert "the script exited with code 1" in out


def test_strict_error_shows_the_users_line_not_gradlens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = write(tmp_path, BROKEN_BACKWARD)
    code, _, out = run_cli(capsys, "run", str(script), "--strict")
    assert code == 1, out
    shown = out[out.index("Traceback") : out.index("gradlens report")]
    assert "InplaceError" in shown
    assert f"{script}:13 in <module>" in shown
    assert "gradlens/" not in shown and "runpy" not in shown


def test_a_script_that_silences_warnings_still_gets_its_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    silenced = "import warnings\nwarnings.simplefilter('ignore')\n" + BROKEN_BACKWARD
    write(tmp_path, silenced)
    code, _, out = run_cli(capsys, "run", "train.py", "--guard")
    assert code == 1
    report = out.index("gradlens report")
    assert "y was overwritten by mul_ at train.py:14" in out[report:]


def test_the_scripts_own_warnings_are_shown_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # They reach the handler that was there before (here pytest's), untouched.
    write(tmp_path, "import warnings\nwarnings.warn('the learning rate is odd')\n")
    with pytest.warns(UserWarning, match="the learning rate is odd"):
        code, _, _ = run_cli(capsys, "run", "train.py", "--guard")
    assert code == 0


def test_a_bug_in_gradlens_keeps_every_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An exception raised in gradlens's own code that is not one of its errors is a bug:
    # its frames are evidence and stay in sight.
    write(tmp_path, "from gradlens.capture.summary import summarize\nsummarize(5)\n")
    code, _, out = run_cli(capsys, "run", "train.py")
    assert code == 1
    assert "TypeError: expected a tensor, got int" in out
    assert "summary.py" in out


# ---- output paths checked before the run -----------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "path", "message"),
    [
        ("--json", "afile/r.json", "'afile' is a file, not a folder"),
        ("--plot", "afile/deeper/p.png", "'afile' is a file, not a folder"),
        ("--json", "missing/r.json", "the folder 'missing' does not exist"),
        ("--json", "folder.json", "it is a folder"),
    ],
)
def test_unwritable_outputs_are_refused_before_the_script_runs(
    flag: str, path: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("not a folder", encoding="utf-8")
    (tmp_path / "folder.json").mkdir()
    write(tmp_path, f"open({MARKER!r}, 'w').close()\n")
    code, _, out = run_cli(capsys, "run", "train.py", flag, path)
    assert code == 2, out
    assert out.startswith(f"error: {flag}: cannot write"), out
    assert message in out
    assert not (tmp_path / MARKER).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "folder.json", "train.py"]


def test_unwritable_outputs_are_refused_before_an_example_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("", encoding="utf-8")
    code, _, out = run_cli(capsys, "run", "logistic-1d", "--plot", "afile/p.png")
    assert code == 2
    assert "'afile' is a file, not a folder" in out
    assert "watch report" not in out


# ---- user text is never read as rich markup --------------------------------------------------

MARKUP = ("[bold]", "[/]", "[link=x]")


def test_a_script_path_with_brackets_runs_and_prints_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "runs[").mkdir()
    write(tmp_path, FOUR_STEPS.replace("END", ""), "runs[/]t.py")
    code, _, out = run_cli(capsys, "run", "runs[/]t.py", "--json", "[bold]r.json")
    assert code == 0, out
    assert "gradlens run runs[/]t.py" in out
    assert "wrote [bold]r.json" in out
    assert loaded_steps(tmp_path / "[bold]r.json") == 4


def test_markup_in_messages_names_and_paths_is_printed_as_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = " ".join(MARKUP)
    write(tmp_path, f"raise ValueError({text!r})\n", "[link=x]fail.py")
    code, _, out = run_cli(capsys, "run", "[link=x]fail.py")
    assert code == 1
    assert f"ValueError: {text}" in out
    assert "gradlens run [link=x]fail.py" in out

    write(tmp_path, f"import sys\nsys.exit({text!r})\n", "[bold]exit.py")
    code, _, out = run_cli(capsys, "run", "[bold]exit.py")
    assert code == 1
    assert text in out

    code, _, out = run_cli(capsys, "run", "[/]nope.py")
    assert code == 2
    assert out.startswith("error: no such script: [/]nope.py")

    code, _, out = run_cli(capsys, "run", "[bold]exit.py", "--json", "[/]/r.json")
    assert code == 2
    assert "the folder '[/]' does not exist" in out


def test_markup_in_tensor_and_module_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A module named "[bold]" (ModuleDict keys may be any text without a dot), and a write
    # that breaks backward under --guard: every name is printed as it is.
    script = """\
        import torch
        from torch import nn

        model = nn.ModuleDict({"[bold]": nn.Linear(2, 2), "[/]": nn.Linear(2, 1)})
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        unused = nn.Parameter(torch.zeros(1))
        optimizer.add_param_group({"params": [unused]})
        x = torch.randn(3, 2)
        for step in range(3):
            optimizer.zero_grad()
            h = torch.sigmoid(model["[bold]"](x))
            model["[/]"](h).sum().backward()
            optimizer.step()
        """
    write(tmp_path, script)
    code, _, out = run_cli(capsys, "run", "train.py", "--guard")
    assert code == 0, out
    assert "[bold].weight" in out and "[/].weight" in out  # in the live line and the report
    assert "[/].bias" in out[out.index("gradlens report") :]


# ---- a real training loop, stopped with Ctrl-C ------------------------------------------------

# pytorch/examples dcgan's training loop (the models are the real ones, made small): the
# discriminator on real and detached fake images, then the generator through the updated
# discriminator. It is correct, so nothing may be reported about it.
DCGAN = """\
import sys

import torch
from torch import nn, optim

sys.path.insert(0, {models!r})
from _models import Discriminator, Generator, weights_init

torch.manual_seed(0)
netG, netD = Generator(), Discriminator()
netG.apply(weights_init)
netD.apply(weights_init)
criterion = nn.BCELoss()
optimizerD = optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
optimizerG = optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
real_label, fake_label = 1.0, 0.0
iteration = 0
while True:
    real = torch.randn(6, 1, 8, 8).tanh()
    netD.zero_grad()
    label = torch.full((6,), real_label)
    errD_real = criterion(netD(real), label)
    errD_real.backward()
    noise = torch.randn(6, 4, 1, 1)
    fake = netG(noise)
    label.fill_(fake_label)
    errD_fake = criterion(netD(fake.detach()), label)
    errD_fake.backward()
    optimizerD.step()
    netG.zero_grad()
    label.fill_(real_label)
    errG = criterion(netD(fake), label)
    errG.backward()
    optimizerG.step()
    iteration += 1
    if iteration == 3:
        print("LOOPING", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_on_the_dcgan_loop_under_guard(tmp_path: Path) -> None:
    models = str(Path(__file__).resolve().parent / "real_world")  # _models.py alone
    write(tmp_path, DCGAN.format(models=models), "dcgan.py")
    code, rest = interrupt_when_looping(tmp_path, "dcgan.py", "--guard", "--json", "r.json")
    out = " ".join(rest.split())
    assert code == 130, rest
    assert "no in-place write touched a tensor saved for backward" in out
    assert "Traceback" not in out and "inplace-saved" not in out
    lens = gradlens.load(tmp_path / "r.json")
    assert isinstance(lens, gradlens.Lens)
    # Both optimizers step once per iteration: at least 3 iterations were watched.
    assert lens.record.total_steps >= 6
    layers = sorted(p.name.rpartition("main.")[2] for p in lens.record.params)
    generator = ["0.weight", "1.bias", "1.weight", "3.weight"]
    discriminator = ["0.weight", "2.weight", "3.bias", "3.weight", "5.weight"]
    assert layers == sorted(generator + discriminator)
