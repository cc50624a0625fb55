"""The command line: ``gradlens list`` and ``gradlens run NAME``. The only layer that prints."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from ._errors import GradlensError
from .examples import EXAMPLES, ExampleResult, load_example
from .records.serialize import to_json_dict
from .render.graphviz import render
from .render.terminal import diagnostics_table, event_log, graph_tree, status_table

__all__ = ["example_json", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradlens",
        description="See the autograd graph, the gradients through it, and what breaks it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("list", help="list the worked examples")
    run = sub.add_parser("run", help="run a worked example and show its graph and gradients")
    run.add_argument("name", metavar="NAME", help="an example name (see `gradlens list`)")
    for fmt in ("svg", "png", "pdf", "dot"):
        run.add_argument(f"--{fmt}", metavar="PATH", type=Path, help=f"write the diagram as {fmt}")
    run.add_argument("--json", metavar="PATH", type=Path, help="write the records as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI and returns the exit code (0 ok, 2 for a usage error)."""
    args = _parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough for the tables, no colour codes
        console = Console(width=120)
    try:
        if args.command == "list":
            console.print(_example_table())
            return 0
        if args.command == "run":
            return _run(args, console)
    except GradlensError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    _parser().print_help()
    return 2


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
            f"no example named {args.name!r}; the examples are: {', '.join(EXAMPLES)}"
        )
    outputs = {fmt: getattr(args, fmt) for fmt in ("svg", "png", "pdf", "dot", "json")}
    for fmt, path in outputs.items():
        if path is not None and path.suffix.lower() != f".{fmt}":
            raise GradlensError(f"--{fmt} takes a path ending in .{fmt}, not {str(path)!r}")
        if path is not None and not path.resolve().parent.is_dir():
            raise GradlensError(f"cannot write {path}: the folder {path.parent} does not exist")
    result = load_example(args.name).run()
    _print(result, console)
    for fmt in ("svg", "png", "pdf", "dot"):
        if outputs[fmt] is not None:
            written = render(result.diagram.to_dot(), outputs[fmt])
            console.print(f"wrote {written.path}", highlight=False)
            if written.message:
                console.print(written.message, style="yellow", highlight=False)
    if outputs["json"] is not None:
        text = json.dumps(example_json(result), indent=1, ensure_ascii=False, allow_nan=False)
        outputs["json"].write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote {outputs['json']}", highlight=False)
    return 0


def _print(result: ExampleResult, console: Console) -> None:
    record = result.trace.record
    console.print(Rule(f"[bold]{result.name}[/]: {result.title}"))
    for heading, body in result.sections:
        console.print(f"\n[bold]{heading}[/]", highlight=False)
        console.print(body, highlight=False)
    console.print("\n[bold]Tensors[/]")
    console.print(status_table(record.tensors))
    console.print("\n[bold]Graph[/] (from the output back to the leaves)")
    console.print(graph_tree(result.diagram))
    console.print("\n[bold]Events[/] (forward ops, backward passes, gradients, in order)")
    console.print(event_log(record.events))
    if record.diagnostics:
        console.print("\n[bold]Diagnostics[/]")
        console.print(diagnostics_table(record.diagnostics))


def example_json(result: ExampleResult) -> dict[str, Any]:
    """Returns the ``--json`` document of a finished example."""
    record = result.trace.record
    data = to_json_dict(record)["data"]
    return {
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
        "graph": to_json_dict(result.diagram)["data"],
        "events": data["events"],
        "diagnostics": data["diagnostics"],
        "values": _plain(result.values),
    }


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
