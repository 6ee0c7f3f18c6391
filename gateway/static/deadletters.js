// munggoggo gateway dashboard: the dead-letters panel. Lists `munggoggo.dead-letters`
// (GET dead-letters, an agent filter and a limit), shows one letter's headers and body
// (GET dead-letters/{id}), requeues and purges (POST dead-letters/requeue|purge) and lists
// again after each action. A purge is asked for twice: the panel shows what will go and
// waits for its own Purge/Cancel (not window.confirm). Everything lives in this closure:
// classic scripts share top-level names.
"use strict";

(() => {
  const state = {
    letters: [],
    selected: new Set(), // ids ticked
    pendingPurge: null, // the request body a confirmation would send
    loading: false,
    owed: false, // a load was asked for while one ran: it runs when that one ends
    applied: "", // the agent filter the shown list was loaded with
  };

  function age(seconds) {
    if (seconds == null) return "-";
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  function filter() {
    return $("dl-agent").value.trim();
  }

  // The filter of the list shown: a requeue or purge of its rows must not take up what is
  // typed in the box since (the letters listed are the ones the user chose from).
  function withAppliedFilter(request) {
    if (state.applied) request.agent = state.applied;
    return request;
  }

  function say(text, bad = false) {
    const box = $("dl-status");
    box.textContent = text;
    box.dataset.tone = bad ? "bad" : "";
  }

  // ------------------------------------------------------------ the list

  async function load() {
    if (state.loading) {
      // The running load may have read the queue before what asks now (a requeue, a
      // purge, a new filter) happened: one more load when it ends.
      state.owed = true;
      return;
    }
    state.loading = true;
    const limit = Number($("dl-limit").value) || 50;
    const query = new URLSearchParams({ limit: String(Math.min(1000, Math.max(1, limit))) });
    const agent = filter();
    if (agent) query.set("agent", agent);
    $("dl-table").dataset.loading = "true";
    try {
      const answer = await api(`dead-letters?${query}`);
      state.applied = agent;
      state.letters = (answer && answer.dead_letters) || [];
      const ids = new Set(state.letters.map((l) => l.id));
      for (const id of [...state.selected]) if (!ids.has(id)) state.selected.delete(id);
      render();
    } catch (err) {
      say("cannot list dead letters: " + err.message, true);
    } finally {
      state.loading = false;
      delete $("dl-table").dataset.loading;
      if (state.owed) {
        state.owed = false;
        load();
      }
    }
  }

  function render() {
    const body = $("dl-table").tBodies[0];
    $("dl-count").textContent = `${state.letters.length} shown`;
    if (!state.letters.length) {
      body.replaceChildren(
        el(
          "tr",
          { className: "none" },
          el("td", { colSpan: 9, className: "empty", text: "No dead letters." })
        )
      );
    } else {
      body.replaceChildren(...state.letters.map(row));
    }
    $("dl-all").checked = state.letters.length > 0 && state.selected.size === state.letters.length;
    updateButtons();
  }

  function row(letter) {
    const box = el("input", {
      type: "checkbox",
      checked: state.selected.has(letter.id),
      "aria-label": `select ${letter.id}`,
    });
    box.addEventListener("change", () => {
      if (box.checked) state.selected.add(letter.id);
      else state.selected.delete(letter.id);
      $("dl-all").checked = state.selected.size === state.letters.length;
      updateButtons();
    });
    const inspect = el("button", {
      type: "button",
      className: "ghost",
      text: "Inspect",
      "data-action": "inspect",
    });
    inspect.addEventListener("click", () => showLetter(letter.id));
    const requeue = el("button", {
      type: "button",
      className: "ghost",
      text: "Requeue",
      "data-action": "requeue",
    });
    requeue.addEventListener("click", () => requeueIds([letter.id]));
    const purge = el("button", {
      type: "button",
      className: "ghost danger",
      text: "Purge",
      "data-action": "purge",
    });
    purge.addEventListener("click", () =>
      askPurge({ ids: [letter.id] }, `Purge dead letter ${letter.id}?`)
    );
    const cell = (text, className) =>
      el("td", { className: className || "", text: text == null ? "-" : String(text) });
    return el(
      "tr",
      { "data-id": letter.id },
      el("td", {}, box),
      cell(letter.id, "mono id"),
      cell(letter.agent, "mono"),
      cell(letter.behaviour),
      cell(letter.routing_key, "mono"),
      el("td", { className: "reason", title: letter.reason || "", text: letter.reason || "-" }),
      cell(letter.retries, "num"),
      cell(age(letter.age), "num"),
      el("td", { className: "actions" }, inspect, requeue, purge)
    );
  }

  function updateButtons() {
    const none = state.selected.size === 0;
    $("dl-requeue-selected").disabled = none;
    $("dl-purge-selected").disabled = none;
  }

  // ------------------------------------------------------------ one letter

  async function showLetter(id) {
    const box = $("dl-detail");
    try {
      const letter = await api(`dead-letters/${encodeURIComponent(id)}`);
      const { headers, body, body_base64, ...about } = letter;
      let bodyText;
      let bodyKind;
      if (body_base64 !== undefined) {
        bodyText = body_base64;
        bodyKind = "body (base64: not text)";
      } else if (typeof body === "string") {
        bodyText = body;
        bodyKind = "body (text)";
      } else {
        bodyText = JSON.stringify(body, null, 2);
        bodyKind = "body (JSON)";
      }
      box.replaceChildren(
        el(
          "div",
          { className: "detail-head" },
          el("strong", { className: "mono", text: id }),
          closeButton()
        ),
        el("h3", { text: "about" }),
        el("pre", { id: "dl-detail-about", text: JSON.stringify(about, null, 2) }),
        el("h3", { text: "headers" }),
        el("pre", { id: "dl-detail-headers", text: JSON.stringify(headers || {}, null, 2) }),
        el("h3", { id: "dl-detail-body-kind", text: bodyKind }),
        el("pre", { id: "dl-detail-body", text: bodyText })
      );
      box.dataset.id = id;
      box.hidden = false;
    } catch (err) {
      say(`cannot read ${id}: ${err.message}`, true);
    }
  }

  function closeButton() {
    const button = el("button", {
      type: "button",
      id: "dl-detail-close",
      className: "ghost",
      text: "Close",
    });
    button.addEventListener("click", () => {
      $("dl-detail").hidden = true;
      delete $("dl-detail").dataset.id;
    });
    return button;
  }

  // ------------------------------------------------------------ requeue and purge

  async function requeueIds(ids) {
    if (!ids.length) return;
    const request = withAppliedFilter({ ids });
    try {
      const result = await api("dead-letters/requeue", { method: "POST", body: request });
      const kept = Object.entries(result.kept || {});
      const parts = [`requeued ${result.requeued.length}`];
      if (kept.length) parts.push("kept " + kept.map(([id, why]) => `${id} (${why})`).join(", "));
      if ((result.missing || []).length) parts.push("missing " + result.missing.join(", "));
      say(parts.join("; "), kept.length > 0 || (result.missing || []).length > 0);
      for (const id of result.requeued) state.selected.delete(id);
    } catch (err) {
      say("requeue failed: " + err.message, true);
    }
    await load();
  }

  // The confirmation step: nothing goes until its Purge is clicked.
  function askPurge(request, question) {
    state.pendingPurge = request;
    say("");
    $("dl-confirm-text").textContent = question;
    $("dl-confirm").hidden = false;
    $("dl-confirm-yes").focus();
  }

  function cancelPurge() {
    state.pendingPurge = null;
    $("dl-confirm").hidden = true;
    say("purge cancelled: nothing was removed");
  }

  async function confirmPurge() {
    const request = state.pendingPurge;
    state.pendingPurge = null;
    $("dl-confirm").hidden = true;
    if (!request) return;
    try {
      const result = await api("dead-letters/purge", { method: "POST", body: request });
      const parts = [`purged ${result.purged}`];
      if ((result.missing || []).length) parts.push("missing " + result.missing.join(", "));
      // After purging the whole queue: letters that arrived meanwhile are still there.
      if (result.left) parts.push(`${result.left} still in the queue`);
      say(parts.join("; "), (result.missing || []).length > 0 || result.left > 0);
      for (const id of result.ids || []) state.selected.delete(id);
      if (request.all) state.selected.clear();
    } catch (err) {
      say("purge failed: " + err.message, true);
    }
    await load();
  }

  function purgeSelected() {
    const ids = [...state.selected];
    if (!ids.length) return;
    const request = withAppliedFilter({ ids });
    askPurge(request, `Purge ${ids.length} selected dead letter${ids.length === 1 ? "" : "s"}?`);
  }

  function purgeAll() {
    // Not the list's filter: purging every letter of the agent typed is narrower, and the
    // confirmation names it.
    const request = { all: true };
    const agent = filter();
    if (agent) request.agent = agent;
    askPurge(
      request,
      agent
        ? `Purge every dead letter of ${agent}?`
        : "Purge every dead letter in the queue, of all agents?"
    );
  }

  // ------------------------------------------------------------ wiring

  function onAgents(list) {
    const names = list.map((a) => a.identity);
    const key = JSON.stringify(names);
    const options = $("dl-agents");
    if (options.dataset.key === key) return;
    options.dataset.key = key;
    options.replaceChildren(...names.map((n) => el("option", { value: n })));
  }

  function start() {
    if (!$("dl-filter")) return;
    $("dl-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      load();
    });
    $("dl-all").addEventListener("change", (event) => {
      state.selected = event.target.checked ? new Set(state.letters.map((l) => l.id)) : new Set();
      render();
    });
    $("dl-requeue-selected").addEventListener("click", () => requeueIds([...state.selected]));
    $("dl-purge-selected").addEventListener("click", purgeSelected);
    $("dl-purge-all").addEventListener("click", purgeAll);
    $("dl-confirm-yes").addEventListener("click", confirmPurge);
    $("dl-confirm-no").addEventListener("click", cancelPurge);
    document.addEventListener("mg:agents", (e) =>
      onAgents(Array.isArray(e.detail) ? e.detail : [])
    );
    document.addEventListener("mg:token", load);
    load();
  }

  start();
})();
