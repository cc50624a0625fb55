"""The command line: ``gradlens list``, ``gradlens run NAME`` and ``gradlens run script.py``.

The only layer that prints (besides a watched loop's live view).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from ._errors import GradlensError
from ._guard import guard
from ._lens import watch_everything
from .examples import EXAMPLES, ExampleResult, load_example
from .records.serialize import to_json_dict
from .render.graphviz import render
from .render.terminal import diagnostics_list, event_log, graph_tree, status_table

__all__ = ["example_json", "main"]


_OUTPUT_FLAGS = ("svg", "png", "pdf", "dot", "json", "plot")


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
            "go to it, except gradlens's own --svg/--png/--pdf/--dot/--json/--plot; put a "
            "script's own flags of those names after `--`."
        ),
    )
    run.add_argument("name", metavar="NAME", help="an example name, or a path to a .py script")
    for fmt in ("svg", "png", "pdf", "dot"):
        run.add_argument(f"--{fmt}", metavar="PATH", type=Path, help=f"write the diagram as {fmt}")
    run.add_argument("--json", metavar="PATH", type=Path, help="write the records as JSON")
    run.add_argument(
        "--plot", metavar="PATH", type=Path, help="write training plots (.png, .svg or .pdf)"
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
    run.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


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
            if args.name.endswith(".py") or Path(args.name).is_file():
                return _run_script(args, console)
            return _run(args, console)
    except GradlensError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    _parser().print_help()
    return 2


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
        elif flag in _OUTPUT_FLAGS:
            if "=" in item:
                value = item.split("=", 1)[1]
            elif items:
                value = items.pop(0)
            else:
                raise GradlensError(f"--{flag} needs a PATH")
            setattr(args, flag, Path(value))
        else:
            rest.append(item)
    args.args = rest


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
        if not path.resolve().parent.is_dir():
            raise GradlensError(f"cannot write {path}: the folder {path.parent} does not exist")
    return outputs


def _example_table() -> Table:
    table = Table(title="gradlens worked examples: run one with `gradlens run NAME`")
    table.add_column("NAME", style="bold")
    table.add_column("what it shows")
    for name in EXAMPLES:
        table.add_row(name, load_example(name).TITLE)
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
    module = load_example(args.name)
    training = bool(getattr(module, "TRAINING", False))
    outputs = _check_outputs(
        args,
        ("json", "plot") if training else ("svg", "png", "pdf", "dot", "json"),
        what=f"example {args.name!r}: it is a training run and draws plots, not a graph"
        if training
        else f"example {args.name!r}: it draws a graph, not plots",
    )
    result = module.run()
    _print(result, console)
    diagram = result.diagram
    for fmt in ("svg", "png", "pdf", "dot"):
        path = outputs[fmt]
        if path is None:
            continue
        if diagram is None:
            raise GradlensError(f"example {args.name!r} draws no graph; use --plot for its plots")
        written = render(diagram.to_dot(), path)
        console.print(f"wrote {written.path}", highlight=False)
        if written.message:
            console.print(written.message, style="yellow", highlight=False)
    if outputs["plot"] is not None:
        for path in _write_plots(result, outputs["plot"]):
            console.print(f"wrote {path}", highlight=False)
    if outputs["json"] is not None:
        _write_json(example_json(result), outputs["json"])
        console.print(f"wrote {outputs['json']}", highlight=False)
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
    path.write_text(text + "\n", encoding="utf-8")


def _run_script(args: argparse.Namespace, console: Console) -> int:
    """Runs a user's script unchanged with every optimizer watched; prints the report."""
    script = Path(args.name)
    if not script.is_file():
        raise GradlensError(f"no such script: {script} (and no example named {args.name!r})")
    outputs = _check_outputs(
        args,
        ("json", "plot"),
        what="a script: gradlens watches its training and draws plots, not a graph",
    )
    lens = watch_everything(console)
    checker = guard(mode=args.guard) if args.guard else None
    code = 0
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), *args.args]
    sys.path.insert(0, str(script.resolve().parent))
    console.print(Rule(f"[bold]gradlens run[/] {script}"), highlight=False)
    try:
        with lens, checker if checker is not None else contextlib.nullcontext():
            try:
                runpy.run_path(str(script.resolve()), run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    console.print(str(e.code), style="bold red", highlight=False)
            except Exception:
                code = 1
                console.print_exception(max_frames=8, suppress=[runpy, sys.modules[__name__]])
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    console.print(Rule("[bold]gradlens report[/]"))
    if lens.record.total_steps == 0:
        console.print(
            "no optimizer stepped while the script ran, so there was nothing to watch "
            "(gradlens watches optimizer.step() calls)",
            style="yellow",
            highlight=False,
        )
    lens.report(console)
    if checker is not None:
        console.print(checker)
        for d in checker.diagnostics:
            console.print(f"{d.kind}: {d.message}\nfix: {d.fix}", highlight=False)
    if code != 0:
        console.print(f"the script exited with code {code}", style="bold red", highlight=False)
    if outputs["plot"] is not None:
        lens.plot(outputs["plot"])
        console.print(f"wrote {outputs['plot']}", highlight=False)
    if outputs["json"] is not None:
        _write_json(to_json_dict(lens.record), outputs["json"])  # gradlens.load reads it
        console.print(f"wrote {outputs['json']}", highlight=False)
    return code


def _print(result: ExampleResult, console: Console) -> None:
    console.print(Rule(f"[bold]{result.name}[/]: {result.title}"))
    for heading, body in result.sections:
        console.print(f"\n[bold]{heading}[/]", highlight=False)
        console.print(body, highlight=False)
    if result.lens is not None:
        console.print("\n[bold]Training[/] (gradlens.watch)")
        result.lens.report(console)
    if result.trace is None:
        return
    record = result.trace.record
    console.print("\n[bold]Tensors[/]")
    console.print(status_table(record.tensors))
    if result.diagram is not None:
        console.print("\n[bold]Graph[/] (from the output back to the leaves)")
        console.print(graph_tree(result.diagram))
    console.print("\n[bold]Events[/] (forward ops, backward passes, gradients, in order)")
    console.print(event_log(record.events))
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
