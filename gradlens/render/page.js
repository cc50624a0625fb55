// gradlens interactive page: pan/zoom, search, node details, expand/collapse of modules.
// Plain browser JavaScript, no framework, no network. The data (one SVG per precomputed view,
// node details, what each node's buttons lead to) is the JSON in <script id="gradlens-data">.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("gradlens-data").textContent);
  const $ = (id) => document.getElementById(id);
  const view = $("view"), panel = $("details"), search = $("search");
  let current = 0;        // index of the state on screen
  let history = [];       // states to go back to
  let svg = null, box = null, home = null;  // the svg, its viewBox now, and the fitted one
  let hits = [], hit = -1, selected = null;

  // ------------------------------------------------------------------ showing a state
  function show(index, focusPaths) {
    current = index;
    const state = data.states[index];
    const doc = new DOMParser().parseFromString(state.svg, "image/svg+xml");
    svg = document.importNode(doc.documentElement, true);
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.querySelectorAll("title").forEach((t) => t.remove());  // Graphviz's: ids as tooltips
    view.replaceChildren(svg);
    const vb = svg.viewBox.baseVal;
    home = { x: vb.x, y: vb.y, w: vb.width, h: vb.height };
    $("count").textContent = plural(state.count, "node");
    $("state").textContent = state.label;
    $("state").title = state.label;
    $("back").disabled = history.length === 0;
    // Notes: what the view collapsed and how to open it; the first one, the rest on a click.
    const notes = $("notes");
    const [first, ...rest] = state.notes;
    if (rest.length) {
      const more = el("details");
      more.append(el("summary", "", `${first}  (+${rest.length} more)`), ...rest.map((n) => el("div", "note", n)));
      notes.replaceChildren(more);
    } else {
      notes.replaceChildren(...state.notes.map((n) => el("div", "note", n)));
    }
    notes.hidden = state.notes.length === 0;
    fit();
    const keep = selected && state.nodes[selected] !== undefined ? selected : null;
    select(keep);
    runSearch(false);
    if (focusPaths) focusModules(focusPaths);
  }

  function nodes() { return svg ? Array.from(svg.querySelectorAll("g.node")) : []; }
  function nodeEl(id) { return nodes().find((g) => g.id === id) || null; }

  function go(index, focusPaths) {
    if (index === current) return;
    history.push(current);
    show(index, focusPaths);
  }

  function back() {
    if (history.length) show(history.pop());
  }

  // After an expand: mark the nodes that came out of the module(s), centre on the first.
  function focusModules(paths) {
    const state = data.states[current];
    const within = (m) => paths.some((p) => m === p || m.startsWith(p + "."));
    const inside = nodes().filter((g) => {
      const d = data.details[state.nodes[g.id]];
      return d && d.module && within(d.module);
    });
    inside.forEach((g) => g.classList.add("opened"));
    if (inside.length) centre(inside[0]);
  }

  // ------------------------------------------------------------------ pan and zoom
  function setBox(b) {
    box = b;
    svg.setAttribute("viewBox", `${b.x} ${b.y} ${b.w} ${b.h}`);
  }

  function fit() { setBox({ ...home }); }

  function toUser(clientX, clientY) {
    const p = svg.createSVGPoint();
    p.x = clientX; p.y = clientY;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  }

  function zoom(factor, clientX, clientY) {
    const p = toUser(clientX, clientY);
    const w = Math.min(Math.max(box.w * factor, home.w / 200), home.w * 4);
    const f = w / box.w;
    setBox({ x: p.x - (p.x - box.x) * f, y: p.y - (p.y - box.y) * f, w: box.w * f, h: box.h * f });
  }

  view.addEventListener("wheel", (e) => {
    if (!svg) return;
    e.preventDefault();
    zoom(Math.exp(e.deltaY * 0.0015), e.clientX, e.clientY);
  }, { passive: false });

  let drag = null;
  view.addEventListener("pointerdown", (e) => {
    if (!svg || e.button !== 0) return;
    drag = { x: e.clientX, y: e.clientY, box: { ...box }, scale: svg.getScreenCTM().a, moved: false };
    view.setPointerCapture(e.pointerId);
  });
  view.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    if (drag.moved) {
      view.classList.add("dragging");
      setBox({ ...drag.box, x: drag.box.x - dx / drag.scale, y: drag.box.y - dy / drag.scale });
    }
  });
  view.addEventListener("pointerup", (e) => {
    const wasClick = drag && !drag.moved;
    drag = null;
    view.classList.remove("dragging");
    if (!wasClick) return;
    const g = document.elementFromPoint(e.clientX, e.clientY);
    const node = g && g.closest("g.node");
    select(node ? node.id : null);
  });

  // Centre one node, zooming in when the whole graph is too small to read it.
  function centre(g) {
    const b = g.getBBox();
    const m = g.parentNode.transform.baseVal.consolidate();
    const p = svg.createSVGPoint();
    p.x = b.x + b.width / 2; p.y = b.y + b.height / 2;
    const c = m ? p.matrixTransform(m.matrix) : p;
    const w = Math.min(box.w, Math.max(b.width * 5, 400));
    const h = box.h * (w / box.w);
    setBox({ x: c.x - w / 2, y: c.y - h / 2, w, h });
  }

  // ------------------------------------------------------------------ search
  function runSearch(jump) {
    const q = search.value.trim().toLowerCase();
    for (const g of nodes()) g.classList.remove("hit");
    hits = [];
    if (q) {
      const state = data.states[current];
      hits = nodes().filter((g) => {
        const d = data.details[state.nodes[g.id]];
        return d && d.search.includes(q);
      });
      hits.forEach((g) => g.classList.add("hit"));
    }
    hit = -1;
    $("hits").textContent = q ? (hits.length ? plural(hits.length, "match", "matches") : "no match in this view") : "";
    if (jump) next();
  }

  function next() {
    if (!hits.length) return;
    hit = (hit + 1) % hits.length;
    centre(hits[hit]);
    select(hits[hit].id);
    $("hits").textContent = `${hit + 1} of ${plural(hits.length, "match", "matches")}`;
  }

  search.addEventListener("input", () => runSearch(true));
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); next(); }
    if (e.key === "Escape") { search.value = ""; runSearch(false); }
  });

  // ------------------------------------------------------------------ details panel
  function select(id) {
    if (selected) { const old = nodeEl(selected); if (old) old.classList.remove("sel"); }
    selected = id;
    const state = data.states[current];
    if (id === null || state.nodes[id] === undefined) {
      selected = null;
      panel.replaceChildren(el("p", "hint", "Click a node to see its op, source line, shapes, saved tensors and gradients."));
      return;
    }
    const g = nodeEl(id);
    if (g) g.classList.add("sel");
    const d = data.details[state.nodes[id]];
    const parts = [el("h2", "", d.title), el("div", "kind " + d.kind, d.kind)];
    parts.push(...actions(state.actions[id] || {}));
    parts.push(table(d.rows));
    if (d.saved.length) {
      parts.push(el("h3", "", "saved for backward"));
      parts.push(table(d.saved));
    }
    if (d.instances.length) {
      parts.push(el("h3", "", "instances (gradient norm)"));
      parts.push(table(d.instances));
    }
    panel.replaceChildren(...parts);
  }

  function actions(a) {
    const out = [];
    if (a.expand !== undefined) {
      const label = a.count > 1 ? `Unfold ×${a.count}` : "Expand";
      out.push(button(label, () => go(a.expand, a.opens)));
    }
    for (const [text, index] of a.collapse || []) out.push(button(text, () => go(index)));
    const bar = el("div", "actions");
    bar.replaceChildren(...out);
    const result = out.length ? [bar] : [];
    if (a.why) result.push(el("p", "why", a.why));
    return result;
  }

  function table(rows) {
    const t = el("table", "facts");
    for (const [k, v] of rows) {
      const tr = document.createElement("tr");
      tr.append(el("th", "", k), el("td", "", v));
      t.append(tr);
    }
    return t;
  }

  function button(text, onClick) {
    const b = el("button", "", text);
    b.addEventListener("click", onClick);
    return b;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function plural(n, one, many) { return `${n} ${n === 1 ? one : (many || one + "s")}`; }

  // ------------------------------------------------------------------ wiring
  $("fit").addEventListener("click", fit);
  $("back").addEventListener("click", back);
  document.addEventListener("keydown", (e) => {
    if (e.target === search) return;
    if (e.key === "/") { e.preventDefault(); search.focus(); }
    else if (e.key === "Backspace") back();
    else if (e.key === "f") fit();
  });
  show(0);
  document.body.dataset.ready = "1";
})();
