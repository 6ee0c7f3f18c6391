// munggoggo gateway dashboard: a finite-state machine drawn two ways from its describe()
// (`states`, `transitions` as [[source, dest], ...], `initial_state`, `current_state`):
// `fsmGraph()` an inline SVG (our own layered layout, no library) and `fsmMermaid()` the
// Mermaid `stateDiagram-v2` text that FSMBehaviour.to_mermaid() writes (core/mermaid.py).
// Plain browser JavaScript; shares the page's top-level names (classic scripts).
"use strict";

// The SVG namespace is a name, not an address: nothing is fetched from it.
const SVG_NS = "http://www.w3.org/2000/svg";

const GRAPH = {
  nodeHeight: 34,
  rowGap: 26, // between the nodes of one layer
  layerGap: 74, // between layers, room for the arrows
  charWidth: 7.6, // a generous estimate at 13px: the SVG is built before it is measured
  nodePad: 28,
  margin: 12,
  start: 34, // room left of the first layer for the start marker
  loop: 30, // height of a self-transition's loop
  arrow: 8,
  scale: 1.2, // drawn a little larger than the units above
};

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) if (child != null) node.append(child);
  return node;
}

// A state name as drawn: a string, or a number or boolean as its text; anything else
// (null, an object) is no name, null.
function stateName(value) {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return null;
}

// describe() as both drawings read it, whatever an agent sent: names as strings (bad ones
// left out, each once), transitions only as pairs of listed names. One malformed entry must
// not stop the whole detail from rendering.
function cleanFsm(fsm) {
  const states = [];
  for (const value of Array.isArray(fsm?.states) ? fsm.states : []) {
    const name = stateName(value);
    if (name !== null && !states.includes(name)) states.push(name);
  }
  const transitions = [];
  for (const pair of Array.isArray(fsm?.transitions) ? fsm.transitions : []) {
    if (!Array.isArray(pair) || pair.length !== 2) continue;
    const [src, dst] = pair.map(stateName);
    if (states.includes(src) && states.includes(dst)) transitions.push([src, dst]);
  }
  const named = (value) => (value == null ? null : stateName(value));
  return {
    name: typeof fsm?.name === "string" ? fsm.name : "",
    states,
    transitions,
    initial_state: named(fsm?.initial_state),
    current_state: named(fsm?.current_state),
  };
}

// Layers by breadth-first distance from the initial state; states it never reaches come
// after, each group from its first state. Returns name -> layer index.
function layers(states, transitions, initial) {
  const next = new Map(states.map((s) => [s, []]));
  for (const [src, dst] of transitions) if (src !== dst && next.has(src)) next.get(src).push(dst);
  const layer = new Map();
  let deepest = -1;
  const walk = (root, base) => {
    layer.set(root, base);
    const queue = [root];
    while (queue.length) {
      const state = queue.shift();
      deepest = Math.max(deepest, layer.get(state));
      for (const dst of next.get(state) || []) {
        if (!layer.has(dst) && next.has(dst)) {
          layer.set(dst, layer.get(state) + 1);
          queue.push(dst);
        }
      }
    }
  };
  if (initial != null && next.has(initial)) walk(initial, 0);
  for (const state of states) if (!layer.has(state)) walk(state, deepest + 1);
  return layer;
}

// Where the line from a node's centre towards (x, y) leaves its box.
function border(node, x, y) {
  const dx = x - node.cx;
  const dy = y - node.cy;
  if (!dx && !dy) return { x: node.cx, y: node.cy };
  const t = Math.min(
    dx ? node.w / 2 / Math.abs(dx) : Infinity,
    dy ? node.h / 2 / Math.abs(dy) : Infinity
  );
  return { x: node.cx + dx * t, y: node.cy + dy * t };
}

// A filled arrowhead at (x, y) pointing along (x - fromX, y - fromY).
function arrowHead(x, y, fromX, fromY, className) {
  const angle = Math.atan2(y - fromY, x - fromX);
  const size = GRAPH.arrow;
  const wing = (turn) =>
    `${x - size * Math.cos(angle + turn)},${y - size * Math.sin(angle + turn)}`;
  return svg("polygon", { class: className, points: `${x},${y} ${wing(0.45)} ${wing(-0.45)}` });
}

// The path and arrowhead of one transition, and the highest and lowest y it reaches.
function edgeElements(a, b, curved, bend) {
  if (a === b) {
    // A self-transition: a loop over the top of the node.
    const top = a.cy - a.h / 2;
    const x1 = a.cx - a.w * 0.2;
    const x2 = a.cx + a.w * 0.2;
    const up = top - GRAPH.loop;
    return {
      elements: [
        svg("path", {
          class: "fsm-edge",
          d: `M${x1},${top} C${x1 - 8},${up} ${x2 + 8},${up} ${x2},${top}`,
        }),
        arrowHead(x2, top, x2 + 8, up, "fsm-arrow"),
      ],
      ys: [top - GRAPH.loop * 0.75],
    };
  }
  if (!curved) {
    const from = border(a, b.cx, b.cy);
    const to = border(b, a.cx, a.cy);
    return {
      elements: [
        svg("path", { class: "fsm-edge", d: `M${from.x},${from.y} L${to.x},${to.y}` }),
        arrowHead(to.x, to.y, from.x, from.y, "fsm-arrow"),
      ],
      ys: [],
    };
  }
  // A curve bent to the left of its direction: the two arrows of a pair (a -> b, b -> a)
  // bend apart, and an arrow back over several layers passes below the nodes between.
  const mx = (a.cx + b.cx) / 2;
  const my = (a.cy + b.cy) / 2;
  const length = Math.hypot(b.cx - a.cx, b.cy - a.cy) || 1;
  const cx = mx + ((b.cy - a.cy) / length) * bend;
  const cy = my - ((b.cx - a.cx) / length) * bend;
  const from = border(a, cx, cy);
  const to = border(b, cx, cy);
  return {
    elements: [
      svg("path", { class: "fsm-edge", d: `M${from.x},${from.y} Q${cx},${cy} ${to.x},${to.y}` }),
      arrowHead(to.x, to.y, cx, cy, "fsm-arrow"),
    ],
    ys: [(from.y + 2 * cy + to.y) / 4], // the curve's middle: as far as it goes
  };
}

// The state graph of an FSM (its describe()) as an <svg>: a node per state (the current
// one with class "current"), an arrow per transition, a start marker at the initial state.
// Layers left to right by distance from the initial state, the states of a layer stacked.
function fsmGraph(described) {
  const fsm = cleanFsm(described);
  const { states, transitions } = fsm;
  const layerOf = layers(states, transitions, fsm.initial_state);
  const columns = [];
  for (const state of states) (columns[layerOf.get(state)] ||= []).push(state);
  const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const span = rows * GRAPH.nodeHeight + (rows - 1) * GRAPH.rowGap;

  const nodes = new Map();
  let x = GRAPH.start;
  for (const column of columns) {
    if (!column) continue;
    const width = Math.max(...column.map((s) => s.length * GRAPH.charWidth + GRAPH.nodePad));
    const height = column.length * GRAPH.nodeHeight + (column.length - 1) * GRAPH.rowGap;
    column.forEach((state, i) => {
      const w = state.length * GRAPH.charWidth + GRAPH.nodePad;
      const cy =
        (span - height) / 2 + i * (GRAPH.nodeHeight + GRAPH.rowGap) + GRAPH.nodeHeight / 2;
      nodes.set(state, { name: state, cx: x + width / 2, cy, w, h: GRAPH.nodeHeight });
    });
    x += width + GRAPH.layerGap;
  }
  const right = Math.max(x - GRAPH.layerGap, 100);

  const pairs = new Set(transitions.map(([src, dst]) => `${src}\u0000${dst}`));
  let top = 0;
  let bottom = span;
  const edges = transitions.flatMap(([src, dst]) => {
    const skip = Math.abs(layerOf.get(dst) - layerOf.get(src));
    const back = layerOf.get(dst) <= layerOf.get(src);
    const paired = pairs.has(`${dst}\u0000${src}`);
    const sameColumn = skip === 0;
    const bend = paired && skip === 1 ? 16 : 18 + 14 * skip + (sameColumn ? 18 : 0);
    const curved = src !== dst && (back || paired || skip > 1);
    const edge = edgeElements(nodes.get(src), nodes.get(dst), curved, bend);
    for (const y of edge.ys) {
      top = Math.min(top, y);
      bottom = Math.max(bottom, y);
    }
    return edge.elements;
  });

  const drawn = states.map((state) => {
    const node = nodes.get(state);
    const current = state === fsm.current_state;
    const classes = ["fsm-node"];
    if (current) classes.push("current");
    if (state === fsm.initial_state) classes.push("initial");
    return svg(
      "g",
      { class: classes.join(" "), "data-state": state },
      svg("title", {}, current ? `${state} (current)` : state),
      svg("rect", {
        x: node.cx - node.w / 2,
        y: node.cy - node.h / 2,
        width: node.w,
        height: node.h,
        rx: 14,
      }),
      svg("text", { x: node.cx, y: node.cy, "text-anchor": "middle", dy: "0.35em" }, state)
    );
  });

  const start = [];
  const first = nodes.get(fsm.initial_state);
  if (first) {
    const sx = first.cx - first.w / 2 - GRAPH.start + 6;
    const end = first.cx - first.w / 2;
    start.push(
      svg("circle", { class: "fsm-start", cx: sx, cy: first.cy, r: 6 }),
      svg("path", { class: "fsm-edge", d: `M${sx + 6},${first.cy} L${end},${first.cy}` }),
      arrowHead(end, first.cy, sx, first.cy, "fsm-arrow")
    );
  }

  const m = GRAPH.margin;
  const width = Math.ceil(right + 2 * m);
  const height = Math.ceil(bottom - top + 2 * m);
  return svg(
    "svg",
    {
      class: "fsm-graph",
      viewBox: `${-m} ${Math.floor(top - m)} ${width} ${height}`,
      width: Math.ceil(width * GRAPH.scale),
      height: Math.ceil(height * GRAPH.scale),
      role: "img",
      "aria-label": `states of ${fsm.name || "the FSM"}, current ${fsm.current_state ?? "none"}`,
    },
    ...edges,
    ...start,
    ...drawn
  );
}

// ---------------------------------------------------------------- Mermaid text
//
// The rules of core/mermaid.py, so the text here is the one FSMBehaviour.to_mermaid() gives:
// a state keeps its name as id when Mermaid allows, else it is a quoted label on `s<index>`.

const MERMAID_INDENT = "    ";
const MERMAID_IDENTIFIER = /^[A-Za-z][A-Za-z0-9_]*$/;
// Words a stateDiagram reads as its own syntax: a state so named gets a generated id.
const MERMAID_KEYWORDS = new Set(
  (
    "accdescr acctitle as choice class classdef click concurrent default direction empty end " +
    "fork hide href join left note of over right scale state statediagram style"
  ).split(" ")
);
const MERMAID_CURRENT_STYLE = "classDef current stroke-width:3px,font-weight:bold";

function mermaidLabel(text) {
  return text
    .replaceAll("#", "#35;")
    .replaceAll('"', "#quot;")
    .replaceAll("<", "#lt;")
    .replaceAll(">", "#gt;");
}

function mermaidIds(states) {
  const plain = new Set(
    states.filter((n) => MERMAID_IDENTIFIER.test(n) && !MERMAID_KEYWORDS.has(n.toLowerCase()))
  );
  const ids = new Map();
  states.forEach((name, i) => {
    let id = plain.has(name) ? name : `s${i}`;
    while (id !== name && plain.has(id)) id += "_"; // a state may be called "s1" itself
    ids.set(name, id);
  });
  return ids;
}

// The `stateDiagram-v2` source of an FSM's describe(), one statement a line.
function fsmMermaid(described) {
  const fsm = cleanFsm(described);
  const states = fsm.states;
  const ids = mermaidIds(states);
  const lines = ["stateDiagram-v2"];
  for (const [name, id] of ids) {
    lines.push(
      id === name
        ? MERMAID_INDENT + id
        : `${MERMAID_INDENT}state "${mermaidLabel(name)}" as ${id}`
    );
  }
  if (fsm.initial_state != null && ids.has(fsm.initial_state)) {
    lines.push(`${MERMAID_INDENT}[*] --> ${ids.get(fsm.initial_state)}`);
  }
  for (const [src, dst] of fsm.transitions) {
    if (ids.has(src) && ids.has(dst)) {
      lines.push(`${MERMAID_INDENT}${ids.get(src)} --> ${ids.get(dst)}`);
    }
  }
  if (fsm.current_state != null && ids.has(fsm.current_state)) {
    lines.push(MERMAID_INDENT + MERMAID_CURRENT_STYLE);
    lines.push(`${MERMAID_INDENT}class ${ids.get(fsm.current_state)} current`);
  }
  return lines.join("\n");
}
