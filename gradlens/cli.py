"""The command line: ``gradlens list``, ``gradlens run NAME`` and ``gradlens run script.py``.

The only layer that prints (besides a watched loop's live view). Everything the user gave
(paths, names, messages) is printed as plain text, never read as rich markup. A script that
raises, exits or is interrupted (Ctrl-C) still gets its report and output files, with what was
recorded until then; its traceback shows the script's frames, not gradlens's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import runpy
import sys
import types
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text
from rich.traceback import Traceback

from ._errors import GradlensError
from ._guard import Guard, InplaceWarning, guard
from ._lens import watch_everything
from .analysis.inplace import explain_violation
from .capture.distributed import all_ranks_asked, current_rank, rank_path
from .examples import EXAMPLES, ExampleResult, load_example
from .records import InplaceViolation
from .records.serialize import to_json_dict
from .render.files import check_writable, write_atomic
from .render.graphviz import find_dot, render
from .render.html import NO_DOT
from .render.terminal import (
    diagnostics_list,
    report_events,
    report_options,
    report_tensors,
    report_tree,
)

__all__ = ["example_json", "main"]


_OUTPUT_FLAGS = ("svg", "png", "pdf", "dot", "html", "json", "plot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradlens",
        description="See the autograd graph, the gradients through it, and what breaks it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("list", help="list the worked examples")
    run = sub.add_parser(
        "run",
        help="run a worked example, or a training script with every optimizer watched",
        description=(
            "Run a worked example (see `gradlens list`) or an unchanged training script "
            "(`gradlens run train.py --lr 0.1 --plot curves.png`). Arguments after the script "
            "go to it, except gradlens's own --svg/--png/--pdf/--dot/--html/--json/--plot; put a "
            "script's own flags of those names after `--`."
        ),
    )
    run.add_argument("name", metavar="NAME", help="an example name, or a path to a .py script")
    for fmt in ("svg", "png", "pdf", "dot"):
        run.add_argument(f"--{fmt}", metavar="PATH", type=Path, help=f"write the diagram as {fmt}")
    run.add_argument(
        "--html", metavar="PATH", type=Path, help="write an interactive page of the diagram"
    )
    run.add_argument("--json", metavar="PATH", type=Path, help="write the records as JSON")
    run.add_argument(
        "--plot", metavar="PATH", type=Path, help="write training plots (.png, .svg or .pdf)"
    )
    run.add_argument(
        "--tensorboard",
        metavar="DIR",
        type=Path,
        help="scripts: also write the watched training to TensorBoard event files in DIR",
    )
    run.add_argument(
        "--guard",
        action="store_const",
        const="warn",
        help="scripts: also check in-place writes against tensors saved for backward",
    )
    run.add_argument(
        "--strict",
        dest="guard",
        action="store_const",
        const="strict",
        help="scripts: like --guard, but stop with an error at the first bad write",
    )
    _add_report_flags(run)
    run.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


# How much of a trace the report shows (render.terminal.ReportOptions). For a script they
# apply to every trace it prints (print(t)) and must come before the script's path: after it,
# they are the script's own arguments (a training script may well have a --depth of its own).
_REPORT_FLAGS = ("depth", "module", "events", "tensors", "levels")


def _add_report_flags(run: argparse.ArgumentParser) -> None:
    report = run.add_argument_group(
        "trace report",
        "How much of a trace is shown: by default a big one (a real model) fits a screen or "
        "two, a small one is shown in full. With a script, put these before its path.",
    )
    report.add_argument(
        "--depth",
        metavar="N|auto|all",
        type=_depth,
        default=argparse.SUPPRESS,
        help="draw modules N deep as one node each; auto (default): modules when the graph "
        "is bigger than a page, repeated blocks folded; all: every op",
    )
    report.add_argument(
        "--module", metavar="PATH", help="only this module's ops (transformer.h.3), --depth in it"
    )
    report.add_argument(
        "--events",
        choices=("auto", "summary", "full"),
        help="the event log: per pass (summary), every event (full), or by its size (auto)",
    )
    report.add_argument(
        "--tensors",
        choices=("auto", "full"),
        help="the tensor table: every tensor (full), or only those worth a look when many",
    )
    report.add_argument(
        "--levels",
        metavar="N|all",
        type=_levels,
        default=argparse.SUPPRESS,
        help="how many levels of the tree are drawn (default: 16 of a whole graph)",
    )


def _depth(text: str) -> int | str | None:
    if text in ("auto", "all"):
        return None if text == "all" else "auto"
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a depth of 1 or more, auto or all, not {text!r}")


def _levels(text: str) -> int | None:
    if text == "all":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a number of levels or all, not {text!r}")


def _report_options(args: argparse.Namespace) -> dict[str, Any]:
    """Returns the report options given on the command line, as report_options() takes them."""
    given: dict[str, Any] = {}
    for flag, option in (("depth", "depth"), ("levels", "max_depth")):
        if hasattr(args, flag):  # absent unless given: None is a value here ("all")
            given[option] = getattr(args, flag)
    for flag in ("module", "events", "tensors"):
        if getattr(args, flag, None) is not None:
            given[flag] = getattr(args, flag)
    return given


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI and returns the exit code (0 ok, 1 if a script failed, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first `--` that follows NAME belongs to the script. argparse's
    # REMAINDER would drop a `--` right after NAME, so split it off here.
    tail: list[str] = []
    if "--" in argv and "run" in argv and argv.index("run") < argv.index("--") - 1:
        at = argv.index("--")
        argv, tail = argv[:at], argv[at + 1 :]
    args = _parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for the tables, no colour codes
        console = Console(width=120)
    try:
        if args.command == "list":
            console.print(_example_table())
            return 0
        if args.command == "run":
            _take_own_flags(args)
            args.args += tail
            with report_options(**_report_options(args)):
                if _is_script(args.name):
                    return _run_script(args, console)
                return _run(args, console)
    except GradlensError as e:
        _error(console, str(e))
        return 2
    except KeyboardInterrupt:
        console.print(Text("interrupted (Ctrl-C)", style="bold red"))
        return 130
    _parser().print_help()
    return 2


def _error(console: Console, message: str) -> None:
    """Prints ``error: message``, the message as plain text (it may hold any path or name)."""
    console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)


def _say(console: Console, message: str, style: str = "") -> None:
    """Prints ``message`` as plain text: a path such as ``runs[/]x.py`` is printed as it is."""
    console.print(Text(message, style=style), highlight=False)


def _take_own_flags(args: argparse.Namespace) -> None:
    """Moves gradlens's output flags found after NAME (and before any `--`) out of args.args."""
    rest: list[str] = []
    items = list(args.args)
    while items:
        item = items.pop(0)
        if item == "--":
            rest += items
            break
        flag = item[2:].split("=", 1)[0] if item.startswith("--") else None
        if item in ("--guard", "--strict"):
            args.guard = "strict" if item == "--strict" or args.guard == "strict" else "warn"
        elif flag in _REPORT_FLAGS and not _is_script(args.name):
            value = _flag_value(item, items, flag)
            try:
                setattr(args, flag, _REPORT_TYPES[flag](value))
            except argparse.ArgumentTypeError as e:
                raise GradlensError(f"--{flag}: {e}") from None
        elif flag in _OUTPUT_FLAGS or flag == "tensorboard":
            setattr(args, flag, Path(_flag_value(item, items, flag)))
        else:
            rest.append(item)
    args.args = rest


def _flag_value(item: str, items: list[str], flag: str) -> str:
    """Returns the value of ``--flag=VALUE`` or of ``--flag VALUE`` (taken from items)."""
    if "=" in item:
        return item.split("=", 1)[1]
    if items:
        return items.pop(0)
    what = "PATH" if flag in _OUTPUT_FLAGS else "DIR" if flag == "tensorboard" else "value"
    raise GradlensError(f"--{flag} needs a {what}")


def _is_script(name: str) -> bool:
    return name.endswith(".py") or Path(name).is_file()


def _choice(*choices: str) -> Any:
    def check(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, not {text!r}")
        return text

    return check


_REPORT_TYPES: dict[str, Any] = {
    "depth": _depth,
    "module": str,
    "events": _choice("auto", "summary", "full"),
    "tensors": _choice("auto", "full"),
    "levels": _levels,
}


def _check_outputs(
    args: argparse.Namespace, allowed: Sequence[str], *, what: str
) -> dict[str, Path | None]:
    """Returns the output paths, refusing bad suffixes and missing folders before running."""
    outputs: dict[str, Path | None] = {flag: getattr(args, flag) for flag in _OUTPUT_FLAGS}
    for flag, path in outputs.items():
        if path is None:
            continue
        if flag not in allowed:
            use = ", ".join(f"--{a}" for a in allowed)
            raise GradlensError(f"--{flag} is not available for {what}; use {use}")
        suffixes = (".png", ".svg", ".pdf") if flag == "plot" else (f".{flag}",)
        if path.suffix.lower() not in suffixes:
            raise GradlensError(
                f"--{flag} takes a path ending in {' or '.join(suffixes)}, not {str(path)!r}"
            )
        try:  # before the run: finding out after an hour of training is too late
            check_writable(path)
        except GradlensError as e:
            raise GradlensError(f"--{flag}: {e}") from None
    return outputs


def _example_table() -> Table:
    table = Table(title="gradlens worked examples: run one with `gradlens run NAME`")
    table.add_column("NAME", style="bold")
    table.add_column("what it shows")
    for name in EXAMPLES:
        table.add_row(Text(name), Text(load_example(name).TITLE))
    return table


def _run(args: argparse.Namespace, console: Console) -> int:
    if args.name not in EXAMPLES:
        raise GradlensError(
            f"no example named {args.name!r}; the examples are: {', '.join(EXAMPLES)} "
            "(or give the path of a .py training script)"
        )
    if args.args:
        raise GradlensError(
            f"example {args.name!r} takes no arguments, got {' '.join(args.args)!r}"
        )
    if args.tensorboard is not None:
        raise GradlensError("--tensorboard is for training scripts, not the worked examples")
    module = load_example(args.name)
    training = bool(getattr(module, "TRAINING", False))
    outputs = _check_outputs(
        args,
        ("json", "plot") if training else ("svg", "png", "pdf", "dot", "html", "json"),
        what=f"example {args.name!r}: it is a training run and draws plots, not a graph"
        if training
        else f"example {args.name!r}: it draws a graph, not plots",
    )
    if outputs["html"] is not None and find_dot() is None:  # before the run, as for a bad path
        raise GradlensError(f"--html: {NO_DOT}")
    with warnings.catch_warnings():
        # The in-place examples show each violation in their own sections; the warning the
        # guard issues on the way would print it a second time, raw, before the example.
        warnings.simplefilter("ignore", InplaceWarning)
        result = module.run()
    _print(result, console)
    diagram = result.diagram
    for fmt in ("svg", "png", "pdf", "dot", "html"):
        path = outputs[fmt]
        if path is None:
            continue
        if diagram is None:
            raise GradlensError(f"example {args.name!r} draws no graph; use --plot for its plots")
        if fmt == "html":  # the interactive page: the record itself, not only its DOT text
            written = diagram.render(path)
        else:
            written = render(diagram.to_dot(), path, warn=False)  # the message is printed here
        _say(console, f"wrote {written.path}")
        if written.message:
            _say(console, written.message, "yellow")
    if outputs["plot"] is not None:
        for path in _write_plots(result, outputs["plot"]):
            _say(console, f"wrote {path}")
    if outputs["json"] is not None:
        _write_json(example_json(result), outputs["json"])
        _say(console, f"wrote {outputs['json']}")
    return 0


def _write_plots(result: ExampleResult, path: Path) -> list[Path]:
    """Writes the training plot to ``path`` and each extra figure to ``path``-NAME.suffix;
    returns the paths as given."""
    from .render.plots import save_figure

    written = []
    if result.lens is not None:
        result.lens.plot(path)
        written.append(path)
    for name, figure in result.figures.items():
        extra = path.with_name(f"{path.stem}-{name}{path.suffix}")
        save_figure(figure, extra)
        written.append(extra)
    return written


def _write_json(data: dict[str, Any], path: Path) -> None:
    text = json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False)
    write_atomic(path, text + "\n")


def _run_script(args: argparse.Namespace, console: Console) -> int:
    """Runs a user's script unchanged with every optimizer watched; prints the report.

    Whatever way the script ends (finishing, ``sys.exit``, an exception, Ctrl-C), the report
    is printed and the output files are written with what was recorded. The exit code is the
    script's: 0, its ``sys.exit`` code, 1 for an exception, 130 for Ctrl-C.
    """
    script = Path(args.name)
    if not script.is_file():
        raise GradlensError(f"no such script: {script} (and no example named {args.name!r})")
    outputs = _check_outputs(
        args,
        ("json", "plot"),
        what="a script: gradlens watches its training and draws plots, not a graph",
    )
    if args.tensorboard is not None and all_ranks_asked():  # DIR, DIR.rank1, ...
        args.tensorboard = Path(rank_path(args.tensorboard, current_rank()))
    sinks = _tensorboard(args.tensorboard)
    lens = watch_everything(console, sinks=sinks)
    checker = guard(mode=args.guard) if args.guard else None
    findings = _LiveFindings(console)
    code = 0
    failure: BaseException | None = None
    interrupted = False
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), *args.args]
    sys.path.insert(0, str(script.resolve().parent))
    if not lens.silent:  # torchrun: rank 0 only, unless GRADLENS_ALL_RANKS=1
        console.print(Rule(Text.assemble(("gradlens run", "bold"), " ", _ranked(script))))
    try:
        with lens, checker if checker is not None else contextlib.nullcontext(), findings:
            try:
                runpy.run_path(str(script.resolve()), run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    _say(console, str(e.code), "bold red")
            except KeyboardInterrupt:
                code, interrupted = 130, True
            except Exception as e:
                code, failure = 1, e
    except KeyboardInterrupt:  # a second Ctrl-C while the hooks were being removed
        code, interrupted = 130, True
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    if failure is not None:  # on every rank: the one that failed is the one to read
        console.print(_user_traceback(failure, width=console.width))
    del failure  # its frames hold the script's tensors
    if lens.silent:
        return code
    console.print(Rule(Text("gradlens report", style="bold")))
    if interrupted:
        _say(
            console,
            "interrupted (Ctrl-C): the report and the files hold what was recorded until then",
            "bold yellow",
        )
    # With nothing watched, the report itself says so and why (watch_view.NOTHING_WATCHED).
    lens.report(console)
    if checker is not None:
        _report_guard(checker, findings.shown, console)
    if sinks and not any("TensorBoard" in n for n in lens.record.notes):
        _say(console, f"wrote TensorBoard events to {args.tensorboard} (tensorboard --logdir)")
    if code != 0:
        what = "was interrupted" if interrupted else f"exited with code {code}"
        _say(console, f"the script {what}", "bold red")
    if all_ranks_asked():  # every rank writes its own files: out.json, out.rank1.json, ...
        rank = current_rank()
        outputs = {k: None if v is None else Path(rank_path(v, rank)) for k, v in outputs.items()}
    return _write_outputs(lens, outputs, code, console)


def _ranked(script: Path) -> str:
    """Returns the script's name, with the rank when every rank prints (GRADLENS_ALL_RANKS)."""
    if all_ranks_asked() and "RANK" in os.environ:
        return f"{script} (rank {current_rank()})"
    return str(script)


def _tensorboard(folder: Path | None) -> list[Any]:
    """Returns the ``--tensorboard DIR`` sink (none without the flag), checked before the run."""
    if folder is None:
        return []
    if folder.exists() and not folder.is_dir():
        raise GradlensError(f"--tensorboard {folder}: that is a file, not a folder")
    from .sinks import TensorBoard

    return [TensorBoard(folder)]


def _write_outputs(lens: Any, outputs: dict[str, Path | None], code: int, console: Console) -> int:
    """Writes --json, then --plot; a file that cannot be written is reported and the other is
    still written. Returns ``code``, or 2 when the script succeeded but a file failed."""
    failed = False
    for flag in ("json", "plot"):  # the data first: it is what a failed plot cannot replace
        path = outputs[flag]
        if path is None:
            continue
        try:
            if flag == "plot":
                lens.plot(path)
            else:
                _write_json(to_json_dict(lens.record), path)  # gradlens.load reads it
        except GradlensError as e:
            _error(console, f"--{flag}: {e}")
            failed = True
            continue
        _say(console, f"wrote {path}")
    return 2 if failed and code == 0 else code


def _report_guard(checker: Guard, shown: list[InplaceViolation], console: Console) -> None:
    """Prints the table of in-place violations, and the full explanation of each one that was
    not already printed when it was confirmed (a script may silence warnings)."""
    console.print(checker)
    unseen = [v for v in checker.violations if not any(v == s for s in shown)]
    if unseen:
        console.print(diagnostics_list([explain_violation(v) for v in unseen]))


class _LiveFindings:
    """Prints each in-place violation the guard confirms, at the moment it does (the guard
    issues it as a warning whose ``.violation`` is the record, just before the backward that
    PyTorch will refuse); other warnings go to the handler that was there before.

    Installs its own ``warnings.showwarning`` and an "always" filter for the guard's warning
    class inside ``warnings.catch_warnings()``, which puts both back when the block ends.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self.shown: list[InplaceViolation] = []
        self._catcher: warnings.catch_warnings[None] | None = None
        self._previous: Any = None

    def __enter__(self) -> _LiveFindings:
        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        warnings.simplefilter("always", InplaceWarning)  # every one, also under -W error
        self._previous = warnings.showwarning
        warnings.showwarning = self._show
        return self

    def __exit__(self, *exc: Any) -> None:
        catcher, self._catcher = self._catcher, None
        if catcher is not None:
            catcher.__exit__(*exc)

    def _show(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        violation = getattr(message, "violation", None)
        if not isinstance(violation, InplaceViolation):
            self._previous(message, category, filename, lineno, file, line)
            return
        if any(violation == s for s in self.shown):
            return
        self.shown.append(violation)
        self._console.print(diagnostics_list([explain_violation(violation)]))


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_RUNPY = {os.path.abspath(runpy.__file__), "<frozen runpy>"}


def _is_machinery(filename: str) -> bool:
    """Returns whether a frame's file is gradlens's own or runpy's (how the script was run)."""
    return filename in _RUNPY or os.path.abspath(filename).startswith(_PACKAGE)


def _is_dispatch(tb: types.TracebackType) -> bool:
    """Returns whether a frame is PyTorch handing a call to a torch-function mode."""
    code = tb.tb_frame.f_code
    return code.co_name == "handle_torch_function" and code.co_filename.endswith("overrides.py")


def _user_traceback(error: BaseException, *, width: int) -> RenderableType:
    """Returns ``error``'s traceback with the frames of gradlens and runpy left out, so that the
    script's frames (and PyTorch's, compacted) are what the user sees.

    An error that gradlens itself raised in its own code and did not mean to (not a
    GradlensError or InplaceError) keeps every frame: that is a gradlens bug to report.
    """
    seen: set[int] = set()
    chained: BaseException | None = error
    while chained is not None and id(chained) not in seen:
        seen.add(id(chained))
        chained.__traceback__ = _without_machinery(chained)
        chained = chained.__cause__ or (
            None if chained.__suppress_context__ else chained.__context__
        )
    import torch

    return Traceback.from_exception(
        type(error), error, error.__traceback__, width=width, suppress=[torch]
    )


def _without_machinery(error: BaseException) -> types.TracebackType | None:
    tb = error.__traceback__
    frames: list[types.TracebackType] = []
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    if not frames:
        return None
    ours = type(error).__module__.split(".")[0] == "gradlens"
    if _is_machinery(frames[-1].tb_frame.f_code.co_filename) and not ours:
        return error.__traceback__  # raised by gradlens's own code by mistake: show it all
    kept: list[types.TracebackType] = []
    for f in frames:
        if not _is_machinery(f.tb_frame.f_code.co_filename):
            kept.append(f)
        elif kept and _is_dispatch(kept[-1]):
            # PyTorch handed this call to gradlens's mode, which called the function again:
            # without gradlens the traceback has that function once, so drop the hand-over.
            kept.pop()
            if kept and "torch" in Path(kept[-1].tb_frame.f_code.co_filename).parts:
                kept.pop()
    if not kept:
        return error.__traceback__
    rebuilt: types.TracebackType | None = None
    for f in reversed(kept):
        rebuilt = types.TracebackType(rebuilt, f.tb_frame, f.tb_lasti, f.tb_lineno)
    return rebuilt


def _print(result: ExampleResult, console: Console) -> None:
    console.print(Rule(Text.assemble((result.name, "bold"), ": ", result.title)))
    for heading, body in result.sections:
        console.print(Text.assemble("\n", (heading, "bold")), highlight=False)
        console.print(Text(body) if isinstance(body, str) else body, highlight=False)
    if result.lens is not None:
        console.print("\n[bold]Training[/] (gradlens.watch)")
        result.lens.report(console)
    if result.trace is None:
        return
    record = result.trace.record
    console.print("\n[bold]Tensors[/]")
    console.print(report_tensors(record.tensors))
    if result.diagram is not None:
        console.print("\n[bold]Graph[/] (from the output back to the leaves)")
        console.print(report_tree(result.diagram))
    console.print("\n[bold]Events[/] (forward ops, backward passes, gradients, in order)")
    console.print(report_events(record.events, record.graph))
    if record.diagnostics:
        console.print("\n[bold]Diagnostics[/]")
        console.print(diagnostics_list(record.diagnostics))


def example_json(result: ExampleResult) -> dict[str, Any]:
    """Returns the ``--json`` document of a finished example."""
    if result.trace is None:
        assert result.lens is not None
        return {
            "example": result.name,
            "watch": to_json_dict(result.lens.record)["data"],
            "values": _plain(result.values),
        }
    record = result.trace.record
    data = to_json_dict(record)["data"]
    diagram = result.diagram
    assert diagram is not None
    out = {
        "example": result.name,
        "tensors": {
            name: {
                "is_leaf": s.is_leaf,
                "requires_grad": s.requires_grad,
                "grad_fn": s.grad_fn,
                "grad": None if s.grad is None else s.grad.values,
            }
            for name, s in record.tensors.items()
        },
        "graph": to_json_dict(diagram)["data"],
        "events": data["events"],
        "diagnostics": data["diagnostics"],
        "values": _plain(result.values),
    }
    if result.lens is not None:
        out["watch"] = to_json_dict(result.lens.record)["data"]
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
