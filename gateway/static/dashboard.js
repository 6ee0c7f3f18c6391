// munggoggo gateway dashboard: the agent list with behaviour start/stop, kept current by the
// presence events of /ws (no polling), a live message stream over the same socket and a
// messages/s sparkline. Plain browser JavaScript (common.js loads first and gives the token,
// `api()`, `el()` and `toast()`; agent.js draws the detail of the agent clicked here);
// every URL is relative to the page.
"use strict";

const MAX_ROWS = 200; // rows kept in the stream table
const WINDOW_SECONDS = 60; // sparkline width
const STOPPED_SHOWN_MS = 20000; // how long an agent that stopped stays listed, marked
const STOPPED_REMEMBERED = 1000; // "stopped" times kept for agents asked for their status
// A "dropped" frame may have cost a presence frame: the whole list is loaded again, once
// for all the drops of this long (a busy mesh drops in bursts).
const RELOAD_AFTER_DROP_MS = 1000;

// ---------------------------------------------------------------- agents
//
// One `GET agents` when the page loads (and on Refresh, a new token, or a /ws reconnect:
// what happened while the socket was down is unknown); after that the presence events of
// /ws say which agents start and stop, and only a started one is asked for its `status`.

const agents = {
  list: [],
  gone: new Set(), // listed identities whose "stopped" event came since the last full load
  stoppedAt: new Map(), // identity -> performance.now() of its last "stopped" event
  removals: new Map(), // identity -> the timer that takes a stopped agent off the list
  reloadTimer: 0, // a full load owed to a "dropped" frame, or 0
  pending: new Set(), // "identity/behaviour" while a start/stop request runs
  loading: null, // the running full load (a Promise), or null
  cards: new Map(), // identity -> {agent, gone, pending, node}: the card drawn last
};

function loadAgents() {
  if (!agents.loading) {
    agents.loading = fetchAgents().finally(() => (agents.loading = null));
  }
  return agents.loading;
}

async function fetchAgents() {
  try {
    const response = await fetch("agents", { headers: apiHeaders() });
    if (!response.ok) throw new Error(await refusal(response));
    const data = await response.json();
    agents.list = Array.isArray(data) ? data : data.agents || [];
    agents.gone.clear();
    agents.stoppedAt.clear();
    for (const timer of agents.removals.values()) clearTimeout(timer);
    agents.removals.clear();
    renderAgents();
  } catch (err) {
    $("agents-count").textContent = "cannot list agents: " + err.message;
  }
}

// Presence frames share the socket's droppable buffer with messages: after a drop the list
// may miss a "stopped" (a dead agent shown running) or a "started". One full load answers
// for every drop until it is scheduled; a drop while it runs schedules the next.
function reloadAfterDrop() {
  if (agents.reloadTimer) return;
  agents.reloadTimer = setTimeout(() => {
    agents.reloadTimer = 0;
    // A load already running may have read the list before the drop: one more after it.
    (agents.loading || Promise.resolve()).then(loadAgents);
  }, RELOAD_AFTER_DROP_MS);
}

// One agent's `status` (a superset of what `GET agents` lists for it) into the list.
async function refreshAgent(identity) {
  const asked = performance.now();
  let described;
  try {
    const response = await fetch(`agents/${encodeURIComponent(identity)}`, {
      headers: apiHeaders(),
    });
    if (response.status === 404) {
      // Gone again before it answered (it started and stopped at once): not listed.
      markStopped(identity);
      return;
    }
    if (!response.ok) throw new Error(await refusal(response));
    described = await response.json();
  } catch (err) {
    described = { unanswered: err.message };
  }
  if ((agents.stoppedAt.get(identity) ?? -1) > asked) {
    markStopped(identity); // it stopped while we asked: what it answered is past
    return;
  }
  const index = agents.list.findIndex((a) => a.identity === identity);
  if (index >= 0) {
    // A slow or refused status call says nothing about its behaviours or methods: what was
    // listed stays (the tables, the detail's graphs, the console's methods), marked.
    agents.list[index] = described.unanswered
      ? { ...agents.list[index], unanswered: described.unanswered }
      : described;
  } else {
    // It announced itself but does not answer (yet): list it with what we know.
    agents.list.push(
      described.unanswered ? { identity, state: "started", behaviours: [], ...described } : described
    );
  }
  agents.gone.delete(identity);
  cancelRemoval(identity); // it runs again: the removal of its last stop is past
  renderAgents();
}

// A presence frame of /ws: an agent started (fetch it) or stopped (mark it).
async function onPresence(identity, state) {
  if (agents.loading) await agents.loading; // the full load answers for what it lists
  const known = agents.list.some((a) => a.identity === identity);
  if (state === "started") {
    // On subscribing, the gateway names every running agent once: the listed ones are known.
    if (!known || agents.gone.has(identity)) await refreshAgent(identity);
  } else if (state === "stopped") {
    rememberStopped(identity);
    markStopped(identity);
  }
}

// Only a status call that runs while an agent stops needs its time; agents that start and
// stop unlisted (short-lived ones on a busy mesh) must not pile up until the next full load.
function rememberStopped(identity) {
  agents.stoppedAt.delete(identity); // re-inserted last: the Map's first keys are the oldest
  agents.stoppedAt.set(identity, performance.now());
  for (const old of agents.stoppedAt.keys()) {
    if (agents.stoppedAt.size <= STOPPED_REMEMBERED) break;
    agents.stoppedAt.delete(old);
  }
}

function markStopped(identity) {
  if (agents.gone.has(identity) || !agents.list.some((a) => a.identity === identity)) return;
  agents.gone.add(identity);
  renderAgents();
  cancelRemoval(identity);
  agents.removals.set(identity, setTimeout(() => forgetStopped(identity), STOPPED_SHOWN_MS));
}

function cancelRemoval(identity) {
  clearTimeout(agents.removals.get(identity));
  agents.removals.delete(identity);
}

// A stopped agent is shown for a while, then taken off the list (unless it came back).
function forgetStopped(identity) {
  agents.removals.delete(identity);
  agents.stoppedAt.delete(identity);
  if (!agents.gone.has(identity)) return;
  agents.gone.delete(identity);
  agents.list = agents.list.filter((a) => a.identity !== identity);
  renderAgents();
}

// The agents that run (a stopped one stays on the page a while, marked).
function runningAgents() {
  return agents.list
    .filter((a) => !agents.gone.has(a.identity))
    .sort((a, b) => a.identity.localeCompare(b.identity));
}

function renderAgents() {
  const box = $("agents");
  const list = [...agents.list].sort((a, b) => a.identity.localeCompare(b.identity));
  const stopped = agents.gone.size;
  $("agents-count").textContent =
    `${list.length - stopped} running` + (stopped ? `, ${stopped} stopped` : "");
  if (!list.length) {
    agents.cards.clear();
    box.replaceChildren(el("p", { className: "empty", text: "No agents answered." }));
  } else {
    placeCards(box, list.map(agentCard));
    const shown = new Set(list.map((a) => a.identity));
    for (const identity of agents.cards.keys()) {
      if (!shown.has(identity)) agents.cards.delete(identity);
    }
  }
  // The other panels (method console, send, the agent detail) follow the list through this
  // event; it comes after the list is drawn, so a listener may mark what it shows there.
  document.dispatchEvent(new CustomEvent("mg:agents", { detail: runningAgents() }));
}

// An agent's card: the one drawn before while nothing it shows changed. On a busy mesh
// presence events come often; redrawing every card each time would take the button under
// the pointer away mid-click.
function agentCard(agent) {
  const gone = agents.gone.has(agent.identity);
  const pending = [...agents.pending].filter((k) => k.startsWith(agent.identity + "/")).join();
  const cached = agents.cards.get(agent.identity);
  if (cached && cached.agent === agent && cached.gone === gone && cached.pending === pending) {
    return cached.node;
  }
  const node = renderAgent(agent);
  agents.cards.set(agent.identity, { agent, gone, pending, node });
  return node;
}

// `nodes` as the children of `box`, in order, moving only what is out of place.
function placeCards(box, nodes) {
  nodes.forEach((node, i) => {
    if (box.children[i] !== node) box.insertBefore(node, box.children[i] || null);
  });
  while (box.children.length > nodes.length) box.lastElementChild.remove();
}

function renderAgent(agent) {
  const gone = agents.gone.has(agent.identity);
  const state = gone ? "stopped" : agent.state || "?";
  const behaviours = agent.behaviours || [];
  const methods = (agent.methods || []).filter((m) => !CONTROL_METHODS.has(m));
  const table = behaviours.length
    ? behaviourTable(agent.identity, behaviours)
    : el("p", { className: "empty", text: "no behaviours" });
  const open = el("button", {
    type: "button",
    className: "identity link",
    text: agent.identity,
    title: "show this agent's detail",
    "aria-label": `show the detail of ${agent.identity}`,
  });
  open.addEventListener("click", () =>
    document.dispatchEvent(new CustomEvent("mg:open-agent", { detail: agent.identity }))
  );
  return el(
    "article",
    { className: gone ? "agent gone" : "agent", "data-agent": agent.identity },
    el(
      "div",
      { className: "agent-head" },
      open,
      el("span", { className: "state", "data-state": state, text: state })
    ),
    methods.length
      ? el("div", { className: "methods", text: "methods: " + methods.join(", ") })
      : null,
    agent.unanswered
      ? el("p", { className: "empty", text: "not answering: " + agent.unanswered })
      : null,
    gone ? null : table
  );
}

async function control(identity, name, action) {
  const key = `${identity}/${name}`;
  agents.pending.add(key);
  renderAgents();
  try {
    const url = `agents/${encodeURIComponent(identity)}/behaviours/${encodeURIComponent(name)}/${action}`;
    const response = await fetch(url, { method: "POST", headers: apiHeaders() });
    if (!response.ok) throw new Error(await refusal(response));
    const body = await response.json().catch(() => null);
    const described = body && (body.result || body.behaviour || body);
    const agent = agents.list.find((a) => a.identity === identity);
    const behaviour = agent?.behaviours?.find((b) => b.name === name);
    if (behaviour && described && typeof described.state === "string") {
      Object.assign(behaviour, described);
    }
  } catch (err) {
    toast(`${action} ${name} of ${identity} failed: ${err.message}`);
  } finally {
    agents.pending.delete(key);
    await refreshAgent(identity);
  }
}

// ---------------------------------------------------------------- throughput

const throughput = {
  buckets: new Array(WINDOW_SECONDS).fill(0), // completed seconds, oldest first
  current: 0, // messages in the second now running
  total: 0,
  dropped: 0,
  peak: 0,
};

function countMessage() {
  throughput.current += 1;
  throughput.total += 1;
}

function tick() {
  throughput.buckets.push(throughput.current);
  throughput.buckets.shift();
  throughput.peak = Math.max(...throughput.buckets);
  $("rate").textContent = throughput.current.toLocaleString();
  throughput.current = 0;
  $("peak").textContent = throughput.peak.toLocaleString();
  $("total").textContent = throughput.total.toLocaleString();
  $("dropped").textContent = throughput.dropped.toLocaleString();
  drawSparkline();
}

function drawSparkline() {
  const canvas = $("sparkline");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const values = throughput.buckets;
  const top = Math.max(1, throughput.peak) * 1.15;
  const pad = 4;
  const step = (width - 2 * pad) / (values.length - 1);
  const y = (v) => height - pad - (v / top) * (height - 2 * pad);

  ctx.strokeStyle = "#e2e6ee";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(pad, height - pad + 0.5);
  ctx.lineTo(width - pad, height - pad + 0.5);
  ctx.stroke();

  ctx.beginPath();
  values.forEach((v, i) => (i ? ctx.lineTo(pad + i * step, y(v)) : ctx.moveTo(pad, y(v))));
  ctx.lineTo(width - pad, height - pad);
  ctx.lineTo(pad, height - pad);
  ctx.closePath();
  const fill = ctx.createLinearGradient(0, 0, 0, height);
  fill.addColorStop(0, "rgba(31, 111, 235, 0.30)");
  fill.addColorStop(1, "rgba(31, 111, 235, 0.02)");
  ctx.fillStyle = fill;
  ctx.fill();

  ctx.beginPath();
  values.forEach((v, i) => (i ? ctx.lineTo(pad + i * step, y(v)) : ctx.moveTo(pad, y(v))));
  ctx.strokeStyle = "#1f6feb";
  ctx.lineWidth = 2;
  ctx.lineJoin = "round";
  ctx.stroke();

  const last = values[values.length - 1];
  ctx.fillStyle = "#1f6feb";
  ctx.beginPath();
  ctx.arc(width - pad, y(last), 3, 0, 2 * Math.PI);
  ctx.fill();

  ctx.fillStyle = "#6a7486";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "top";
  ctx.fillText(`${throughput.peak.toLocaleString()}/s`, pad + 2, pad);
}

// ---------------------------------------------------------------- live stream

const stream = {
  socket: null,
  patterns: new Set(["#"]), // what we want; re-sent after every reconnect
  confirmed: new Set(), // what the gateway acknowledged
  rows: [], // waiting to be drawn on the next animation frame
  paused: false,
  retry: 500,
  drawScheduled: false,
  missed: false, // the socket closed after it was open: presence events may have been lost

};

function socketUrl() {
  const url = new URL("ws", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  // Browsers cannot set headers on a WebSocket: the token goes in the query.
  if (token()) url.searchParams.set("token", token());
  return url.href;
}

function setConnection(state, text) {
  const pill = $("connection");
  pill.dataset.state = state;
  pill.textContent = text;
}

function connect() {
  const socket = new WebSocket(socketUrl());
  let opened = false;
  stream.socket = socket;
  setConnection("connecting", "connecting");
  socket.onopen = () => {
    opened = true;
    stream.retry = 500;
    stream.confirmed.clear();
    setConnection("open", "live");
    if (stream.missed) {
      // Once: what started or stopped while the socket was down. Started first, so the
      // presence frames below wait for it (onPresence).
      stream.missed = false;
      loadAgents();
    }
    send({ op: "subscribe", presence: true, id: "presence" });
    for (const pattern of stream.patterns) subscribe(pattern);
    renderChips();
  };
  socket.onclose = () => {
    if (opened) stream.missed = true;
    stream.confirmed.clear();
    renderChips();
    setConnection("closed", "disconnected, retrying");
    setTimeout(connect, stream.retry);
    stream.retry = Math.min(stream.retry * 2, 10000);
  };
  socket.onmessage = (event) => onFrame(JSON.parse(event.data));
}

function send(frame) {
  if (stream.socket && stream.socket.readyState === WebSocket.OPEN) {
    stream.socket.send(JSON.stringify(frame));
  }
}

function subscribe(pattern) {
  // The id comes back with an error, so a refused pattern can be taken off the list.
  send({ op: "subscribe", topic: pattern, id: "sub:" + pattern });
}

function onFrame(frame) {
  switch (frame.op) {
    case "message":
      countMessage();
      if (!stream.paused) queueRow(frame);
      break;
    case "dropped":
      throughput.dropped += frame.count;
      if (!stream.paused) queueRow({ gap: frame.count });
      reloadAfterDrop();
      break;
    case "presence":
      onPresence(frame.identity, frame.state);
      break;
    case "subscribed":
      if (frame.presence) break;
      stream.confirmed.add(frame.topic);
      renderChips();
      break;
    case "unsubscribed":
      stream.confirmed.delete(frame.topic);
      renderChips();
      break;
    case "error":
      if (frame.id === "presence") {
        toast("the agent list is not live: " + frame.error);
        break;
      }
      if (typeof frame.id === "string" && frame.id.startsWith("sub:")) {
        stream.patterns.delete(frame.id.slice(4));
        renderChips();
      }
      toast(frame.error);
      break;
  }
}

function queueRow(row) {
  stream.rows.push(row);
  if (stream.rows.length > MAX_ROWS) stream.rows.splice(0, stream.rows.length - MAX_ROWS);
  if (!stream.drawScheduled) {
    stream.drawScheduled = true;
    requestAnimationFrame(drawRows);
  }
}

function formatBody(body) {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  return text.length > 300 ? text.slice(0, 300) + "…" : text;
}

function drawRows() {
  stream.drawScheduled = false;
  const tbody = $("stream").tBodies[0];
  const now = new Date();
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  const time =
    `${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}` +
    `.${pad(now.getMilliseconds(), 3)}`;
  const fragment = document.createDocumentFragment();
  for (const row of stream.rows.reverse()) {
    if (row.gap) {
      fragment.append(
        el(
          "tr",
          { className: "gap" },
          el("td", { text: time }),
          el("td", { colSpan: 3, text: `${row.gap} messages dropped (this page read too slowly)` })
        )
      );
      continue;
    }
    const body = formatBody(row.body);
    fragment.append(
      el(
        "tr",
        { "data-topic": row.topic },
        el("td", { text: time }),
        el("td", { text: row.topic, title: row.topic }),
        el("td", { text: row.sender || "", title: row.sender || "" }),
        el("td", { text: body, title: body })
      )
    );
  }
  stream.rows = [];
  tbody.prepend(fragment);
  while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(-1);
}

function renderChips() {
  const list = $("subscriptions");
  list.replaceChildren(
    ...[...stream.patterns].map((pattern) => {
      const remove = el("button", {
        type: "button",
        text: "×",
        title: `unsubscribe ${pattern}`,
        "aria-label": `unsubscribe ${pattern}`,
      });
      remove.addEventListener("click", () => {
        stream.patterns.delete(pattern);
        send({ op: "unsubscribe", topic: pattern });
        renderChips();
      });
      const label = stream.confirmed.has(pattern) ? pattern : `${pattern} (pending)`;
      return el("li", { "data-pattern": pattern }, el("span", { text: label }), remove);
    })
  );
}

// ---------------------------------------------------------------- wiring

takeTokenFromAddress();

document.addEventListener("mg:token", () => {
  loadAgents();
  stream.retry = 500;
  if (stream.socket) stream.socket.close(); // reconnects with the token
});

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", useToken);
  // A #token=... pasted into the address of the open page.
  window.addEventListener("hashchange", () => takeTokenFromAddress() && tokenChanged());
  $("refresh").addEventListener("click", loadAgents);
  $("subscribe-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const pattern = $("pattern").value.trim();
    if (!pattern) return;
    stream.patterns.add(pattern);
    subscribe(pattern);
    renderChips();
  });
  $("pause").addEventListener("click", (event) => {
    stream.paused = !stream.paused;
    event.target.setAttribute("aria-pressed", String(stream.paused));
    event.target.textContent = stream.paused ? "Resume" : "Pause";
  });
  $("clear").addEventListener("click", () => $("stream").tBodies[0].replaceChildren());
  window.addEventListener("resize", drawSparkline);

  renderChips();
  drawSparkline();
  loadAgents();
  setInterval(tick, 1000);
  connect();
});
