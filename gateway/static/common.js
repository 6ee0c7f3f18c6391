// munggoggo gateway dashboard: what every script of the page shares. The token kept for
// this tab, the request headers it implies, `api()` for the gateway's JSON routes, DOM
// helpers and the toast. Plain browser JavaScript loaded before the panels' scripts (classic
// scripts share their top-level names); every URL is relative to the page.
"use strict";

// Every agent answers these (the control plane): the agent cards list only an agent's own
// methods, the method console lists these after them.
const CONTROL_METHODS = new Set([
  "describe",
  "list_behaviours",
  "ping",
  "start_behaviour",
  "status",
  "stop_behaviour",
  "traces",
]);

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- the gateway's token
//
// A gateway with tokens serves this page openly, but its API and /ws need a token. The
// page takes it from the address (`#token=...`: a fragment never travels to a server or
// into a Referer) or from the form shown after a 401, and keeps it in sessionStorage: this
// tab only, gone when it closes.

const TOKEN_KEY = "munggoggo.gateway.token";

function takeTokenFromAddress() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const token = fragment.get("token");
  if (!token) return false;
  sessionStorage.setItem(TOKEN_KEY, token);
  fragment.delete("token");
  const rest = fragment.toString();
  const url = window.location.pathname + window.location.search + (rest ? "#" + rest : "");
  history.replaceState(null, "", url); // out of the address bar and the history
  return true;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function apiHeaders() {
  const headers = { accept: "application/json" };
  if (token()) headers.authorization = `Bearer ${token()}`;
  return headers;
}

function askForToken(why) {
  $("token-label").textContent = why;
  $("token-form").hidden = false;
}

function useToken(event) {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  tokenChanged();
}

// Every panel that holds data fetched with the old token reloads on this event.
function tokenChanged() {
  $("token-form").hidden = true;
  document.dispatchEvent(new CustomEvent("mg:token"));
}

// A 401 shows the token form; the error text comes back for the caller to show too.
async function refusal(response) {
  const text = await errorText(response);
  if (response.status === 401) {
    askForToken(token() ? "that token was not accepted" : "this gateway needs a token");
  }
  return text;
}

// ---------------------------------------------------------------- small helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

// An agent <select> (console, send) filled anew with `names`, a "choose an agent" placeholder
// first. The chosen agent, when it is no longer running, stays as a marked, disabled option:
// falling to another agent would send to that one without being asked. Returns nothing.
function fillAgentSelect(select, names) {
  const chosen = select.value;
  const options = [el("option", { value: "", text: "choose an agent", disabled: true })];
  for (const name of names) options.push(el("option", { value: name, text: name }));
  if (chosen && !names.includes(chosen)) {
    const text = `${chosen} (stopped)`;
    options.push(el("option", { value: chosen, text, disabled: true, "data-gone": "true" }));
  }
  select.replaceChildren(...options);
  select.value = chosen;
}

// The running agent an agent <select> names, or "" (the placeholder, or one that stopped).
function chosenAgent(select) {
  const option = select.selectedOptions[0];
  return option && !option.disabled ? option.value : "";
}

let toastTimer = 0;
function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (box.hidden = true), 6000);
}

async function errorText(response) {
  let text = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    const detail = body.error?.message || body.error || body.detail || body.message;
    if (detail) text = typeof detail === "string" ? detail : JSON.stringify(detail);
  } catch (_) {
    /* not JSON: keep the status line */
  }
  return text;
}

// A request to one of the gateway's JSON routes. `body` (any JSON value) is sent as JSON,
// `text` (a string) as text/plain. Resolves to the decoded answer (null when empty);
// rejects with an Error whose message is the gateway's refusal (a 401 shows the token form).
async function api(path, { method = "GET", body, text } = {}) {
  const headers = apiHeaders();
  const init = { method, headers };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  } else if (text !== undefined) {
    headers["content-type"] = "text/plain; charset=utf-8";
    init.body = text;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw new Error(await refusal(response));
  const raw = await response.text();
  return raw ? JSON.parse(raw) : null;
}
