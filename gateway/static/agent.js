// munggoggo gateway dashboard: the detail of one agent, opened by clicking it in the list
// (dashboard.js sends `mg:open-agent`). Its counters and connection (`GET agents/{id}`, the
// agent's status()), its behaviours with start/stop, each FSM behaviour's states as a graph
// and as Mermaid text (fsmgraph.js), and its recent traffic (the `traces` control method)
// filterable by direction, kind and peer; and the behaviour table the list draws too. Refreshed on demand, not polled. Plain browser
// JavaScript; shares the page's top-level names (classic scripts).
"use strict";

const TRACE_LIMIT = 200; // records asked of the agent's trace ring
const COUNTERS = [
  ["published", "published"],
  ["consumed", "consumed"],
  ["rpc_served", "RPC served"],
  ["dead_lettered", "dead-lettered"],
  ["returned", "returned"],
];

const detail = {
  identity: null, // the agent shown, or null
  status: null, // its status() answer
  traces: [], // its trace records, newest first
  gone: false, // its presence said it stopped
  pending: false, // a start or stop of one of its behaviours was running at the last redraw
  entry: null, // the list's entry for it last taken in (dashboard.js replaces it when newer)
  request: 0, // the latest load: an older answer that arrives late is dropped
};

function openDetail(identity) {
  const changed = detail.identity !== identity;
  detail.identity = identity;
  detail.entry = agents.list.find((a) => a.identity === identity) || null;
  detail.gone = agents.gone.has(identity);
  if (changed) {
    detail.status = null;
    detail.traces = [];
    $("trace-peer").value = "";
    $("trace-kind").value = "";
    $("trace-direction").value = "";
  }
  $("agent-detail").hidden = false;
  $("detail-identity").textContent = identity;
  markSelected();
  renderDetail();
  renderTraces();
  loadDetail();
  $("agent-detail").scrollIntoView({ block: "start" });
}

function closeDetail() {
  detail.identity = null;
  $("agent-detail").hidden = true;
  markSelected();
}

async function loadDetail() {
  const identity = detail.identity;
  if (!identity) return;
  const request = ++detail.request;
  const path = `agents/${encodeURIComponent(identity)}`;
  $("detail-note").textContent = "loading…";
  const [status, traces] = await Promise.allSettled([
    api(path),
    api(`${path}/call/traces`, { method: "POST", body: [TRACE_LIMIT] }),
  ]);
  if (request !== detail.request || identity !== detail.identity) return;
  const problems = [];
  if (status.status === "fulfilled") {
    detail.status = status.value;
    detail.gone = false;
  } else {
    problems.push(`status: ${status.reason.message}`);
  }
  if (traces.status === "fulfilled") {
    detail.traces = Array.isArray(traces.value) ? [...traces.value].reverse() : [];
  } else {
    problems.push(`traces: ${traces.reason.message}`);
  }
  const now = new Date().toLocaleTimeString();
  $("detail-note").textContent = problems.length ? problems.join("; ") : `as of ${now}`;
  renderDetail();
  renderTraces();
}

// ---------------------------------------------------------------- summary

function renderDetail() {
  const info = detail.status;
  const state = detail.gone ? "stopped" : info?.state || "…";
  const pill = $("detail-state");
  pill.dataset.state = state;
  pill.textContent = state;
  $("agent-detail").dataset.detail = detail.identity || "";
  $("detail-counters").replaceChildren(...(info ? counterFigures(info) : []));
  const behaviours = info?.behaviours || [];
  $("detail-behaviours").replaceChildren(
    behaviours.length
      ? behaviourTable(detail.identity, behaviours)
      : el("p", { className: "empty", text: info ? "no behaviours" : "" })
  );
  $("detail-fsms").replaceChildren(...behaviours.filter((b) => b.kind === "fsm").map(fsmCard));
}

function counterFigures(info) {
  const counters = info.counters || {};
  const figure = (key, value, label) =>
    el(
      "div",
      { "data-counter": key },
      el("span", { className: "figure", text: value }),
      el("span", { className: "label", text: label })
    );
  const connected = info.connected ? "yes" : "no";
  return [
    figure("uptime", formatUptime(info.uptime), "uptime"),
    figure("connected", info.connected === undefined ? "?" : connected, "connected"),
    ...COUNTERS.map(([key, label]) => figure(key, formatCount(counters[key]), label)),
    figure("pending_calls", formatCount(info.pending_calls), "calls waiting"),
    figure("unconfirmed", formatCount(info.unconfirmed), "unconfirmed"),
    figure("reconnects", formatCount(info.reconnects), "reconnects"),
  ];
}

function formatCount(value) {
  return typeof value === "number" ? value.toLocaleString() : "?";
}

function formatUptime(seconds) {
  if (typeof seconds !== "number") return "?";
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function fsmCard(behaviour) {
  const mermaid = fsmMermaid(behaviour);
  const code = el("pre", { className: "mermaid-source", text: mermaid });
  const copy = el("button", {
    type: "button",
    className: "ghost",
    text: "Copy",
    "aria-label": `copy the Mermaid source of ${behaviour.name}`,
  });
  copy.addEventListener("click", () => copyText(mermaid, code));
  const states = (behaviour.states || []).length;
  return el(
    "article",
    { className: "fsm", "data-fsm": behaviour.name },
    el(
      "div",
      { className: "fsm-head" },
      el("h3", { text: behaviour.name }),
      el("span", {
        className: "muted",
        text: `${states} states, current `,
      }),
      el("span", { className: "current-state", text: behaviour.current_state ?? "none" })
    ),
    el(
      "div",
      { className: "fsm-body" },
      el("div", { className: "fsm-graph-wrap" }, fsmGraph(behaviour)),
      el(
        "div",
        { className: "mermaid" },
        el("div", { className: "mermaid-head" }, el("span", { className: "muted", text: "Mermaid" }), copy),
        code
      )
    )
  );
}

async function copyText(text, shown) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Mermaid source copied");
    return;
  } catch (_) {
    /* no clipboard permission (or no secure context): select it for Ctrl+C instead */
  }
  const range = document.createRange();
  range.selectNodeContents(shown);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  toast("the clipboard refused: the text is selected, press Ctrl+C");
}

// ---------------------------------------------------------------- traces

function traceFilters() {
  return {
    direction: $("trace-direction").value,
    kind: $("trace-kind").value,
    peer: $("trace-peer").value.trim().toLowerCase(),
  };
}

function traceMatches(record, filters) {
  if (filters.direction && record.direction !== filters.direction) return false;
  if (filters.kind && record.kind !== filters.kind) return false;
  if (filters.peer && !String(record.peer ?? "").toLowerCase().includes(filters.peer)) {
    return false;
  }
  return true;
}

function renderTraces() {
  const records = detail.traces;
  fillOptions($("trace-kind"), records.map((r) => r.kind));
  $("trace-peers").replaceChildren(
    ...[...new Set(records.map((r) => r.peer).filter(Boolean))]
      .sort()
      .map((peer) => el("option", { value: peer }))
  );
  const filters = traceFilters();
  const shown = records.filter((r) => traceMatches(r, filters));
  $("trace-count").textContent = `${shown.length} of ${records.length}`;
  $("traces").tBodies[0].replaceChildren(...shown.map(traceRow));
}

// The choices of a <select> from the values seen, keeping the one chosen.
function fillOptions(select, values) {
  const chosen = select.value;
  const choices = [...new Set(values.filter(Boolean))].sort();
  if (chosen && !choices.includes(chosen)) choices.push(chosen);
  select.replaceChildren(
    el("option", { value: "", text: "all" }),
    ...choices.map((v) => el("option", { value: v, text: v }))
  );
  select.value = chosen;
}

function traceTime(seconds) {
  const at = new Date(seconds * 1000);
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return (
    `${pad(at.getHours())}:${pad(at.getMinutes())}:${pad(at.getSeconds())}` +
    `.${pad(at.getMilliseconds(), 3)}`
  );
}

function traceRow(record) {
  const cell = (text, className) =>
    el("td", { text: text ?? "", title: text ?? "", className: className || "" });
  return el(
    "tr",
    {
      "data-direction": record.direction,
      "data-kind": record.kind ?? "",
      "data-peer": record.peer ?? "",
    },
    cell(typeof record.time === "number" ? traceTime(record.time) : ""),
    cell(record.direction, `direction ${record.direction}`),
    cell(record.kind),
    cell(record.peer),
    cell(record.routing_key),
    cell(typeof record.size === "number" ? record.size.toLocaleString() : ""),
    cell(record.behaviour),
    cell(record.correlation_id)
  );
}

// ---------------------------------------------------------------- following the list

function markSelected() {
  for (const card of document.querySelectorAll("#agents .agent")) {
    card.classList.toggle("selected", card.dataset.agent === detail.identity);
  }
}

// The list changed (a start/stop, a presence event, a reload): follow the shown agent,
// redrawn only when its own entry changed (other agents come and go without touching it).
function onAgents(event) {
  markSelected();
  if (!detail.identity) return;
  const entry = event.detail.find((a) => a.identity === detail.identity);
  const pending = [...agents.pending].some((key) => key.startsWith(detail.identity + "/"));
  let changed = pending || detail.pending || detail.gone !== (entry === undefined);
  detail.pending = pending;
  detail.gone = entry === undefined;
  // The list replaces an agent's entry only with newer news of it (a reload, or its status
  // fetched after a start or stop done in the page): take that, never an older entry.
  if (entry && entry !== detail.entry) {
    detail.entry = entry;
    if (detail.status && entry.behaviours) {
      // status() (with counters) replaces all; what `GET agents` lists, the behaviours.
      detail.status = entry.counters
        ? entry
        : { ...detail.status, state: entry.state, behaviours: entry.behaviours };
      changed = true;
    }
  }
  if (changed) renderDetail();
}

document.addEventListener("mg:open-agent", (event) => openDetail(event.detail));
document.addEventListener("mg:agents", onAgents);
document.addEventListener("mg:token", () => detail.identity && loadDetail());

document.addEventListener("DOMContentLoaded", () => {
  $("detail-refresh").addEventListener("click", loadDetail);
  $("detail-close").addEventListener("click", closeDetail);
  for (const id of ["trace-direction", "trace-kind"]) {
    $(id).addEventListener("change", renderTraces);
  }
  $("trace-peer").addEventListener("input", renderTraces);
  $("trace-filters").addEventListener("submit", (event) => event.preventDefault());
});

// The behaviours of an agent with their start/stop buttons (the list and the detail; a
// click runs control() of dashboard.js).
function behaviourTable(identity, behaviours) {
  return el(
    "table",
    { className: "behaviours" },
    el(
      "thead",
      {},
      el("tr", {}, ...["behaviour", "kind", "state", ""].map((t) => el("th", { text: t })))
    ),
    el("tbody", {}, ...behaviours.map((b) => renderBehaviour(identity, b)))
  );
}

function renderBehaviour(identity, behaviour) {
  const key = `${identity}/${behaviour.name}`;
  const running = behaviour.state === "running";
  const action = running ? "stop" : "start";
  const button = el("button", {
    type: "button",
    text: agents.pending.has(key) ? "…" : running ? "Stop" : "Start",
    disabled: agents.pending.has(key),
    "data-action": action,
    "aria-label": `${action} ${behaviour.name} of ${identity}`,
  });
  button.addEventListener("click", () => control(identity, behaviour.name, action));
  return el(
    "tr",
    { "data-behaviour": behaviour.name },
    el("td", { className: "name", text: behaviour.name }),
    el("td", { className: "muted", text: behaviour.kind || "" }),
    el(
      "td",
      {},
      el("span", { className: "state", "data-state": behaviour.state, text: behaviour.state })
    ),
    el("td", { className: "action" }, button)
  );
}
