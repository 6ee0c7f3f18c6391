// munggoggo gateway dashboard: the send-and-publish panel. A message to one agent's inbox
// (POST agents/{id}/send), to a topic (POST topics/{key}) or to every agent (POST
// broadcast), its body JSON (checked before sending) or text (sent as text/plain). The
// gateway's answer (202) or its error shows under the form. Everything lives in this
// closure: classic scripts share top-level names.
"use strict";

(() => {
  const TARGETS = {
    inbox: (form) => `agents/${encodeURIComponent(form.agent)}/send`,
    topic: (form) => `topics/${encodeURIComponent(form.key)}`,
    broadcast: () => "broadcast",
  };

  function checked(name) {
    const input = document.querySelector(`#send-form input[name="${name}"]:checked`);
    return input ? input.value : "";
  }

  // Only the target input that the kind needs is shown.
  function onKind() {
    const kind = checked("send-kind");
    $("send-agent-row").hidden = kind !== "inbox";
    $("send-key-row").hidden = kind !== "topic";
    $("send-submit").textContent =
      kind === "topic" ? "Publish" : kind === "broadcast" ? "Broadcast" : "Send";
  }

  function onBodyKind() {
    const json = checked("send-body-kind") === "json";
    $("send-body").placeholder = json ? '{"hello": "world"}' : "plain text";
    $("send-invalid").textContent = "";
  }

  function onAgents(list) {
    const select = $("send-agent");
    const names = list.map((a) => a.identity);
    const key = JSON.stringify(names);
    if (select.dataset.key === key) return; // unchanged: keep the open list and the choice
    select.dataset.key = key;
    fillAgentSelect(select, names);
  }

  // What the form asks for, or an Error saying what is missing or malformed.
  function readForm() {
    const kind = checked("send-kind");
    const form = { kind, agent: chosenAgent($("send-agent")), key: $("send-key").value.trim() };
    if (kind === "inbox" && !form.agent) {
      const stopped = $("send-agent").value; // the marked option of one that stopped
      throw new Error(stopped ? `${stopped} stopped: choose an agent` : "choose an agent");
    }
    if (kind === "topic" && !form.key) throw new Error("a routing key is needed");
    const text = $("send-body").value;
    if (checked("send-body-kind") === "json") {
      if (!text.trim()) throw new Error("the body is empty: type a JSON value");
      try {
        form.body = JSON.parse(text);
      } catch (err) {
        throw new Error("the body is not valid JSON: " + err.message);
      }
    } else {
      if (!text) throw new Error("the body is empty");
      form.text = text;
    }
    return form;
  }

  async function send(event) {
    event.preventDefault();
    let form;
    try {
      form = readForm();
    } catch (err) {
      $("send-invalid").textContent = err.message;
      return;
    }
    $("send-invalid").textContent = "";
    const headers = apiHeaders();
    const init = { method: "POST", headers };
    if (form.body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(form.body);
    } else {
      headers["content-type"] = "text/plain; charset=utf-8";
      init.body = form.text;
    }
    const button = $("send-submit");
    button.disabled = true;
    const out = $("send-outcome");
    out.dataset.outcome = "pending";
    try {
      const response = await fetch(TARGETS[form.kind](form), init);
      const raw = await response.text();
      let value = raw;
      try {
        value = raw ? JSON.parse(raw) : null;
      } catch (_) {
        /* not JSON: show the text */
      }
      if (response.status === 401)
        askForToken(token() ? "that token was not accepted" : "this gateway needs a token");
      showOutcome(response.ok, `${response.status} ${response.statusText}`.trim(), value);
    } catch (err) {
      showOutcome(false, "no answer", { error: { message: err.message } });
    } finally {
      button.disabled = false;
    }
  }

  function showOutcome(ok, status, value) {
    const out = $("send-outcome");
    out.dataset.outcome = ok ? "ok" : "error";
    const error = !ok && value && typeof value === "object" ? value.error : null;
    const text =
      error && typeof error === "object"
        ? [
            error.code !== undefined ? `code ${error.code}` : "",
            error.message || "",
            error.data !== undefined ? JSON.stringify(error.data) : "",
          ]
            .filter(Boolean)
            .join("\n")
        : typeof value === "string"
          ? value
          : JSON.stringify(value, null, 2);
    out.replaceChildren(
      el("div", { className: `outcome-head ${ok ? "ok" : "bad"}`, text: status }),
      el("pre", { id: "send-answer", text })
    );
  }

  function start() {
    if (!$("send-form")) return;
    for (const input of document.querySelectorAll('#send-form input[name="send-kind"]'))
      input.addEventListener("change", onKind);
    for (const input of document.querySelectorAll('#send-form input[name="send-body-kind"]'))
      input.addEventListener("change", onBodyKind);
    $("send-form").addEventListener("submit", send);
    document.addEventListener("mg:agents", (e) =>
      onAgents(Array.isArray(e.detail) ? e.detail : [])
    );
    onKind();
    onBodyKind();
  }

  start();
})();
