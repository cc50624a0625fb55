"""Records to JSON and back: round trips, the exact JSON, and every error message."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

import gradlens._io
from gradlens._errors import GradlensError, SchemaError
from gradlens._io import MAX_DEPTH, json_depth, load, save
from gradlens.records import (
    BackwardEvent,
    Diagnostic,
    EdgeKind,
    ErrorEvent,
    GradEvent,
    Graph,
    GraphEdge,
    GraphNode,
    NodeKind,
    OpEvent,
    Severity,
    TensorRef,
    TensorStatus,
    TraceRecord,
    ValueSummary,
)
from gradlens.records.serialize import (
    FORMAT,
    SCHEMA_VERSION,
    dumps,
    from_json_dict,
    loads,
    to_json_dict,
)

F32 = "torch.float32"


def _grad() -> ValueSummary:
    return ValueSummary((2,), F32, [0.5, -1.0], norm=1.118, min=-1.0, max=0.5)


def _graph() -> Graph:
    return Graph(
        nodes=(
            GraphNode("n0", NodeKind.OUTPUT, "loss", (), F32, grads=(ValueSummary((), F32, 1.0),)),
            GraphNode("n1", NodeKind.OP, "MulBackward0", op="mul", source="train.py:7"),
            GraphNode("n2", NodeKind.LEAF, "w", (2,), F32, grad=_grad(), grads=(_grad(), None)),
            GraphNode("n3", NodeKind.SAVED, "x", (2,), F32, saved_as="input other", freed=True),
        ),
        edges=(
            GraphEdge("n1", "n0", label="[]"),
            GraphEdge("n2", "n1", label="[2]"),
            GraphEdge("n3", "n1", EdgeKind.SAVED),
        ),
    )


def _trace() -> TraceRecord:
    w_ref = TensorRef("w", (2,), F32, requires_grad=True, is_leaf=True, version=0)
    w_status = TensorStatus("w", True, True, None, False, _grad(), 0, (2,), F32, "cpu")
    loss_status = TensorStatus("loss", False, True, "MulBackward0", False, None, 0, (), F32, "cpu")
    return TraceRecord(
        graph=_graph(),
        tensors={"w": w_status, "loss": loss_status},
        events=(
            OpEvent(0, "torch.mul", (w_ref,), (TensorRef("loss", (), F32, True, False, 0),)),
            ErrorEvent(1, "Tensor.add_", "a leaf Variable that requires grad", (w_ref,)),
            BackwardEvent(2, "backward", 0, ("loss",), gradient=(None,), retain_graph=True),
            GradEvent(3, 0, "n2", "AccumulateGrad", (_grad(),), leaf="w", accumulated=_grad()),
            BackwardEvent(4, "grad", 1, ("loss",), inputs=("w",), results=(_grad(),)),
        ),
        diagnostics=(
            Diagnostic("inplace-leaf", "add_ on leaf w", Severity.ERROR, "w", 1, "train.py:9"),
            Diagnostic("grad-accumulation", "w.grad grew across steps"),
        ),
    )


def _error(data: Any) -> str:
    with pytest.raises(SchemaError) as info:
        from_json_dict(data)
    return str(info.value)


# ---- round trips and the exact JSON ------------------------------------------------------------


def test_graph_round_trips_and_keeps_its_index() -> None:
    graph = _graph()
    loaded = loads(dumps(graph))
    assert isinstance(loaded, Graph)
    assert loaded == graph
    assert loaded.node("n2").grad == _grad()
    assert [n.id for n in loaded.parents("n1")] == ["n2"]


def test_trace_round_trips_every_event_kind_and_diagnostic() -> None:
    trace = _trace()
    loaded = loads(dumps(trace))
    assert loaded == trace
    assert isinstance(loaded, TraceRecord)
    assert [type(e) for e in loaded.events] == [
        OpEvent,
        ErrorEvent,
        BackwardEvent,
        GradEvent,
        BackwardEvent,
    ]
    assert list(loaded.tensors) == ["w", "loss"]
    assert loaded.diagnostics[0].severity is Severity.ERROR
    assert loaded.graph.nodes[3].kind is NodeKind.SAVED


def test_graph_json_dict_is_exact() -> None:
    graph = Graph(
        nodes=(
            GraphNode("n0", NodeKind.LEAF, "w", (3,), F32, grad=ValueSummary((1,), F32, [2.0])),
        ),
        edges=(),
    )
    assert to_json_dict(graph) == {
        "format": "gradlens",
        "schema": 1,
        "type": "graph",
        "data": {
            "nodes": [
                {
                    "id": "n0",
                    "kind": "leaf",
                    "name": "w",
                    "shape": [3],
                    "dtype": F32,
                    "op": None,
                    "module": None,
                    "source": None,
                    "saved_as": None,
                    "grads": [],
                    "grad": {
                        "shape": [1],
                        "dtype": F32,
                        "values": [2.0],
                        "norm": None,
                        "min": None,
                        "max": None,
                        "nan": 0,
                        "inf": 0,
                    },
                    "freed": False,
                    "problem": None,
                    "dead": False,
                }
            ],
            "edges": [],
        },
    }


def test_trace_json_dict_has_its_sections_and_event_kinds() -> None:
    d = to_json_dict(_trace())
    assert (d["format"], d["schema"], d["type"]) == (FORMAT, SCHEMA_VERSION, "trace")
    assert list(d["data"]) == ["graph", "tensors", "events", "diagnostics", "violations", "notes"]
    assert [e["kind"] for e in d["data"]["events"]] == [
        "op",
        "error",
        "backward",
        "grad",
        "backward",
    ]
    assert d["data"]["events"][0]["inputs"][0] == {
        "name": "w",
        "shape": [2],
        "dtype": F32,
        "requires_grad": True,
        "is_leaf": True,
        "version": 0,
        "grad_fn": None,
        "nonfinite": False,
    }
    assert d["data"]["diagnostics"][1] == {
        "kind": "grad-accumulation",
        "message": "w.grad grew across steps",
        "severity": "warning",
        "name": None,
        "step": None,
        "source": None,
        "fix": None,
    }


def test_non_finite_floats_are_strings_in_strict_json_and_come_back() -> None:
    summary = ValueSummary(
        (2, 2), F32, [[math.nan, math.inf], [-math.inf, 1.5]], norm=1.5, min=-math.inf, max=math.nan
    )
    graph = Graph((GraphNode("n0", NodeKind.OUTPUT, "y", grad=summary, grads=(summary,)),), ())
    d = to_json_dict(graph)
    assert d["data"]["nodes"][0]["grad"]["values"] == [["nan", "inf"], ["-inf", 1.5]]
    assert (d["data"]["nodes"][0]["grad"]["min"], d["data"]["nodes"][0]["grad"]["max"]) == (
        "-inf",
        "nan",
    )
    text = json.dumps(d, allow_nan=False)  # raises ValueError on any NaN/Infinity literal
    assert "NaN" not in text and "Infinity" not in text
    assert "NaN" not in dumps(graph) and "Infinity" not in dumps(graph)

    loaded = loads(dumps(graph))
    assert isinstance(loaded, Graph)
    grad = loaded.nodes[0].grad
    assert grad is not None and grad.max is not None
    values: Any = grad.values
    assert math.isnan(values[0][0]) and math.isnan(grad.max)
    assert values[0][1:] == [math.inf] and values[1] == [-math.inf, 1.5]
    assert grad.min == -math.inf and grad.norm == 1.5
    assert loaded == graph  # NaN decodes to math.nan itself, so lists of it compare equal


def test_nested_values_keep_ints_bools_and_scalars() -> None:
    nested = ValueSummary((2, 1, 2), "torch.int64", [[[1, -2]], [[3, 4]]])
    flags = ValueSummary((2,), "torch.bool", [True, False])
    scalar = ValueSummary((), "torch.float64", 0.25)
    graph = Graph(
        tuple(
            GraphNode(f"n{i}", NodeKind.INPUT, f"t{i}", grad=s)
            for i, s in enumerate((nested, flags, scalar))
        ),
        (),
    )
    loaded = loads(dumps(graph))
    assert loaded == graph
    assert isinstance(loaded, Graph)
    values = [n.grad.values for n in loaded.nodes if n.grad is not None]
    assert values == [[[[1, -2]], [[3, 4]]], [True, False], 0.25]
    assert [type(v) for v in (values[0][0][0][0], values[1][0], values[2])] == [int, bool, float]


def test_unicode_names_survive_and_are_written_as_text() -> None:
    graph = Graph(
        (
            GraphNode("n0", NodeKind.OUTPUT, "损失", module="модель.слой"),
            GraphNode("n1", NodeKind.LEAF, "poids_é"),
        ),
        (GraphEdge("n1", "n0", label="[1] → []"),),
    )
    text = dumps(graph)
    assert '"损失"' in text and '"модель.слой"' in text and "→" in text
    assert loads(text) == graph


def test_unknown_keys_are_ignored_and_defaulted_fields_may_be_left_out() -> None:
    d = to_json_dict(_graph())
    d["written_by"] = "gradlens 9.9"
    d["data"]["layout"] = {"rankdir": "TB"}
    d["data"]["nodes"][1]["colour"] = "red"
    assert from_json_dict(d) == _graph()

    minimal = {
        "format": "gradlens",
        "schema": 1,
        "type": "graph",
        "data": {"nodes": [{"id": "a", "kind": "op", "name": "AddBackward0"}], "edges": []},
    }
    assert from_json_dict(minimal) == Graph((GraphNode("a", NodeKind.OP, "AddBackward0"),), ())


def test_an_integer_in_a_float_field_reads_as_a_float() -> None:
    d = to_json_dict(Graph((GraphNode("a", NodeKind.LEAF, "w", grad=ValueSummary((), F32)),), ()))
    d["data"]["nodes"][0]["grad"]["norm"] = 2
    loaded = from_json_dict(d)
    assert isinstance(loaded, Graph)
    assert loaded.nodes[0].grad is not None
    norm = loaded.nodes[0].grad.norm
    assert norm == 2.0 and type(norm) is float


# ---- errors --------------------------------------------------------------------------------------


def test_not_a_gradlens_file() -> None:
    assert _error([1, 2]) == (
        'not a gradlens file: expected a JSON object with "format": "gradlens", got a list'
    )
    assert _error({"schema": 1}) == (
        'not a gradlens file: it has no "format" key (expected "gradlens")'
    )
    assert _error({"format": "torchviz"}) == (
        "not a gradlens file: format is 'torchviz', expected 'gradlens'"
    )


def test_a_newer_schema_is_refused_with_an_upgrade_hint() -> None:
    d = to_json_dict(_graph())
    d["schema"] = SCHEMA_VERSION + 1
    assert _error(d) == (
        "this file has gradlens schema version 2, but this gradlens reads schema version 1 "
        "and older; upgrade gradlens (pip install --upgrade gradlens) to load it"
    )


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("1", "schema: expected a positive integer, got '1'"),
        (0, "schema: expected a positive integer, got 0"),
        (True, "schema: expected a positive integer, got true"),
    ],
)
def test_a_bad_schema_value(schema: Any, message: str) -> None:
    d = to_json_dict(_graph())
    d["schema"] = schema
    assert _error(d) == message


def test_missing_envelope_keys_and_unknown_type() -> None:
    d = to_json_dict(_graph())
    assert _error({k: v for k, v in d.items() if k != "schema"}) == (
        "schema: missing (expected the integer schema version)"
    )
    assert _error({k: v for k, v in d.items() if k != "type"}) == (
        "type: expected one of 'graph', 'trace', 'watch', missing"
    )
    assert _error({**d, "type": "model"}) == (
        "type: expected one of 'graph', 'trace', 'watch', got 'model'"
    )
    assert _error({**d, "type": ["graph"]}) == (
        "type: expected one of 'graph', 'trace', 'watch', got a list"
    )
    assert _error({k: v for k, v in d.items() if k != "data"}) == (
        "data: missing (expected an object)"
    )
    assert _error({**d, "data": []}) == "data: expected an object, got a list"


def _set(path: list[Any], value: Any) -> Any:
    """Returns the graph's JSON dict with the value at ``path`` replaced (or deleted)."""
    d = to_json_dict(_graph())
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


_DELETE = object()
_NODES = ["data", "nodes"]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            [*_NODES, 3, "kind"],
            "bogus",
            "data.nodes[3].kind: expected one of 'leaf', 'input', 'op', 'output', 'saved', "
            "'module', 'stub', got 'bogus'",
        ),
        ([*_NODES, 0, "id"], _DELETE, "data.nodes[0].id: missing (expected a string)"),
        ([*_NODES, 1, "name"], 7, "data.nodes[1].name: expected a string, got 7"),
        ([*_NODES, 2, "shape"], "2", "data.nodes[2].shape: expected a list or null, got '2'"),
        ([*_NODES, 2, "shape", 0], 2.0, "data.nodes[2].shape[0]: expected an integer, got 2.0"),
        ([*_NODES, 2, "shape", 0], True, "data.nodes[2].shape[0]: expected an integer, got true"),
        ([*_NODES, 3, "freed"], 1, "data.nodes[3].freed: expected true or false, got 1"),
        ([*_NODES, 2, "grad"], [], "data.nodes[2].grad: expected an object or null, got a list"),
        (
            [*_NODES, 2, "grad", "norm"],
            "NaN",
            'data.nodes[2].grad.norm: expected a number, "nan", "inf" or "-inf" or null, '
            "got 'NaN'",
        ),
        (
            [*_NODES, 2, "grads", 0, "values", 1],
            "x",
            'data.nodes[2].grads[0].values[1]: expected a number, true, false, "nan", "inf", '
            "\"-inf\", or a list of them, got 'x'",
        ),
        (
            [*_NODES, 2, "grads", 0, "nan"],
            None,
            "data.nodes[2].grads[0].nan: expected an integer, got null",
        ),
        (["data", "nodes"], {}, "data.nodes: expected a list, got an object"),
        (
            ["data", "edges", 2, "kind"],
            "grad",
            "data.edges[2].kind: expected one of 'data', 'saved', 'derivative', 'cut', got 'grad'",
        ),
        (["data", "edges", 1, "src"], "n9", "data.edges[1].src: no node has id 'n9'"),
        (["data", "edges", 0, "dst"], "loss", "data.edges[0].dst: no node has id 'loss'"),
        ([*_NODES, 3, "id"], "n1", "data.nodes[3].id: duplicate node id 'n1'"),
    ],
)
def test_a_bad_graph_field_is_named_by_its_json_path(
    path: list[Any], value: Any, message: str
) -> None:
    assert _error(_set(path, value)) == message


def test_bad_trace_fields_are_named_by_their_json_path() -> None:
    good = to_json_dict(_trace())

    d = copy.deepcopy(good)
    d["data"]["events"][3]["kind"] = "bogus"
    assert _error(d) == (
        "data.events[3].kind: expected one of 'op', 'backward', 'grad', 'error', got 'bogus'"
    )

    d = copy.deepcopy(good)
    del d["data"]["events"][0]["kind"]
    assert (
        _error(d)
        == "data.events[0].kind: expected one of 'op', 'backward', 'grad', 'error', missing"
    )

    d = copy.deepcopy(good)
    d["data"]["events"][1] = "error"
    assert _error(d) == (
        "data.events[1]: expected an object with a kind of 'op', 'backward', 'grad', 'error', "
        "got 'error'"
    )

    d = copy.deepcopy(good)
    del d["data"]["events"][2]["pass_index"]
    assert _error(d) == "data.events[2].pass_index: missing (expected an integer)"

    d = copy.deepcopy(good)
    d["data"]["events"][0]["inputs"][0]["version"] = "0"
    assert _error(d) == "data.events[0].inputs[0].version: expected an integer, got '0'"

    d = copy.deepcopy(good)
    d["data"]["tensors"]["w"]["grad"]["shape"] = None
    assert _error(d) == 'data.tensors["w"].grad.shape: expected a list, got null'

    d = copy.deepcopy(good)
    d["data"]["tensors"] = [1]
    assert _error(d) == "data.tensors: expected an object, got a list"

    d = copy.deepcopy(good)
    d["data"]["diagnostics"][0]["severity"] = "fatal"
    assert _error(d) == (
        "data.diagnostics[0].severity: expected one of 'error', 'warning', 'info', got 'fatal'"
    )

    d = copy.deepcopy(good)
    d["data"]["graph"]["edges"][0]["src"] = "nope"
    assert _error(d) == "data.graph.edges[0].src: no node has id 'nope'"

    d = copy.deepcopy(good)
    del d["data"]["graph"]
    assert _error(d) == "data.graph: missing (expected an object)"


def test_invalid_json_says_where() -> None:
    with pytest.raises(SchemaError) as info:
        loads('{\n "format": "gradlens",\n "schema": }')
    assert str(info.value) == (
        "not a gradlens file: not valid JSON: Expecting value at line 3, column 12"
    )


def test_only_records_can_be_written() -> None:
    with pytest.raises(GradlensError) as info:
        to_json_dict({"nodes": []})  # type: ignore[arg-type]
    assert str(info.value) == (
        "only a Graph, TraceRecord or WatchRecord can be written as JSON, got dict"
    )

    bad = Graph((GraphNode("n0", NodeKind.LEAF, "z", grad=ValueSummary((1,), "c", [1j])),), ())
    with pytest.raises(GradlensError) as info:
        dumps(bad)
    assert str(info.value) == (
        'data.nodes[0].grad.values[0]: tensor values must be a number, true, false, "nan", '
        '"inf", "-inf", or a list of them; got a complex'
    )


def test_schema_error_is_a_gradlens_error_and_a_value_error() -> None:
    assert issubclass(SchemaError, GradlensError) and issubclass(SchemaError, ValueError)


# ---- save and load -------------------------------------------------------------------------------


class _FakeTrace:
    """Stands in for the live ``gradlens.Trace``: all save() needs is its ``.record``."""

    def __init__(self, record: Any) -> None:
        self.record = record


def test_save_and_load_a_graph_and_a_trace(tmp_path: Path) -> None:
    graph_path = save(_graph(), tmp_path / "graph.json")
    assert graph_path == tmp_path / "graph.json"
    assert load(graph_path) == _graph()

    trace_path = save(_trace(), str(tmp_path / "trace.json"))
    assert isinstance(trace_path, Path)
    assert load(str(trace_path)) == _trace()

    text = trace_path.read_text(encoding="utf-8")
    assert json.loads(text)["type"] == "trace"
    assert text.endswith("}\n")


def test_save_takes_a_live_trace_through_its_record(tmp_path: Path) -> None:
    path = save(_FakeTrace(_trace()), tmp_path / "live.json")
    assert load(path) == _trace()


def test_save_writes_utf8(tmp_path: Path) -> None:
    graph = Graph((GraphNode("n0", NodeKind.OUTPUT, "损失"),), ())
    path = save(graph, tmp_path / "u.json")
    assert "损失" in path.read_bytes().decode("utf-8")
    assert load(path) == graph


@pytest.mark.parametrize(
    ("obj", "given"),
    [
        ({"nodes": []}, "dict"),
        (_FakeTrace(None), "_FakeTrace"),
        (_FakeTrace(_graph()), "_FakeTrace whose .record is a Graph"),
    ],
)
def test_save_refuses_other_objects(tmp_path: Path, obj: Any, given: str) -> None:
    with pytest.raises(GradlensError) as info:
        save(obj, tmp_path / "x.json")
    assert str(info.value) == (
        "save() takes a Graph, a TraceRecord, a WatchRecord, a Trace or a Lens (anything with a "
        f".record that is a TraceRecord or WatchRecord); got a {given}"
    )
    assert not (tmp_path / "x.json").exists()


def test_save_into_a_missing_folder_names_it_and_does_not_create_it(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "today"
    with pytest.raises(GradlensError) as info:
        save(_graph(), folder / "g.json")
    assert str(info.value) == (
        f"cannot save to {folder / 'g.json'}: the folder {folder} does not exist; create it first"
    )
    assert not (tmp_path / "runs").exists()


def test_load_a_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(GradlensError) as info:
        load(missing)
    assert str(info.value) == f"cannot load {missing}: no such file"


def test_load_a_folder(tmp_path: Path) -> None:
    with pytest.raises(GradlensError) as info:
        load(tmp_path)
    assert str(info.value) == f"cannot load {tmp_path}: it is a folder, not a file"


def test_load_a_file_that_is_not_gradlens_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"format": "onnx"}', encoding="utf-8")
    with pytest.raises(SchemaError) as info:
        load(path)
    assert str(info.value) == f"{path}: not a gradlens file: format is 'onnx', expected 'gradlens'"

    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(SchemaError) as info:
        load(path)
    assert str(info.value) == f"{path}: not a gradlens file: it is not UTF-8 text"


# ---- load limits: depth and size are checked before decoding -----------------------------------


def _deep_values(depth: int) -> ValueSummary:
    """A one-element tensor's value with ``depth`` dimensions: [[[...[1.0]...]]]."""
    values: Any = 1.0
    for _ in range(depth):
        values = [values]
    return ValueSummary(shape=(1,) * depth, dtype="float32", values=values)


def _trace_with_values(depth: int) -> TraceRecord:
    status = TensorStatus(
        name="w",
        shape=(1,) * depth,
        dtype="torch.float32",
        is_leaf=True,
        requires_grad=True,
        grad_fn=None,
        retains_grad=False,
        grad=None,
        version=0,
        device="cpu",
        value=_deep_values(depth),
    )
    return TraceRecord(graph=_graph(), tensors={"w": status})


def test_a_900_levels_deep_file_is_a_schema_error_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 900 + "]" * 900, encoding="utf-8")
    with pytest.raises(SchemaError) as info:
        load(path)
    assert str(info.value) == (
        f"{path}: not loaded: its JSON nests 900 levels deep, more than the {MAX_DEPTH} "
        "levels gradlens.load reads (gradlens.save refuses to write a record nesting deeper)"
    )
    assert info.value.__cause__ is None and info.value.__context__ is None

    # Deep inside a real record, where the decoder would recurse field by field.
    good = json.loads(dumps(_trace_with_values(3)))
    good["data"]["tensors"]["w"]["value"]["values"] = json.loads("[" * 900 + "1" + "]" * 900)
    path.write_text(json.dumps(good), encoding="utf-8")
    with pytest.raises(SchemaError, match=r"nests 90\d levels deep"):
        load(path)


def test_the_deepest_record_gradlens_saves_loads(tmp_path: Path) -> None:
    # The envelope and the fields down to a value take 5 levels; the rest are its dimensions.
    path = tmp_path / "deep.json"
    deepest = _trace_with_values(MAX_DEPTH - 5)
    save(deepest, path)
    assert json_depth(path.read_text(encoding="utf-8")) == MAX_DEPTH
    assert load(path) == deepest

    with pytest.raises(GradlensError, match=f"nests {MAX_DEPTH + 1} levels deep") as info:
        save(_trace_with_values(MAX_DEPTH - 4), tmp_path / "deeper.json")
    assert "nothing was written" in str(info.value)
    assert not (tmp_path / "deeper.json").exists()


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "g.json"
    save(_graph(), path)
    monkeypatch.setattr(gradlens._io, "MAX_BYTES", path.stat().st_size - 1)

    def never(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("the file was read")

    monkeypatch.setattr(Path, "read_text", never)
    with pytest.raises(SchemaError, match=r"not loaded: the file is 0\.0 GiB, more than the 0 GiB"):
        load(path)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"[[["', 0),
        ("[]", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('["]]]", ["\\"[[", "\\\\"], {}]', 2),
        ('[{"k\\"[": "\\\\\\"{{"}]', 2),
    ],
)
def test_json_depth_counts_only_brackets_outside_strings(text: str, depth: int) -> None:
    json.loads(text)  # every case is valid JSON
    assert json_depth(text) == depth
