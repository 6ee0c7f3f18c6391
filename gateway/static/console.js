// munggoggo gateway dashboard: the method console. Pick an agent (from `mg:agents`) and
// one of its methods; a form is generated from the method's params JSON Schema (or raw
// JSON is typed), checked before sending, and the call goes to POST agents/{id}/call/{m}.
// The answer shows as pretty JSON, or the JSON-RPC error (code, message, data), with the
// round-trip time. Everything lives in this closure: classic scripts share top-level names.
"use strict";

(() => {
  const state = {
    agents: [],
    fields: [], // the generated form's fields: {name, schema, required, read(), write(v)}
    schemaKey: "", // identity/method + the schema text the form was built from
    raw: false,
    busy: false,
  };

  // ------------------------------------------------------------ JSON Schema helpers

  // `#/$defs/Name` (or `#/definitions/Name`) against the params schema; one level at a
  // time, a few levels deep at most (a recursive type stays a reference: JSON field).
  function resolve(schema, root, depth = 0) {
    if (!schema || typeof schema !== "object") return {};
    if (typeof schema.$ref === "string" && depth < 8) {
      const match = /^#\/(\$defs|definitions)\/(.+)$/.exec(schema.$ref);
      const target = match && root && root[match[1]] && root[match[1]][match[2]];
      if (!target) return schema;
      const { $ref, ...rest } = schema;
      return resolve({ ...target, ...rest }, root, depth + 1);
    }
    return schema;
  }

  // `anyOf: [X, {type: null}]` (an optional parameter) -> X, nullable.
  function unwrapNullable(schema, root) {
    const options = schema.anyOf || schema.oneOf;
    if (!Array.isArray(options)) return { schema, nullable: false };
    const rest = options.map((s) => resolve(s, root)).filter((s) => s.type !== "null");
    if (rest.length === 1 && rest.length < options.length) {
      const { anyOf, oneOf, ...outer } = schema;
      return { schema: { ...rest[0], ...outer }, nullable: true };
    }
    return { schema, nullable: false };
  }

  // Which input a schema gets: string, number, integer, boolean, enum, list (an array of
  // simple items, one per line) or json (anything else).
  function widgetOf(schema) {
    if (Array.isArray(schema.enum) && schema.enum.length) return "enum";
    if (schema.const !== undefined) return "enum";
    const type = schema.type;
    if (["string", "number", "integer", "boolean"].includes(type)) return type;
    if (type === "array") {
      const item = schema.items || {};
      if (["string", "number", "integer"].includes(item.type) && !item.enum) return "list";
    }
    return "json";
  }

  function show(value) {
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  function number(text, integer) {
    if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) return null;
    const value = Number(text);
    if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) return null;
    return value;
  }

  // A pattern JavaScript cannot read (Python-only syntax) is left to the agent to check.
  function matches(pattern, value) {
    try {
      return new RegExp(pattern, "u").test(value);
    } catch (_) {
      return true;
    }
  }

  // The schema's own limits (msgspec's Meta): a message, or "" when the value fits.
  function limitProblem(schema, value) {
    if (typeof value === "number") {
      if (schema.minimum !== undefined && value < schema.minimum)
        return `at least ${schema.minimum}`;
      if (schema.maximum !== undefined && value > schema.maximum)
        return `at most ${schema.maximum}`;
      if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum)
        return `more than ${schema.exclusiveMinimum}`;
      if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum)
        return `less than ${schema.exclusiveMaximum}`;
    }
    if (typeof value === "string") {
      if (schema.minLength !== undefined && value.length < schema.minLength)
        return `${schema.minLength} characters or more`;
      if (schema.maxLength !== undefined && value.length > schema.maxLength)
        return `${schema.maxLength} characters or fewer`;
      if (schema.pattern && !matches(schema.pattern, value)) return `must match ${schema.pattern}`;
    }
    if (Array.isArray(value)) {
      if (schema.minItems !== undefined && value.length < schema.minItems)
        return `${schema.minItems} items or more`;
      if (schema.maxItems !== undefined && value.length > schema.maxItems)
        return `${schema.maxItems} items or fewer`;
    }
    return "";
  }

  // ------------------------------------------------------------ the generated form

  // One field: its row and how to read it. read() returns {skip} (left empty: the agent's
  // default applies), {value} or {error}.
  function makeField(name, rawSchema, required, root) {
    const resolved = resolve(rawSchema, root);
    const { schema, nullable } = unwrapNullable(resolved, root);
    const widget = widgetOf(schema);
    const id = `console-field-${name}`;
    const hasDefault = Object.prototype.hasOwnProperty.call(resolved, "default");
    const hint = [
      widget === "list"
        ? `${schema.items.type}[] (one per line)`
        : widget === "json"
          ? "JSON"
          : widget,
      nullable ? "or null" : "",
      hasDefault ? `default ${show(resolved.default)}` : "",
    ]
      .filter(Boolean)
      .join(", ");
    let input;
    if (widget === "boolean") {
      input = el(
        "select",
        { id, name },
        el("option", { value: "", text: required ? "choose" : "(default)" }),
        el("option", { value: "true", text: "true" }),
        el("option", { value: "false", text: "false" })
      );
    } else if (widget === "enum") {
      const values = schema.enum || [schema.const];
      input = el(
        "select",
        { id, name },
        el("option", { value: "", text: required ? "choose" : "(default)" }),
        ...values.map((v, i) => el("option", { value: String(i), text: show(v) }))
      );
    } else if (widget === "list" || widget === "json") {
      input = el("textarea", { id, name, rows: widget === "json" ? 3 : 2, spellcheck: false });
      if (widget === "json") input.placeholder = schema.type === "array" ? "[...]" : "{...}";
    } else {
      input = el("input", { id, name, type: "text", spellcheck: false, autocomplete: "off" });
      if (widget !== "string") input.inputMode = widget === "integer" ? "numeric" : "decimal";
    }
    if (widget === "list")
      input.placeholder =
        hasDefault && Array.isArray(resolved.default) && resolved.default.length
          ? resolved.default.join("\n")
          : "one item per line";
    else if (hasDefault && resolved.default !== null && input.tagName !== "SELECT")
      input.placeholder = show(resolved.default);
    input.dataset.widget = widget;
    if (required) input.setAttribute("aria-required", "true");

    function read() {
      const text = input.value;
      if (text.trim() === "") {
        if (required) return { error: "required" };
        return { skip: true };
      }
      if (nullable && text.trim() === "null" && widget !== "string") return { value: null };
      let value;
      switch (widget) {
        case "string":
          value = text;
          break;
        case "number":
        case "integer":
          value = number(text.trim(), widget === "integer");
          if (value === null)
            return { error: `not ${widget === "integer" ? "an integer" : "a number"}` };
          break;
        case "boolean":
          value = text === "true";
          break;
        case "enum":
          value = (schema.enum || [schema.const])[Number(text)];
          break;
        case "list": {
          const lines = text
            .split("\n")
            .map((l) => l.trim())
            .filter((l) => l !== "");
          const item = schema.items;
          value = [];
          for (const line of lines) {
            const v = item.type === "string" ? line : number(line, item.type === "integer");
            const what = item.type === "integer" ? "an integer" : "a number";
            if (v === null) return { error: `${JSON.stringify(line)} is not ${what}` };
            const problem = limitProblem(item, v);
            if (problem) return { error: `${JSON.stringify(line)}: ${problem}` };
            value.push(v);
          }
          break;
        }
        default:
          try {
            value = JSON.parse(text);
          } catch (err) {
            return { error: "invalid JSON: " + err.message };
          }
          if (
            schema.type === "object" &&
            (value === null || typeof value !== "object" || Array.isArray(value)) &&
            !(nullable && value === null)
          )
            return { error: "must be a JSON object" };
          if (schema.type === "array" && !Array.isArray(value) && !(nullable && value === null))
            return { error: "must be a JSON array" };
      }
      const problem = limitProblem(schema, value);
      return problem ? { error: problem } : { value };
    }

    // Fill from a value (raw JSON -> form); false when the form cannot show it.
    function write(value) {
      if (value === undefined) {
        input.value = "";
        return true;
      }
      switch (widget) {
        case "boolean":
          if (typeof value !== "boolean") return false;
          input.value = String(value);
          return true;
        case "enum": {
          const index = (schema.enum || [schema.const]).findIndex(
            (v) => JSON.stringify(v) === JSON.stringify(value)
          );
          if (index < 0) return false;
          input.value = String(index);
          return true;
        }
        case "list":
          if (!Array.isArray(value)) return false;
          input.value = value.join("\n");
          return true;
        case "json":
          input.value = JSON.stringify(value, null, 2);
          return true;
        case "string":
          if (typeof value !== "string") return false;
          input.value = value;
          return true;
        default:
          if (value === null && nullable) input.value = "null";
          else if (typeof value !== "number") return false;
          else input.value = String(value);
          return true;
      }
    }

    const label = el(
      "label",
      { htmlFor: id },
      el("span", { className: "name", text: name }),
      required ? el("span", { className: "required", title: "required", text: "*" }) : null
    );
    const error = el("span", { className: "field-error", "aria-live": "polite" });
    const row = el(
      "div",
      { className: "field", "data-field": name },
      label,
      input,
      el("span", {
        className: "hint muted",
        text: hint + (schema.description ? " - " + schema.description : ""),
      }),
      error
    );
    return { name, row, input, read, write, error, required };
  }

  function buildForm(schema) {
    const box = $("console-fields");
    const root = schema || {};
    const params = resolve(root, root);
    state.fields = [];
    const properties = params.properties || {};
    const names = Object.keys(properties);
    const freeForm = !names.length && params.additionalProperties !== false;
    if (params.type !== "object" || freeForm) {
      // Not an object schema we can lay out: params are typed as JSON.
      box.replaceChildren(
        el("p", { className: "muted", text: "free-form parameters: use raw JSON" })
      );
      setRaw(true);
      $("console-raw").disabled = true; // no form to go back to
      return;
    }
    $("console-raw").disabled = false;
    const required = new Set(params.required || []);
    state.fields = names.map((name) => makeField(name, properties[name], required.has(name), root));
    box.replaceChildren(
      ...(state.fields.length
        ? state.fields.map((f) => f.row)
        : [el("p", { className: "muted", text: "no parameters" })])
    );
  }

  // The params object from the form, or null after marking the fields in error.
  function readForm() {
    const params = {};
    let ok = true;
    for (const field of state.fields) {
      const got = field.read();
      field.error.textContent = got.error || "";
      field.row.classList.toggle("invalid", Boolean(got.error));
      if (got.error) ok = false;
      else if (!got.skip) params[field.name] = got.value;
    }
    return ok ? params : null;
  }

  function readRaw() {
    const text = $("console-params").value.trim();
    if (!text) return {};
    let value;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new Error("params are not valid JSON: " + err.message);
    }
    if (value === null || typeof value !== "object" || Array.isArray(value))
      throw new Error("params must be a JSON object (by name)");
    return value;
  }

  function setRaw(raw) {
    const box = $("console-params");
    if (raw && !state.raw) {
      const params = state.fields.length ? readFormQuietly() : {};
      box.value = JSON.stringify(params, null, 2);
    } else if (!raw && state.raw) {
      try {
        const value = readRaw();
        for (const field of state.fields) {
          if (!field.write(value[field.name])) field.input.value = "";
        }
      } catch (_) {
        /* unreadable raw text: the form keeps what it had */
      }
    }
    state.raw = raw;
    $("console-raw").checked = raw;
    box.hidden = !raw;
    $("console-fields").hidden = raw;
  }

  function readFormQuietly() {
    const params = {};
    for (const field of state.fields) {
      const got = field.read();
      if (!got.error && !got.skip) params[field.name] = got.value;
    }
    return params;
  }

  // ------------------------------------------------------------ agents and methods

  function currentAgent() {
    const identity = chosenAgent($("console-agent"));
    return state.agents.find((a) => a.identity === identity);
  }

  function methodsOf(agent) {
    const all = new Set([...(agent?.methods || []), ...Object.keys(agent?.schemas || {})]);
    const own = [...all].filter((m) => !CONTROL_METHODS.has(m)).sort();
    const control = [...all].filter((m) => CONTROL_METHODS.has(m)).sort();
    return { own, control };
  }

  function fillSelect(select, groups, keep) {
    const key = JSON.stringify(groups);
    if (select.dataset.key === key) return; // unchanged: keep the open list and the choice
    select.dataset.key = key;
    const children = [];
    for (const [label, values] of groups) {
      const options = values.map((v) => el("option", { value: v, text: v }));
      if (!options.length) continue;
      children.push(label ? el("optgroup", { label }, ...options) : options);
    }
    select.replaceChildren(...children.flat());
    const values = groups.flatMap(([, v]) => v);
    if (values.includes(keep)) select.value = keep;
  }

  function onAgents(list) {
    state.agents = list;
    const select = $("console-agent");
    const names = list.map((a) => a.identity);
    const key = JSON.stringify(names);
    if (select.dataset.key !== key) {
      // Only a changed list is drawn again: the open list and the choice stay.
      select.dataset.key = key;
      fillAgentSelect(select, names);
    }
    onAgentChosen();
  }

  function onAgentChosen() {
    const agent = currentAgent();
    const { own, control } = methodsOf(agent);
    const select = $("console-method");
    fillSelect(
      select,
      [
        ["methods", own],
        ["control", control],
      ],
      select.value
    );
    onMethodChosen();
  }

  function onMethodChosen() {
    const agent = currentAgent();
    const method = $("console-method").value;
    const contract = (agent?.schemas || {})[method] || null;
    const key = `${agent?.identity}/${method}/${JSON.stringify(contract)}`;
    $("console-call").disabled = !agent || !method || state.busy;
    if (key === state.schemaKey) return; // same method, same contract: keep what is typed
    state.schemaKey = key;
    $("console-doc").textContent = contract?.doc || (method ? "no description" : "");
    $("console-invalid").textContent = "";
    $("console-params").value = "{}";
    $("console-time").textContent = ""; // the last answer was another method's
    $("console-outcome").replaceChildren();
    delete $("console-outcome").dataset.outcome;
    state.raw = false;
    if (!method) {
      state.fields = [];
      $("console-fields").replaceChildren();
      setRaw(false);
      $("console-raw").disabled = true;
      return;
    }
    if (contract && contract.params) {
      setRaw(false);
      buildForm(contract.params);
    } else {
      state.fields = [];
      $("console-fields").replaceChildren(
        el("p", { className: "muted", text: "no schema for this method: use raw JSON" })
      );
      setRaw(true);
      $("console-raw").disabled = true;
    }
  }

  // ------------------------------------------------------------ the call

  async function call(event) {
    event.preventDefault();
    const agent = currentAgent();
    const method = $("console-method").value;
    if (!agent || !method || state.busy) return;
    let params;
    try {
      params = state.raw ? readRaw() : readForm();
    } catch (err) {
      $("console-invalid").textContent = err.message;
      return;
    }
    if (params === null) {
      $("console-invalid").textContent = "some parameters are not valid: nothing was sent";
      return;
    }
    $("console-invalid").textContent = "";
    state.busy = true;
    $("console-call").disabled = true;
    const out = $("console-outcome");
    out.dataset.outcome = "pending";
    const url = `agents/${encodeURIComponent(agent.identity)}/call/${encodeURIComponent(method)}`;
    const headers = { ...apiHeaders(), "content-type": "application/json" };
    const started = performance.now();
    try {
      const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(params) });
      const raw = await response.text();
      const elapsed = performance.now() - started;
      let value = null;
      try {
        value = raw ? JSON.parse(raw) : null;
      } catch (_) {
        value = raw;
      }
      $("console-time").textContent = `${Math.round(elapsed)} ms`;
      if (response.status === 401)
        askForToken(token() ? "that token was not accepted" : "this gateway needs a token");
      if (response.ok) showResult(value);
      else showError(response, value);
    } catch (err) {
      $("console-time").textContent = "";
      showError(null, { error: { message: "the gateway did not answer: " + err.message } });
    } finally {
      state.busy = false;
      $("console-call").disabled = !currentAgent() || !$("console-method").value;
    }
  }

  function showResult(value) {
    const out = $("console-outcome");
    out.dataset.outcome = "result";
    out.replaceChildren(
      el("div", { className: "outcome-head ok", text: "result" }),
      el("pre", { id: "console-result", text: JSON.stringify(value, null, 2) })
    );
  }

  function showError(response, value) {
    const error = (value && typeof value === "object" && value.error) || {};
    const detail = typeof error === "object" ? error : { message: String(error) };
    const rows = [
      ["status", response ? `${response.status} ${response.statusText}`.trim() : "-"],
      ["code", detail.code === undefined ? "-" : String(detail.code)],
      ["message", detail.message || (typeof value === "string" ? value : "-")],
    ];
    if (detail.data !== undefined) rows.push(["data", JSON.stringify(detail.data, null, 2)]);
    const out = $("console-outcome");
    out.dataset.outcome = "error";
    out.replaceChildren(
      el("div", { className: "outcome-head bad", text: "error" }),
      el(
        "dl",
        { id: "console-error" },
        ...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { "data-key": k, text: v })])
      )
    );
  }

  // ------------------------------------------------------------ wiring

  function start() {
    if (!$("console-form")) return;
    $("console-agent").addEventListener("change", onAgentChosen);
    $("console-method").addEventListener("change", onMethodChosen);
    $("console-raw").addEventListener("change", (e) => setRaw(e.target.checked));
    $("console-form").addEventListener("submit", call);
    document.addEventListener("mg:agents", (e) =>
      onAgents(Array.isArray(e.detail) ? e.detail : [])
    );
    onAgents([]);
  }

  start();
})();
