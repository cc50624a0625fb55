"""The autograd graph as plain records: nodes, edges, and the graph that holds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from .modules import ModuleInfo
from .values import ValueSummary

if TYPE_CHECKING:
    from ..render.graphviz import RenderResult

__all__ = ["EdgeKind", "Graph", "GraphEdge", "GraphNode", "NodeKind"]

#: Field metadata: JSON leaves the field out while it holds its default (records/serialize.py).
_OMIT = {"omit_default": True}


class NodeKind(str, Enum):
    """What a node of the diagram stands for."""

    LEAF = "leaf"  # a leaf tensor that requires grad (a parameter), reached via AccumulateGrad
    INPUT = "input"  # a tensor that does not require grad (data, a constant)
    OP = "op"  # an autograd Node such as MulBackward0
    OUTPUT = "output"  # a tensor the graph was asked about (a loss, a gradient)
    SAVED = "saved"  # a tensor an op saved for backward
    MODULE = "module"  # one collapsed nn.Module, or a folded run of alike ones (a view's)
    STUB = "stub"  # a neighbour outside the module a ``view(module=...)`` focuses on


class EdgeKind(str, Enum):
    """What an edge of the diagram stands for."""

    DATA = "data"  # a tensor flowing forward from src into dst
    SAVED = "saved"  # src is a tensor that op dst saved for backward
    DERIVATIVE = "derivative"  # src (an output) is the derivative of dst, by autograd.grad
    CUT = "cut"  # src's value reached dst with its autograd history dropped (label: kind, line)


@dataclass(frozen=True)
class GraphNode:
    """One node of the diagram. Holds names, shapes and numbers, never a tensor."""

    id: str
    kind: NodeKind
    name: str
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    op: str | None = None  # the forward op that created this node ("mul"), when traced
    module: str | None = None  # the nn.Module path whose forward ran the op
    source: str | None = None  # the user's "file.py:line" that ran the op
    saved_as: str | None = None  # for SAVED nodes: "input self", "output result", ...
    grads: tuple[ValueSummary | None, ...] = ()  # gradient received, one per backward pass
    grad: ValueSummary | None = None  # for LEAF nodes: ``.grad`` after the last pass
    freed: bool = False  # saved tensors freed by a backward without retain_graph
    problem: str | None = None  # what went wrong here ("overwritten by mul_ at x.py:4")
    dead: bool = False  # received a gradient but passed on only zeros (``gradlens.explain``)
    # Module views (``Graph.view``): MODULE nodes stand for a collapsed module or a folded run.
    # JSON leaves these out while they hold their default (``_OMIT``), so files stay small.
    module_class: str | None = field(default=None, metadata=_OMIT)  # class name ("GPT2Block")
    count: int = field(default=1, metadata=_OMIT)  # instances a folded node stands for (x12)
    instances: tuple[str, ...] = field(default=(), metadata=_OMIT)  # folded paths, in order
    instance_grad_norms: tuple[float | None, ...] = field(default=(), metadata=_OMIT)
    params: int | None = field(default=None, metadata=_OMIT)  # parameter elements inside
    in_shapes: tuple[tuple[int, ...], ...] = field(default=(), metadata=_OMIT)  # into the module
    out_shapes: tuple[tuple[int, ...], ...] = field(default=(), metadata=_OMIT)  # out of it
    grad_norm: float | None = field(default=None, metadata=_OMIT)  # gradient at its output(s)
    inner: int = field(default=0, metadata=_OMIT)  # nodes of the full graph it hides
    aliases: tuple[str, ...] = field(default=(), metadata=_OMIT)  # other names (tied weights)


@dataclass(frozen=True)
class GraphEdge:
    """A directed edge ``src -> dst`` in the direction the forward pass ran."""

    src: str
    dst: str
    kind: EdgeKind = EdgeKind.DATA
    label: str | None = None  # the shape of the tensor on the edge, e.g. "[1]"


@dataclass(frozen=True)
class Graph:
    """An autograd graph: nodes in traversal order (outputs first), and the edges between them."""

    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    # every module known, in ``named_modules()`` order
    modules: tuple[ModuleInfo, ...] = field(default=(), metadata=_OMIT)
    # what a view collapsed, folded or cut, and how to expand it
    notes: tuple[str, ...] = field(default=(), metadata=_OMIT)
    _index: dict[str, GraphNode] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )
    _view: bool = field(init=False, repr=False, compare=False, hash=False, default=False)

    def __post_init__(self) -> None:
        self._index.update((n.id, n) for n in self.nodes)

    def node(self, node_id: str) -> GraphNode:
        """Returns the node with this id (KeyError if there is none)."""
        return self._index[node_id]

    def find(self, name: str) -> list[GraphNode]:
        """Returns the nodes called ``name`` (an op like "MulBackward0" or a tensor name)."""
        return [n for n in self.nodes if n.name == name]

    def of_kind(self, kind: NodeKind | str) -> list[GraphNode]:
        """Returns the nodes of one kind, in graph order."""
        return [n for n in self.nodes if n.kind == NodeKind(kind)]

    @property
    def outputs(self) -> list[GraphNode]:
        """Returns the output nodes."""
        return self.of_kind(NodeKind.OUTPUT)

    def parents(self, node_id: str, kind: EdgeKind | None = EdgeKind.DATA) -> list[GraphNode]:
        """Returns the nodes with an edge into ``node_id`` (its forward inputs)."""
        return [
            self._index[e.src]
            for e in self.edges
            if e.dst == node_id and (kind is None or e.kind == kind)
        ]

    def children(self, node_id: str, kind: EdgeKind | None = EdgeKind.DATA) -> list[GraphNode]:
        """Returns the nodes ``node_id`` has an edge to (its forward consumers)."""
        return [
            self._index[e.dst]
            for e in self.edges
            if e.src == node_id and (kind is None or e.kind == kind)
        ]

    # Convenience methods: they hand the record to the analysis and render layers (pure).
    def view(
        self,
        depth: int | str | None = None,
        *,
        module: str | None = None,
        fold: bool = False,
        saved: bool = True,
        max_nodes: int | None = None,
        expand: tuple[str, ...] = (),
    ) -> Graph:
        """Returns this graph at module level (``gradlens.analysis.views.view``).

        ``depth=k`` collapses modules ``k`` levels down into one node each, ``"auto"`` picks
        the deepest depth that fits a page; ``module`` focuses on one module; ``fold`` draws
        repeated blocks once with ×N; ``saved=False`` hides saved tensors; ``max_nodes`` cuts
        at module boundaries; ``expand`` opens collapsed modules. ``notes`` says what was done.
        """
        from ..analysis.views import view

        return view(
            self,
            depth,  # type: ignore[arg-type]
            module=module,
            fold=fold,
            saved=saved,
            max_nodes=max_nodes,
            expand=expand,
        )

    def to_dot(self) -> str:
        """Returns the graph as Graphviz DOT text (needs no Graphviz install); a graph bigger
        than a page is drawn as its auto view (``view(depth="auto")``), with a note."""
        from ..render.dot import to_dot

        return to_dot(self)

    def render(self, path: str | Path) -> RenderResult:
        """Writes the diagram to ``path`` (.svg, .png, .pdf, .dot or .html, by suffix).

        Uses the ``dot`` program; without it, writes the ``.dot`` file next to ``path`` and the
        result says how to install Graphviz (``.html``, an interactive page, needs ``dot``:
        raises GradlensError without it). Returns what was written.
        """
        if str(path).lower().endswith(".html"):
            from ..render.html import write_html

            return write_html(self, path)
        from ..render.graphviz import render

        return render(self.to_dot(), path)

    def _repr_svg_(self) -> str | None:
        from ..render.graphviz import to_svg

        return to_svg(self.to_dot())
