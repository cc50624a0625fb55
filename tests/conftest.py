"""Shared test helpers: golden files (``pytest --update-golden``) and hand-built records."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path

import pytest

from gradlens.records import (
    BackwardEvent,
    EdgeKind,
    ErrorEvent,
    Event,
    GradEvent,
    Graph,
    GraphEdge,
    GraphNode,
    NodeKind,
    OpEvent,
    TensorRef,
    TensorStatus,
    ValueSummary,
)

GOLDEN_DIR = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/* with the output the code produces now",
    )


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """Returns ``check(name, text)``: compares ``text`` with ``tests/golden/<name>``.

    With ``--update-golden`` the file is (re)written instead, and the test passes.
    """
    update = bool(request.config.getoption("--update-golden"))

    def check(name: str, text: str) -> None:
        path = GOLDEN_DIR / name
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        hint = "run `pytest --update-golden` to accept the new output if the change is intended"
        if not path.exists():
            pytest.fail(f"golden file {path} does not exist; {hint}", pytrace=False)
        expected = path.read_text(encoding="utf-8")
        if text != expected:
            diff = "".join(
                difflib.unified_diff(
                    expected.splitlines(keepends=True),
                    text.splitlines(keepends=True),
                    fromfile=f"golden/{name}",
                    tofile="actual",
                )
            )
            pytest.fail(f"output differs from golden/{name}:\n{diff}\n{hint}", pytrace=False)

    return check


# ---------------------------------------------------------------------------------------------
# The classic example: w = [1.] and x = [2.] require grad; a = w + x; b = w + 1; y = a * b;
# y.backward(). Then dy/da = b = 2, dy/db = a = 3, w.grad = 2 + 3 = 5, x.grad = 2.


def value(*values: float) -> ValueSummary:
    """Returns the summary of a small float32 tensor holding ``values``."""
    return ValueSummary(shape=(len(values),), dtype="float32", values=list(values))


def ref(
    name: str, version: int = 0, *, leaf: bool = False, grad_fn: str | None = None
) -> TensorRef:
    return TensorRef(
        name=name,
        shape=(1,),
        dtype="float32",
        requires_grad=True,
        is_leaf=leaf,
        version=version,
        grad_fn=grad_fn,
    )


def classic_graph() -> Graph:
    nodes = (
        GraphNode("n0", NodeKind.OUTPUT, "y", shape=(1,), dtype="float32"),
        GraphNode(
            "n1",
            NodeKind.OP,
            "MulBackward0",
            op="mul",
            source="example.py:5",
            grads=(value(1.0),),
        ),
        GraphNode("n2", NodeKind.SAVED, "a", shape=(1,), dtype="float32", saved_as="self"),
        GraphNode("n3", NodeKind.SAVED, "b", shape=(1,), dtype="float32", saved_as="other"),
        GraphNode(
            "n4",
            NodeKind.OP,
            "AddBackward0",
            op="add",
            source="example.py:3",
            grads=(value(2.0),),
        ),
        GraphNode("n5", NodeKind.LEAF, "w", shape=(1,), dtype="float32", grad=value(5.0)),
        GraphNode("n6", NodeKind.LEAF, "x", shape=(1,), dtype="float32", grad=value(2.0)),
        GraphNode(
            "n7",
            NodeKind.OP,
            "AddBackward0",
            op="add",
            source="example.py:4",
            grads=(value(3.0),),
        ),
    )
    edges = (
        GraphEdge("n1", "n0", label="[1]"),
        GraphEdge("n2", "n1", EdgeKind.SAVED),
        GraphEdge("n3", "n1", EdgeKind.SAVED),
        GraphEdge("n4", "n1", label="[1]"),
        GraphEdge("n7", "n1", label="[1]"),
        GraphEdge("n5", "n4", label="[1]"),
        GraphEdge("n6", "n4", label="[1]"),
        GraphEdge("n5", "n7", label="[1]"),
    )
    return Graph(nodes=nodes, edges=edges)


def classic_statuses() -> dict[str, TensorStatus]:
    def status(name: str, grad_fn: str | None, grad: ValueSummary | None) -> TensorStatus:
        return TensorStatus(
            name=name,
            is_leaf=grad_fn is None,
            requires_grad=True,
            grad_fn=grad_fn,
            retains_grad=False,
            grad=grad,
            version=0,
            shape=(1,),
            dtype="torch.float32",
            device="cpu",
        )

    constant = TensorStatus(
        name="c",
        is_leaf=True,
        requires_grad=False,
        grad_fn=None,
        retains_grad=False,
        grad=None,
        version=0,
        shape=(),
        dtype="torch.float32",
        device="cpu",
    )
    statuses = [
        status("w", None, value(5.0)),
        status("x", None, value(2.0)),
        status("a", "AddBackward0", None),
        status("b", "AddBackward0", None),
        status("y", "MulBackward0", None),
        constant,
    ]
    return {s.name: s for s in statuses}


def classic_events() -> tuple[Event, ...]:
    w, x = ref("w", leaf=True), ref("x", leaf=True)
    a, b = ref("a", grad_fn="AddBackward0"), ref("b", grad_fn="AddBackward0")
    y = ref("y", grad_fn="MulBackward0")
    return (
        OpEvent(0, "add", (w, x), (a,), source="example.py:3", node="n4"),
        OpEvent(1, "add", (w,), (b,), source="example.py:4", node="n7"),
        OpEvent(2, "mul", (a, b), (y,), source="example.py:5", node="n1"),
        BackwardEvent(3, "backward", 0, ("y",), retain_graph=True, source="example.py:6"),
        GradEvent(4, 0, "n1", "MulBackward0", (value(1.0),)),
        GradEvent(5, 0, "n4", "AddBackward0", (value(2.0),)),
        GradEvent(6, 0, "n5", "AccumulateGrad", (value(2.0),), leaf="w", accumulated=value(2.0)),
        GradEvent(7, 0, "n6", "AccumulateGrad", (value(2.0),), leaf="x", accumulated=value(2.0)),
        GradEvent(8, 0, "n7", "AddBackward0", (value(3.0),)),
        GradEvent(9, 0, "n5", "AccumulateGrad", (value(3.0),), leaf="w", accumulated=value(5.0)),
        OpEvent(
            10,
            "mul_",
            (a,),
            (ref("a", 1, grad_fn="MulBackward0"),),
            inplace=True,
            source="example.py:7",
        ),
        ErrorEvent(
            11,
            "add_",
            "a leaf Variable that requires grad is being used in an in-place operation.",
            inputs=(w,),
            source="example.py:8",
        ),
        BackwardEvent(
            12,
            "backward",
            1,
            ("y",),
            source="example.py:9",
            error="one of the variables needed for gradient computation has been modified "
            "by an inplace operation",
        ),
    )


@pytest.fixture
def graph() -> Graph:
    return classic_graph()


@pytest.fixture
def statuses() -> dict[str, TensorStatus]:
    return classic_statuses()


@pytest.fixture
def events() -> tuple[Event, ...]:
    return classic_events()
