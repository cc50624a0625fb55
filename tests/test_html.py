"""The interactive HTML page: what it embeds (escaped, offline), and how it behaves in a real
headless Chromium (search, click for details, expand a module, collapse back).

The browser is Debian's ``chromium`` driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: no port, no extra package). CI installs it (``.ci/run``); a local
machine without it skips the browser tests with a loud reason.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch
from model_zoo import gpt2_step, mlp_step

import gradlens
from gradlens import GradlensError
from gradlens.cli import main
from gradlens.records import (
    EdgeKind,
    Graph,
    GraphEdge,
    GraphNode,
    NodeKind,
    ValueSummary,
    format_shape,
)
from gradlens.render import graphviz
from gradlens.render.html import to_html

needs_dot = pytest.mark.skipif(not graphviz.is_dot_available(), reason="needs Graphviz's dot")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI sets GRADLENS_REQUIRE_CHROMIUM=1: there a missing browser fails the tests instead.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("GRADLENS_REQUIRE_CHROMIUM"),
    reason="!!! Debian's `chromium` is not installed: the HTML page is NOT tested in a browser "
    "here (apt-get install chromium; .ci/run installs it) !!!",
)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


class Browser:
    """A headless Chromium driven over the DevTools protocol on fds 3/4 (NUL-ended JSON)."""

    def __init__(self, width: int = 1400, height: int = 900) -> None:
        if CHROMIUM is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        self.profile = tempfile.mkdtemp(prefix="gradlens-chromium-")
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # --remote-debugging-pipe reads commands on fd 3 and writes replies on fd 4. Move our
        # ends above 10 first, so that putting one on 3 cannot overwrite the other.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w)]
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def onto_3_and_4() -> None:  # runs in the child, before exec
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        command = [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={self.profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            command,
            preexec_fn=onto_3_and_4,
            close_fds=False,  # Python's own descriptors are close-on-exec; 3 and 4 are not
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in high:
            os.close(fd)
        self._buffer = b""
        self._next = 0
        self.session: str | None = None
        self.target: str | None = None
        self.width, self.height = width, height

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = 20
    ) -> Any:
        """Sends one command and returns its result (raises on a protocol error)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer {method} in {timeout} s")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk

    def open(self, url: str) -> None:
        """Opens ``url`` in a new tab (closing the previous one) and waits for the page."""
        if self.target is not None:
            self.send("Target.closeTarget", {"targetId": self.target})
        self.target = target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        self.send("Page.enable")
        self.send("Page.navigate", {"url": url})
        self.wait("document.body && document.body.dataset.ready === '1'")

    def js(self, expression: str) -> Any:
        """Returns the value of a JavaScript expression in the page (raises on an exception)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(f"!!({expression})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never got to: {expression}")
            time.sleep(0.05)

    def click(self, x: float, y: float) -> None:
        """A real mouse click (press and release) at page coordinates."""
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def click_node(self, node_id: str) -> None:
        box = self.js(
            f"(() => {{ const r = document.getElementById({json.dumps(node_id)})"
            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        self.click(*box)

    def type(self, selector: str, text: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", {"text": text})

    def press(self, key: str) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": 13},
            )

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot")["data"]))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Any:
    b = Browser()
    try:
        yield b
    finally:
        b.close()


# ---------------------------------------------------------------------------- helpers
def page_data(page: str) -> dict[str, Any]:
    """Returns the JSON the page embeds, read back the way the browser reads it."""
    match = re.search(r'<script type="application/json" id="gradlens-data">(.*?)</script>', page)
    assert match is not None
    return json.loads(match.group(1))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)


def evil_graph() -> Graph:
    """Names that would break a page that did not escape them."""
    evil = "</script><script>document.title = 'pwned'</script><!-- & \u2028 ' \""
    grad = ValueSummary(shape=(2,), dtype="float32", values=[1.0, float("nan")])
    nodes = (
        GraphNode("n0", NodeKind.OUTPUT, evil, shape=(2,)),
        GraphNode(
            "n1", NodeKind.OP, "MulBackward0", op="mul", source="</style>.py:3", grads=(grad,)
        ),
        GraphNode("n2", NodeKind.SAVED, "w", shape=(2,), saved_as="self"),
        GraphNode("n3", NodeKind.LEAF, "w</b>", shape=(2,), grad=grad),
    )
    edges = (
        GraphEdge("n1", "n0", label="[2]"),
        GraphEdge("n3", "n1", label="[2]"),
        GraphEdge("n2", "n1", EdgeKind.SAVED),
    )
    return Graph(nodes, edges)


# ---------------------------------------------------------------------------- the file
@needs_dot
def test_page_is_one_offline_file_and_escapes_every_name() -> None:
    page = to_html(evil_graph(), title="</title><b>x")
    parser = _Tags()
    parser.feed(page)
    # Exactly the page's own elements: the names did not open a tag or end a script early.
    assert parser.tags.count("script") == 2 and parser.tags.count("style") == 1
    assert "b" not in parser.tags[: parser.tags.index("script")]
    assert page.count("</script>") == 2
    # Offline: nothing to fetch (the SVG namespace URI is a name, never loaded).
    for name, value in parser.attrs:
        assert name not in ("src", "href"), (name, value)
    assert "url(" not in page and "@import" not in page and "<link" not in page
    assert "default-src 'none'" in page  # and the browser is told to refuse any fetch
    data = page_data(page)
    (state,) = data["states"]
    titles = {data["details"][i]["title"] for i in state["nodes"].values()}
    assert titles == {evil_graph().nodes[0].name, "MulBackward0", "w", "w</b>"}
    mul = data["details"][state["nodes"]["n1"]]
    assert ["source", "</style>.py:3"] in mul["rows"]
    assert ["grad in", "[2] float32, [1., nan], nan 1 inf 0"] in mul["rows"]
    assert mul["saved"] == [["self", "[2]"]]
    assert all(f'<g id="{n.id}" class="node">' in state["svg"] for n in evil_graph().nodes)


@needs_dot
def test_render_html_from_graph_and_trace(tmp_path: Path) -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    g = gradlens.graph((x * 3).sum())
    written = g.render(tmp_path / "g.html")
    assert written.format == "html" and written.path == tmp_path / "g.html"
    data = page_data(written.path.read_text(encoding="utf-8"))
    assert data["states"][0]["count"] == len(g.nodes)

    model, inputs, loss_fn = mlp_step(batch=4, width=8, depth=2)
    with gradlens.trace(model) as t:
        loss_fn(model, *inputs).backward()
    page = t.render(tmp_path / "t.html").path.read_text(encoding="utf-8")
    names = {d["title"] for d in page_data(page)["details"]}
    assert "0.weight" in names or any("weight" in n for n in names)


def test_without_dot_the_page_says_to_install_graphviz(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(graphviz, "find_dot", lambda: None)
    monkeypatch.setattr("gradlens.render.html.find_dot", lambda: None)
    with pytest.raises(GradlensError, match="apt-get install graphviz"):
        evil_graph().render(tmp_path / "g.html")
    assert not (tmp_path / "g.html").exists()


# ---------------------------------------------------------------------------- in a browser
def mlp_trace() -> Any:
    model, inputs, loss_fn = mlp_step(batch=4, width=8, depth=2)
    with gradlens.trace(model) as t:
        loss_fn(model, *inputs).backward()
    return t


def open_page(browser: Browser, page: Path) -> dict[str, Any]:
    browser.open(page.as_uri())
    return page_data(page.read_text(encoding="utf-8"))


def drawn_ids(browser: Browser) -> list[str]:
    return browser.js("Array.from(document.querySelectorAll('#view g.node')).map(g => g.id)")


def panel(browser: Browser) -> dict[str, Any]:
    """Returns the details panel as the user reads it: title, kind, rows, buttons, notes."""
    return browser.js(
        """(() => { const p = document.getElementById('details');
        const rows = (t) => t ? Array.from(t.rows).map(r => [r.cells[0].textContent,
                                                           r.cells[1].textContent]) : [];
        const tables = p.querySelectorAll('table.facts');
        return { title: (p.querySelector('h2') || {}).textContent || null,
                 kind: (p.querySelector('.kind') || {}).textContent || null,
                 rows: rows(tables[0]), saved: rows(p.querySelector('h3') ? tables[1] : null),
                 buttons: Array.from(p.querySelectorAll('button')).map(b => b.textContent),
                 why: (p.querySelector('.why') || {}).textContent || null }; })()"""
    )


def view_box(browser: Browser) -> list[float]:
    return browser.js(
        "(() => { const b = document.querySelector('#view svg').viewBox.baseVal;"
        " return [b.x, b.y, b.width, b.height]; })()"
    )


@needs_dot
@needs_chromium
def test_page_search_click_pan_zoom_in_chromium(browser: Browser, tmp_path: Path) -> None:
    t = mlp_trace()
    page = t.render(tmp_path / "mlp.html").path
    data = open_page(browser, page)
    assert sorted(drawn_ids(browser)) == sorted(n.id for n in t.graph.nodes)
    count = browser.js("document.getElementById('count').textContent")
    assert count == f"{len(t.graph.nodes)} nodes"

    # Search: every ReluBackward0 is highlighted, the first is centred and its details shown.
    relus = [n for n in t.graph.nodes if n.name == "ReluBackward0"]
    assert len(relus) == 2
    browser.type("#search", "relubackward")
    assert browser.js("document.getElementById('hits').textContent") == "1 of 2 matches"
    hits = browser.js("Array.from(document.querySelectorAll('#view g.node.hit')).map(g => g.id)")
    assert sorted(hits) == sorted(n.id for n in relus)
    shown = panel(browser)
    assert shown["title"] == "ReluBackward0" and shown["kind"] == "op"
    assert ["op", "relu"] in shown["rows"] and ["id", hits[0]] in shown["rows"]
    browser.press("Enter")  # the next match
    assert ["id", hits[1]] in panel(browser)["rows"]
    assert browser.js("document.getElementById('hits').textContent") == "2 of 2 matches"
    browser.js("document.getElementById('fit').click()")

    # A real mouse click on a parameter: its shape and its .grad statistics.
    leaf = next(n for n in t.graph.nodes if n.name == "0.weight")
    assert leaf.grad is not None and leaf.grad.norm is not None
    browser.click_node(leaf.id)
    shown = panel(browser)
    assert shown["title"] == "0.weight" and shown["kind"] == "leaf"
    rows = dict(shown["rows"])
    assert rows["shape"] == "[8, 64]"
    assert rows[".grad"].startswith("[8, 64] float32, norm ")
    assert f"norm {leaf.grad.norm:.4g}" in rows[".grad"]
    # An op: the tensors it saved for backward, from the record.
    addmm = next(n for n in t.graph.nodes if n.name == "AddmmBackward0" and n.module)
    browser.click_node(addmm.id)
    saved = [t.graph.node(e.src) for e in t.graph.edges if e.dst == addmm.id and e.kind == "saved"]
    assert saved and panel(browser)["saved"] == [
        [s.saved_as, f"{format_shape(s.shape)} freed"] for s in saved
    ]

    # Zoom with the wheel around the pointer, drag to pan, Fit to get the whole graph back.
    home = view_box(browser)
    browser.send(
        "Input.dispatchMouseEvent",
        {"type": "mouseWheel", "x": 400, "y": 400, "deltaX": 0, "deltaY": -400},
    )
    zoomed = view_box(browser)
    assert zoomed[2] < home[2] * 0.7 and zoomed[3] < home[3] * 0.7
    for kind, x in (("mousePressed", 400), ("mouseMoved", 300), ("mouseReleased", 300)):
        browser.send(
            "Input.dispatchMouseEvent",
            {"type": kind, "x": x, "y": 400, "button": "left", "buttons": 1, "clickCount": 1},
        )
    panned = view_box(browser)
    assert panned[0] > zoomed[0] and panned[2] == pytest.approx(zoomed[2])
    browser.js("document.getElementById('fit').click()")
    assert view_box(browser) == pytest.approx(home)
    assert data["states"][0]["count"] == len(t.graph.nodes)


@needs_dot
@needs_chromium
def test_a_name_that_closes_script_is_shown_as_text(browser: Browser, tmp_path: Path) -> None:
    page = tmp_path / "evil.html"
    page.write_text(to_html(evil_graph(), title="<b>evil</b>"), encoding="utf-8")
    open_page(browser, page)
    assert browser.js("document.title") == "<b>evil</b>"  # no script of the name's ran
    browser.click_node("n0")
    assert panel(browser)["title"] == evil_graph().nodes[0].name
    assert browser.js("document.scripts.length") == 2


# ---------------------------------------------------------------------------- the CLI
@needs_dot
def test_cli_run_example_writes_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "page.html"
    assert main(["run", "backward", "--html", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    data = page_data(target.read_text(encoding="utf-8"))
    assert {d["title"] for d in data["details"]} >= {"w", "MulBackward0"}


def test_cli_html_is_refused_before_running_when_it_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["run", "backward", "--html", str(tmp_path / "page.svg")]) == 2
    assert "--html takes a path ending in .html" in capsys.readouterr().out
    assert main(["run", "forgot-zero-grad", "--html", str(tmp_path / "p.html")]) == 2
    assert "--html is not available for example 'forgot-zero-grad'" in capsys.readouterr().out
    monkeypatch.setattr("gradlens.cli.find_dot", lambda: None)
    assert main(["run", "backward", "--html", str(tmp_path / "p.html")]) == 2
    out = capsys.readouterr().out
    assert "--html: the HTML page draws its graph with Graphviz's 'dot'" in out
    assert "backward()" not in out  # refused before the example ran
    assert not (tmp_path / "p.html").exists()


def gpt2_trace() -> Any:
    """A two-block GPT-2 (tiny sizes): its auto view folds the blocks into one node ×2."""
    model, inputs, loss_fn = gpt2_step(vocab=50, seq=6, layers=2, d=16, heads=2, ctx=8)
    with gradlens.trace(model) as t:
        loss_fn(model, *inputs).backward()
    return t


def click_button(browser: Browser, text: str) -> None:
    """Clicks the details panel's button labelled ``text`` with the mouse."""
    where = browser.js(
        "(() => { const b = Array.from(document.querySelectorAll('#details button'))"
        f".find(b => b.textContent === {json.dumps(text)});"
        " if (!b) return null; const r = b.getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )
    assert where is not None, (text, panel(browser)["buttons"])
    browser.click(*where)


def drawn_records(browser: Browser) -> set[str]:
    """Returns the record ids drawn now (the DOT's note box is not a record)."""
    return set(drawn_ids(browser)) - {"gradlens_notes"}


@needs_dot
@needs_chromium
def test_page_expands_and_collapses_modules_in_chromium(browser: Browser, tmp_path: Path) -> None:
    t = gpt2_trace()
    g = t.graph
    start = g.view(depth="auto", fold=True)
    assert not any("at depth" in n for n in start.notes)  # nothing collapsed: only the fold
    run = next(n for n in start.nodes if n.count > 1)
    assert run.id == "m:transformer.h.0" and run.instances == ("transformer.h.0", "transformer.h.1")
    page = tmp_path / "gpt2.html"
    page.write_text(to_html(g, max_states=6), encoding="utf-8")
    open_page(browser, page)

    def count() -> int:
        text = browser.js("document.getElementById('count').textContent")
        return int(text.split()[0])

    assert drawn_records(browser) == {n.id for n in start.nodes} and count() == len(start.nodes)

    # The folded run: its instances and their gradient norms, and a button to unfold it.
    browser.click_node(run.id)
    shown = panel(browser)
    assert shown["title"] == run.name and "Unfold ×2" in shown["buttons"]
    assert dict(shown["rows"])["repeats"] == "×2"
    click_button(browser, "Unfold ×2")
    unfolded = g.view(fold=True, expand=("transformer.h.0",))
    assert drawn_records(browser) == {n.id for n in unfolded.nodes}
    assert count() == len(unfolded.nodes) > len(start.nodes)
    assert "unfolded transformer.h.0 ×2" in browser.js(
        "document.getElementById('state').textContent"
    )

    # Block 1 was left out of this small page's budget: the page says how to see it.
    browser.click_node("m:transformer.h.1")
    assert "Expand" not in panel(browser)["buttons"]
    assert 'g.view(module="transformer.h.1")' in panel(browser)["why"]

    # Open block 0: its submodules appear; search finds its attention module.
    browser.click_node("m:transformer.h.0")
    click_button(browser, "Expand")
    opened = g.view(fold=True, expand=("transformer.h.0", "transformer.h.0"))
    assert drawn_records(browser) == {n.id for n in opened.nodes}
    assert "m:transformer.h.0.attn" in drawn_records(browser)
    browser.type("#search", "h.0.attn")
    assert ["id", "m:transformer.h.0.attn"] in panel(browser)["rows"]

    # Collapse block 0 from a node inside it, go Back, then fold the run again.
    assert set(panel(browser)["buttons"]) >= {"Collapse transformer.h.0", "Fold transformer.h.0 ×2"}
    click_button(browser, "Collapse transformer.h.0")
    assert drawn_records(browser) == {n.id for n in unfolded.nodes}
    browser.js("document.getElementById('back').click()")
    assert drawn_records(browser) == {n.id for n in opened.nodes}
    browser.click_node("m:transformer.h.0.attn")
    click_button(browser, "Fold transformer.h.0 ×2")
    assert drawn_records(browser) == {n.id for n in start.nodes} and count() == len(start.nodes)


@needs_dot
def test_a_users_view_is_drawn_as_given_and_says_where_to_see_more() -> None:
    g = gpt2_trace().graph
    mine = g.view(depth=1)
    data = page_data(to_html(mine))
    (state,) = data["states"]
    assert set(state["nodes"]) == {n.id for n in mine.nodes}
    action = state["actions"]["m:transformer"]
    assert "expand" not in action
    assert 'g.view(module="transformer")' in action["why"]
