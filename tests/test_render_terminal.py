"""Tests of gradlens.render.terminal: exact text at a fixed width, and golden tables."""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import pytest
from rich.console import Console, RenderableType

from gradlens.analysis.views import view
from gradlens.records import (
    BackwardEvent,
    Diagnostic,
    EdgeKind,
    ErrorEvent,
    Event,
    GradEvent,
    Graph,
    GraphEdge,
    GraphNode,
    NodeKind,
    OpEvent,
    Severity,
    TensorStatus,
    TraceRecord,
    ValueSummary,
)
from gradlens.records.serialize import from_json_dict, to_json_dict
from gradlens.render.terminal import (
    diagnostics_list,
    diagnostics_table,
    event_log,
    event_summary,
    format_diagnostics,
    format_event_log,
    format_graph_tree,
    format_status,
    format_trace_report,
    graph_tree,
    report_options,
    status_table,
    to_text,
)


def _value(*values: float) -> ValueSummary:
    return ValueSummary(shape=(len(values),), dtype="float32", values=list(values))


def _in_colour(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=100, color_system="standard", force_terminal=True)
    console.print(renderable)
    output = console.file
    assert isinstance(output, io.StringIO)
    return output.getvalue()


def chain_graph(n: int) -> Graph:
    """y <- Op0 <- Op1 <- ... <- Op{n-1} <- x: a chain n ops deep."""
    nodes = [GraphNode("y", NodeKind.OUTPUT, "y", shape=(1,))]
    nodes += [GraphNode(f"n{i}", NodeKind.OP, f"Op{i}") for i in range(n)]
    nodes.append(GraphNode("x", NodeKind.LEAF, "x", shape=(1,)))
    ids = [n.id for n in nodes]
    edges = [GraphEdge(src, dst) for dst, src in itertools.pairwise(ids)]
    return Graph(tuple(nodes), tuple(edges))


# ---------------------------------------------------------------------------------------------
# golden files


def test_status_table_matches_golden(statuses: dict[str, TensorStatus], golden) -> None:
    golden("classic_status.txt", format_status(statuses, width=100))


def test_graph_tree_matches_golden(graph: Graph, golden) -> None:
    golden("classic_tree.txt", format_graph_tree(graph, width=100))


def test_event_log_matches_golden(events: tuple[Event, ...], golden) -> None:
    golden("classic_events.txt", format_event_log(events, width=100))


# ---------------------------------------------------------------------------------------------
# to_text


def test_to_text_is_plain_and_fixed_width(statuses: dict[str, TensorStatus]) -> None:
    text = to_text(status_table(statuses), width=100)
    assert "\x1b" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert all(line == line.rstrip() for line in text.splitlines())
    assert to_text(status_table(statuses), width=140) != text


def test_user_text_is_never_markup() -> None:
    status = TensorStatus(
        name="[red]x[/red] :smile:",
        is_leaf=True,
        requires_grad=False,
        grad_fn=None,
        retains_grad=False,
        grad=None,
        version=0,
        shape=(2,),
        dtype="torch.float32",
        device="cpu",
    )
    assert "[red]x[/red] :smile:" in format_status([status], width=120)
    graph = Graph((GraphNode("n0", NodeKind.OUTPUT, "[bold]y", shape=(1,)),), ())
    assert "[bold]y  output [1]" in format_graph_tree(graph)


# ---------------------------------------------------------------------------------------------
# status table


def test_status_table_takes_a_mapping_or_statuses(statuses: dict[str, TensorStatus]) -> None:
    assert format_status(statuses) == format_status(statuses.values())
    assert to_text(status_table(list(statuses.values()))) == format_status(statuses)


def test_status_table_explains_a_missing_grad(statuses: dict[str, TensorStatus]) -> None:
    text = format_status(statuses, width=200)
    row = {line.split()[0]: line for line in text.splitlines()[4:] if line.strip()}
    assert row["w"].split() == ["w", "[1]", "float32", "yes", "yes", "—", "no", "0", "[5.]"]
    assert "non-leaf: call .retain_grad() to keep it" in row["a"]
    # A constant never gets a gradient; that is no surprise, so no note.
    assert row["c"].split() == ["c", "[]", "float32", "yes", "no", "—", "no", "0", "None"]


# ---------------------------------------------------------------------------------------------
# graph tree


def test_graph_tree_shows_shared_nodes_once(graph: Graph) -> None:
    text = format_graph_tree(graph)
    assert text.count("w  leaf [1]  .grad = [5.]") == 1
    assert text.count("w  (see above)") == 1


def test_graph_tree_several_passes_and_freed() -> None:
    graph = Graph(
        (
            GraphNode("n0", NodeKind.OP, "MulBackward0", op="mul", grads=(_value(1.0), None)),
            GraphNode("n1", NodeKind.SAVED, "a", shape=(1,), saved_as="self", freed=True),
            GraphNode("n2", NodeKind.INPUT, "data", shape=(1,)),
        ),
        (GraphEdge("n1", "n0", EdgeKind.SAVED), GraphEdge("n2", "n0")),
    )
    assert format_graph_tree(graph) == (
        "autograd graph: 3 nodes\n"
        "└── MulBackward0  mul  grad#1 ← [1.]  grad#2 ← None\n"
        "    ├── saved self [1] (freed)\n"
        "    └── data  input [1]\n"
    )


def test_graph_tree_caps_the_depth() -> None:
    # A chain deeper than the cap is drawn compactly: one input under the other, not indented.
    assert format_graph_tree(chain_graph(10), max_depth=3) == (
        "autograd graph: 12 nodes\n"
        "└── y  output [1]\n"
        "    ↑ Op0\n"
        "    ↑ Op1\n"
        "    ↑ Op2\n"
        "    ↑ … 8 more levels (max_depth=None shows them all)\n"
    )
    assert format_graph_tree(chain_graph(10), max_depth=3, compact=False) == (
        "autograd graph: 12 nodes\n"
        "└── y  output [1]\n"
        "    └── Op0\n"
        "        └── Op1\n"
        "            └── Op2\n"
        "                └── … 8 more levels (max_depth=None shows them all)\n"
    )
    assert "… 1 more level (" in format_graph_tree(chain_graph(3), max_depth=3)
    assert "more level" not in format_graph_tree(chain_graph(3), max_depth=4)
    # A shallow small graph keeps the nested tree.
    assert "└── Op0\n" in format_graph_tree(chain_graph(3))


def test_a_5000_deep_chain_renders() -> None:
    graph = chain_graph(5000)
    text = format_graph_tree(graph)
    assert "    ↑ Op15\n    ↑ … 4985 more levels (max_depth=None shows them all)\n" in text
    assert len(text.splitlines()) == 2 + 16 + 1
    text = to_text(graph_tree(graph, max_depth=200), width=100)
    assert "↑ Op199\n" in text and "… 4801 more levels" in text
    text = to_text(graph_tree(graph, max_depth=None), width=100)
    assert text.splitlines()[-1] == "    ↑ x  leaf [1]" and "more level" not in text
    assert len(text.splitlines()) == 5003


def same_op_chain(n: int, every: int = 0) -> Graph:
    """y <- Sum <- Mul x n <- w, with a Sin in place of every ``every``-th Mul; each Mul saves
    ``other``."""
    nodes = [GraphNode("y", NodeKind.OUTPUT, "y", shape=()), GraphNode("s", NodeKind.OP, "Sum")]
    edges = [GraphEdge("s", "y")]
    for i in range(n):
        sin = every and i % every == every - 1
        nodes.append(
            GraphNode(
                f"m{i}",
                NodeKind.OP,
                "SinBackward0" if sin else "MulBackward0",
                op="sin" if sin else "mul",
                grads=(_value(float(i)),),
                source="chain.py:3",
            )
        )
        nodes.append(GraphNode(f"k{i}", NodeKind.SAVED, "c", shape=(), saved_as="other"))
        edges += [
            GraphEdge(f"m{i}", "s" if i == 0 else f"m{i - 1}"),
            GraphEdge(f"k{i}", f"m{i}", EdgeKind.SAVED),
        ]
    nodes.append(GraphNode("w", NodeKind.LEAF, "w", shape=(1,)))
    edges.append(GraphEdge("w", f"m{n - 1}"))
    return Graph(tuple(nodes), tuple(edges))


def test_runs_of_the_same_op_fold_into_one_line() -> None:
    assert format_graph_tree(same_op_chain(10_000)) == (
        "autograd graph: 20003 nodes\n"
        "└── y  output []\n"
        "    ↑ Sum\n"
        "    ↑ MulBackward0  mul  ×10000  grad ← [0.] … [9999.]  chain.py:3\n"
        "        saved other [] (each of the 10000)\n"
        "    ↑ w  leaf [1]\n"
    )
    text = format_graph_tree(same_op_chain(40, every=10), max_depth=5)
    assert text.splitlines()[2:] == [
        "    ↑ Sum",
        "    ↑ MulBackward0  mul  ×9  grad ← [0.] … [8.]  chain.py:3",
        "        saved other [] (each of the 9)",
        "    ↑ SinBackward0  sin  grad ← [9.]  chain.py:3",
        "        saved other []",
        "    ↑ MulBackward0  mul  ×9  grad ← [10.] … [18.]  chain.py:3",
        "        saved other [] (each of the 9)",
        "    ↑ SinBackward0  sin  grad ← [19.]  chain.py:3",
        "        saved other []",
        "    ↑ … 21 more levels (max_depth=None shows them all)",
    ]
    # Two alike ops in a row stay two lines: a fold must be worth it.
    assert "×" not in format_graph_tree(same_op_chain(6, every=3))


def test_a_very_wide_graph_renders() -> None:
    leaves = tuple(GraphNode(f"l{i}", NodeKind.LEAF, f"p{i}", shape=(1,)) for i in range(2000))
    op = GraphNode("op", NodeKind.OP, "StackBackward0")
    graph = Graph((op, *leaves), tuple(GraphEdge(leaf.id, "op") for leaf in leaves))
    text = format_graph_tree(graph)
    assert text.splitlines()[-1] == "    └── p1999  leaf [1]"


# ---------------------------------------------------------------------------------------------
# event log


def test_event_log_rows(events: tuple[Event, ...]) -> None:
    text = format_event_log(events, width=200)
    assert "backward pass 1 (retain_graph)" in text
    assert "a v0 → a v1 (in-place)" in text
    assert "[3.] → .grad = [5.]" in text


def test_errors_are_red(events: tuple[Event, ...]) -> None:
    coloured = _in_colour(event_log([e for e in events if isinstance(e, ErrorEvent)]))
    assert "31ma leaf Variable" in coloured  # red (and bold, like the column)


def test_autograd_grad_calls() -> None:
    event = BackwardEvent(
        0,
        "grad",
        2,
        ("y",),
        gradient=(_value(2.0),),
        inputs=("x",),
        results=(_value(4.0),),
        create_graph=True,
        retain_graph=True,
    )
    text = format_event_log([event], width=200)
    assert "autograd.grad pass 3 (retain_graph, create_graph)" in text
    assert "y → d/d x" in text and "gradient=[2.] → [4.]" in text


def test_event_log_keeps_order_and_misc_kinds() -> None:
    events = [
        OpEvent(0, "linear", (), (), module="encoder.layer1"),
        GradEvent(1, 0, "n0", "AddmmBackward0", (None, _value(1.0))),
    ]
    rows = [line for line in format_event_log(events).splitlines() if "│" in line]
    assert rows[0].split("│")[3].strip() == "linear in encoder.layer1"
    assert rows[0].split("│")[4].strip() == "— → —"
    assert rows[1].split("│")[5].strip() == "None, [1.]"


# ---------------------------------------------------------------------------------------------
# diagnostics


def test_diagnostics_table() -> None:
    findings = [
        Diagnostic(
            "backward-twice",
            "backward() ran twice through the same graph",
            Severity.ERROR,
            name="y",
            source="train.py:12",
            fix="pass retain_graph=True to the first call",
        ),
        Diagnostic("grad-accumulation", "w.grad was not zeroed", Severity.WARNING),
        Diagnostic("info", "all good", Severity.INFO),
    ]
    text = format_diagnostics(findings, width=200)
    assert text == to_text(diagnostics_table(findings), width=200)
    header = next(line for line in text.splitlines() if "┃" in line)
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        "kind",
        "severity",
        "name",
        "message",
        "fix",
        "source",
    ]
    lines = [line for line in text.splitlines() if "│" in line]
    assert [c.strip() for c in lines[0].split("│")[1:-1]] == [
        "backward-twice",
        "error",
        "y",
        "backward() ran twice through the same graph",
        "pass retain_graph=True to the first call",
        "train.py:12",
    ]
    assert "\x1b[1;31merror" in _in_colour(diagnostics_table(findings))


# ---------------------------------------------------------------------------------------------
# trace report


def test_trace_report(
    graph: Graph, statuses: dict[str, TensorStatus], events: tuple[Event, ...]
) -> None:
    findings = (Diagnostic("backward-twice", "backward() ran twice", Severity.ERROR),)
    record = TraceRecord(graph, statuses, events, findings)
    assert format_trace_report(record) == "".join(
        [
            format_graph_tree(graph),
            format_status(statuses),
            format_event_log(events),
            format_diagnostics(findings),
        ]
    )
    assert format_trace_report(TraceRecord(graph)) == format_graph_tree(graph)


def test_diagnostics_list_reads_at_any_width() -> None:
    from gradlens.records import Diagnostic, Severity
    from gradlens.render.terminal import diagnostics_list

    findings = [
        Diagnostic(
            "grad-accumulation",
            "step 1: backward added to a .grad the last step used",
            Severity.ERROR,
            name="fc.weight",
            source="train.py:12",
            fix="call optimizer.zero_grad() each step",
        ),
        Diagnostic("no-grad", "[red]b got no gradient", name="b"),
    ]
    assert to_text(diagnostics_list(findings), width=40) == (
        "error  grad-accumulation  fc.weight\n"
        "train.py:12\n"
        "  step 1: backward added to a .grad the\n"
        "  last step used\n"
        "  fix: call optimizer.zero_grad() each\n"
        "  step\n"
        "warning  no-grad  b\n"
        "  [red]b got no gradient\n"
    )


# ---- names that look like rich markup are printed as they are ----------------------------------


def test_markup_in_names_messages_and_modules_is_printed_as_it_is() -> None:
    import contextlib
    import dataclasses

    import torch
    from torch import nn

    import gradlens
    from gradlens.render.inplace_view import violations_table
    from gradlens.render.why_view import why_table

    model = nn.ModuleDict({"[/]": nn.Linear(2, 2), "[link=x]": nn.Linear(2, 1)})
    w = torch.ones(2, requires_grad=True)
    with gradlens.trace(model, **{"[bold]": w}) as t:
        h = torch.sigmoid(model["[/]"](w))
        out = model["[link=x]"](h).sum() * w.sum()
        out.backward()
        h2 = torch.sigmoid(model["[/]"](w))
        h2.mul_(2)  # breaks sigmoid's saved output: a violation
        with contextlib.suppress(RuntimeError):  # PyTorch's own error, as without gradlens
            model["[link=x]"](h2).sum().backward()
    record = t.record
    status = to_text(status_table(record.tensors), 200)
    assert "[bold]" in status  # the tensor given as trace(**{"[bold]": w})
    tree = to_text(graph_tree(record.graph), 200)
    assert "[bold]" in tree and ".grad = [" in tree
    events = to_text(event_log(record.events), 200)
    assert "linear in [/]" in events and "linear in [link=x]" in events
    assert "[link=x].weight v1" in events
    (violation,) = record.violations
    marked = dataclasses.replace(violation, tensor="[bold]h[/]", write_source="[link=x]a.py:1")
    table = to_text(violations_table([marked]), 200)
    assert "[bold]h[/]" in table and "[link=x]a.py:1" in table
    finding = Diagnostic(
        kind="nan-grad",
        severity=Severity.ERROR,
        message="[bold]w[/] got NaN",
        name="[link=x]",
        fix="[/] fix",
        source="[bold]train.py:3",
    )
    for text in (
        to_text(diagnostics_table([finding]), 200),
        to_text(diagnostics_list([finding]), 200),
    ):
        for part in ("[bold]w[/] got NaN", "[link=x]", "[/] fix", "[bold]train.py:3"):
            assert part in text, (part, text)
    why = gradlens.explain(out, params={"[bold]": w}, trace=t)
    titled = dataclasses.replace(why.record, loss="[link=x]loss[/]")
    text = to_text(why_table(titled), 200)
    assert "parameters of [link=x]loss[/]" in text
    assert "[bold]" in text


# ---------------------------------------------------------------------------------------------
# a real model's report: summaries


def _model_events() -> list[Event]:
    """A forward of 3 alike blocks and a head, one in-place op and an error, then a backward
    that reaches two of three leaves, one gradient holding a NaN."""
    events: list[Event] = []

    def add(event_type: type, *args: object, **kw: object) -> None:
        events.append(event_type(len(events), *args, **kw))

    for b in range(3):
        for op in ("linear", "relu", "add"):
            add(OpEvent, op, (), (), module=f"enc.layers.{b}", source=f"/x/model.py:{b + 10}")
    add(OpEvent, "relu_", (), (), inplace=True, module="head")
    add(OpEvent, "sum", (), (), source="/x/train.py:7")
    add(ErrorEvent, "add_", "a leaf Variable that requires grad\nmore", source="/x/train.py:8")
    add(BackwardEvent, "backward", 0, ("loss",), retain_graph=True, source="/x/train.py:9")
    nan = ValueSummary(shape=(40,), dtype="float32", norm=1.0, nan=2)
    add(GradEvent, 0, "n0", "SumBackward0", (_value(1.0),))
    add(GradEvent, 0, "n1", "AddmmBackward0", (nan,))
    for leaf, grad in (("w", 1.0), ("b", 2.0)):
        add(GradEvent, 0, leaf, "AccumulateGrad", (_value(grad),), leaf=leaf)
    add(OpEvent, "mul", (), (), grad_enabled=False)
    add(BackwardEvent, "grad", 1, ("loss",), inputs=("w",), error="boom")
    return events


def test_event_summary_per_pass() -> None:
    leaves = Graph(tuple(GraphNode(f"l{i}", NodeKind.LEAF, f"p{i}") for i in range(3)), ())
    assert to_text(event_summary(_model_events(), leaves), 100) == (
        "events: 19, summarised per pass\n"
        "\n"
        " forward 1         11 ops (1 in-place), model.py:10 … train.py:7\n"
        "                   by module: enc.layers.0–2 ×3: 3 each · head 1 · (no module) 1\n"
        "                   by op: linear 3 · relu 3 · add 3 · relu_ 1 · sum 1\n"
        "                   error in add_ at train.py:8: a leaf Variable that requires grad\n"
        " backward 1        backward of loss (retain_graph), train.py:9\n"
        "                   4 gradients reached 2 ops and 2 of 3 leaves\n"
        "                   1 gradient with NaN or Inf, first at AddmmBackward0\n"
        " forward 2         1 op: mul (1 without grad mode)\n"
        " autograd.grad 2   autograd.grad of loss → d/d w\n"
        "                   0 gradients reached 0 ops and 0 of 3 leaves\n"
        "                   failed: boom\n"
        "\n"
        "the full log: events='full'\n"
    )


def test_event_summary_folds_blocks_at_the_depth_that_fits() -> None:
    events: list[Event] = []
    for layer in range(4):
        for block in range(6):
            for op in ("conv2d", "batch_norm", "relu"):
                module = f"layer{layer + 1}.{block}.{op}"
                events.append(OpEvent(len(events), op, (), (), module=module))
    events.append(OpEvent(len(events), "linear", (), (), module="fc"))
    text = to_text(event_summary(events), 200)
    line = next(ln for ln in text.splitlines() if "by module" in ln)
    assert line.split("by module: ")[1] == " · ".join(
        [*(f"layer{i}.0–5 ×6: 3 each" for i in range(1, 5)), "fc 1"]
    )


def test_the_report_summarises_a_long_log_and_shows_a_short_one_in_full(
    graph: Graph, events: tuple[Event, ...]
) -> None:
    short = TraceRecord(graph, {}, events)
    assert format_trace_report(short) == format_graph_tree(graph) + format_event_log(events)
    assert "summarised per pass" in format_trace_report(short, events="summary")
    long = TraceRecord(graph, {}, tuple(_model_events()) * 4)
    assert "summarised per pass" in format_trace_report(long)
    assert format_trace_report(long, events="full").endswith(format_event_log(long.events))
    with report_options(events="full"):
        assert "summarised" not in format_trace_report(long)
        assert "summarised" in format_trace_report(long, events="auto")
    assert "summarised" in format_trace_report(long)  # the block's options are gone


def _status(
    name: str, *, leaf: bool = True, requires: bool = True, grad: bool = True
) -> TensorStatus:
    return TensorStatus(
        name=name,
        is_leaf=leaf,
        requires_grad=requires,
        grad_fn=None if leaf else "AddBackward0",
        retains_grad=False,
        grad=_value(1.0) if grad else None,
        version=0,
        shape=(1,),
        dtype="torch.float32",
        device="cpu",
    )


def test_many_tensors_list_only_those_worth_a_look() -> None:
    tensors = {f"p{i}": _status(f"p{i}") for i in range(40)}
    tensors |= {f"c{i}": _status(f"c{i}", requires=False, grad=False) for i in range(5)}
    tensors["lost"] = _status("lost", grad=False)
    tensors["loss"] = _status("loss", leaf=False, grad=False)
    record = TraceRecord(Graph((), ()), tensors)
    text = format_trace_report(record, width=120)
    rows = [line.split()[0] for line in text.splitlines() if line.startswith(" ")]
    rows = [name for name in rows if name not in ("name",) and not name.startswith("─")]
    assert rows == ["lost", "loss"]
    assert (
        "2 of 47 tensors listed; not listed: 40 leaves with a .grad, 5 leaves that need no "
        "gradient (tensors='full' lists them all)"
    ) in " ".join(text.split())
    full = format_trace_report(record, width=120, tensors="full")
    assert full == format_graph_tree(Graph((), ())) + format_status(tensors, width=120)
    few = dict(list(tensors.items())[:30])  # up to SUMMARY_TENSORS: every one
    assert format_trace_report(TraceRecord(Graph((), ()), few)).endswith(format_status(few))


def test_a_cut_branch_and_nodes_no_output_reaches_are_drawn() -> None:
    nodes = (
        GraphNode("y", NodeKind.OUTPUT, "y", shape=(1,)),
        GraphNode("add", NodeKind.OP, "AddBackward0", op="add"),
        GraphNode("yb", NodeKind.INPUT, "yb", shape=(1,)),
        GraphNode("mm", NodeKind.OP, "MmBackward0", op="mm"),
        GraphNode("w", NodeKind.LEAF, "w", shape=(1,)),
        GraphNode("v", NodeKind.INPUT, ".item() value"),
        GraphNode("mean", NodeKind.OP, "MeanBackward0", op="mean"),
    )
    edges = (
        GraphEdge("add", "y"),
        GraphEdge("yb", "add"),
        GraphEdge("w", "add"),
        GraphEdge("mm", "yb", EdgeKind.CUT, "detach at x.py:3"),
        GraphEdge("w", "mm"),
        GraphEdge("mean", "v", EdgeKind.CUT, "host at x.py:4"),
        GraphEdge("w", "mean"),
    )
    assert format_graph_tree(Graph(nodes, edges)) == (
        "autograd graph: 7 nodes\n"
        "├── y  output [1]\n"
        "│   └── AddBackward0  add\n"
        "│       ├── yb  input [1]\n"
        "│       │   └── ✂ detach at x.py:3: MmBackward0  mm\n"
        "│       │       └── w  leaf [1]\n"
        "│       └── w  (see above)\n"
        "└── .item() value  input\n"
        "    └── ✂ host at x.py:4: MeanBackward0  mean\n"
        "        └── w  (see above)\n"
    )
    # Without an output (a view of one module), the tree starts where nothing is fed.
    assert format_graph_tree(Graph(nodes[1:], edges[1:])).splitlines()[1:3] == [
        "├── AddBackward0  add",
        "│   ├── yb  input [1]",
    ]


# ---- real models: the report fits a screen or two ----------------------------------------------


def _traced(model: Any, inputs: tuple[Any, ...], loss_fn: Any) -> TraceRecord:
    import gradlens

    with gradlens.trace(model) as t:
        loss_fn(model, *inputs).backward()
    return t.record


@pytest.fixture(scope="module")
def gpt2_record() -> TraceRecord:
    """GPT-2 small's layout (12 blocks, Hugging Face names, tied lm_head), narrow and short."""
    from model_zoo import gpt2_step

    return _traced(*gpt2_step(vocab=1000, seq=16, d=64, heads=2))


@pytest.fixture(scope="module")
def resnet_record() -> TraceRecord:
    from model_zoo import resnet50_step

    return _traced(*resnet50_step(batch=1, size=64, classes=10))


def test_gpt2_report_fits_and_folds_the_blocks(gpt2_record: TraceRecord) -> None:
    graph = gpt2_record.graph
    assert len(graph.nodes) > 1000
    text = format_trace_report(gpt2_record, width=100)
    assert len(text.splitlines()) <= 80, text
    assert text.startswith("autograd graph: 22 nodes, 1 of them standing for 708\n")
    (block,) = [line for line in text.splitlines() if "GPT2Block ×" in line]
    # in_shapes leave out the causal mask each block reads (views.md CHANGES 7)
    assert "GPT2Block ×12  transformer.h.0–11  [1×16×64] → [1×16×64]" in block
    folded = view(graph, "auto", fold=True, saved=False, max_nodes=40)
    (node,) = [n for n in folded.nodes if n.count == 12]
    each = "  ".join(f"h.{i} {norm:.3g}" for i, norm in enumerate(node.instance_grad_norms))
    assert f"grad norm of each: {each}\n" in format_trace_report(gpt2_record, width=300)
    loaded = from_json_dict(json.loads(json.dumps(to_json_dict(gpt2_record))))
    assert isinstance(loaded, TraceRecord)
    assert format_trace_report(loaded, width=100) == text  # a saved trace reports the same
    for module in ("transformer.wte", "transformer.wpe", "transformer.h.0–11", "transformer.ln_f"):
        assert module in text, module
    assert "lm_head 1" in text  # tied to wte: its op shows in the per-module count
    assert "transformer.h.0–11 ×12: 38 each" in text
    assert "events: 1182, summarised per pass" in text
    assert "--module transformer.h.0" in text  # how to look inside one block


def test_gpt2_report_deeper_and_one_module(gpt2_record: TraceRecord) -> None:
    deeper = format_trace_report(gpt2_record, width=100, depth=3)
    assert "GPT2Block ×12" not in deeper
    blocks = [line for line in deeper.splitlines() if "GPT2Block  transformer.h." in line]
    assert [b.split("transformer.h.")[1].split()[0] for b in blocks] == [
        str(i) for i in reversed(range(12))
    ]
    # One chain of 12 blocks drawn one under the other, not indented 12 levels deeper.
    assert len({b.index("↑ GPT2Block") for b in blocks[1:]}) == 1
    block = format_trace_report(gpt2_record, width=100, module="transformer.h.3")
    assert "addmm" in block and "(neighbour in transformer.h.2)" in block
    assert "transformer.h.3.attn.c_attn.weight  leaf" in block
    every = format_trace_report(gpt2_record, width=100, depth=None)
    assert "more levels (max_depth=None shows them all)" in every
    assert len(format_trace_report(gpt2_record, width=100, depth=None, max_depth=None)) > len(every)


def test_resnet_report_fits_and_folds_each_stage(resnet_record: TraceRecord) -> None:
    text = format_trace_report(resnet_record, width=100)
    assert len(text.splitlines()) <= 80, text
    flat = " ".join(text.split())
    for folded in ("×2 layer1.1–2", "×3 layer2.1–3", "×5 layer3.1–5", "×2 layer4.1–2"):
        assert f"Bottleneck {folded}" in flat, folded
    for module in ("conv1", "bn1", "relu", "maxpool", "avgpool", "fc"):
        assert f" {module} " in flat, module
    for stage in range(1, 5):
        assert f"Bottleneck layer{stage}.0" in flat


def test_print_of_a_trace_is_its_report() -> None:
    import torch

    import gradlens
    from gradlens.render.terminal import trace_report

    w = torch.tensor([1.0], requires_grad=True)
    with gradlens.trace(w=w) as t:
        (w * 3).sum().backward()
    text = str(t)
    assert text == to_text(trace_report(t.record))
    assert "autograd graph" in text and "MulBackward0" in text and ".grad = [3.]" in text
