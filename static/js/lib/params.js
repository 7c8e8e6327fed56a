// The parameter fields of both pages, read with the checks the server makes again.
// `table` is the server's parameter table (each page's config carries it as `parameters`,
// written with json_script): name -> {kind, min, max}. A field says which parameter it
// sets with data-param and how its text reads with data-kind: the table's numeric kinds
// (number, integer), or boolean (a true/false select), boolean-always (a checkbox that is
// always sent), include-usage (stream_options.include_usage, sent only when off), string,
// stop (text, or a JSON list) and json. An empty field is not sent.

// What extra_body may not set: the run's own model and messages (the server's RESERVED,
// written into the page by `{% client_config %}`).
export const RESERVED = JSON.parse(document.getElementById("client-config").textContent).reserved;
const MAX_STOP = 4;

/** One field's value, or throws an Error whose message says why (after the field's name). */
export function parseParam(name, kind, raw, spec = {}) {
  if (kind === "boolean-always" || kind === "include-usage") return raw;
  if (kind === "boolean") return raw === "true";
  if (kind === "string") return raw;
  if (kind === "stop") {
    if (raw.startsWith("[")) {
      const list = JSON.parse(raw);
      if (!Array.isArray(list) || list.length > MAX_STOP) throw new Error(`can hold at most ${MAX_STOP} sequences`);
      return list;
    }
    return raw.replace(/\\n/g, "\n");
  }
  if (kind === "json") {
    let value;
    try { value = JSON.parse(raw); } catch { throw new Error("is not valid JSON"); }
    if (name === "extra_body") {
      if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("must be a JSON object");
      const clash = RESERVED.filter((key) => Object.hasOwn(value, key));
      if (clash.length) throw new Error(`cannot set ${clash.join(", ")}`);
    }
    return value;
  }
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error("must be a number");
  if (kind === "integer" && !Number.isInteger(value)) throw new Error("must be a whole number");
  if (spec.min != null && spec.max != null && (value < spec.min || value > spec.max)) {
    throw new Error(`must be between ${spec.min} and ${spec.max}`);
  }
  if (spec.min != null && value < spec.min) throw new Error(`must be at least ${spec.min}`);
  if (spec.max != null && value > spec.max) throw new Error(`must be at most ${spec.max}`);
  return value;
}

/** The parameters `inputs` set: `params` to send, the `extra` body, and `errors` by name. */
export function readParams(inputs, table) {
  const params = {};
  const errors = {};
  let extra = {};
  for (const input of inputs) {
    const name = input.dataset.param;
    const kind = input.dataset.kind;
    if (input.validity?.badInput) { errors[name] = "must be a number"; continue; }
    const raw = input.type === "checkbox" ? input.checked : input.value.trim();
    if (raw === "") continue; // unset: not sent
    try {
      const value = parseParam(name, kind, raw, table[name] || {});
      if (kind === "include-usage") continue; // sent with stream, below
      if (name === "extra_body") extra = value; else params[name] = value;
    } catch (error) {
      errors[name] = error.message;
    }
  }
  if (params.stream) {
    const includeUsage = [...inputs].find((input) => input.dataset.kind === "include-usage");
    if (includeUsage && !includeUsage.checked) params.stream_options = { include_usage: false };
  }
  if ("top_logprobs" in params && params.logprobs !== true) errors.top_logprobs = "needs logprobs set to true";
  return { params, extra, errors };
}

/** Fills `inputs` from `params` and `extra`; a parameter not given is cleared (not sent). */
export function fillParams(inputs, params, extra) {
  for (const input of inputs) {
    const name = input.dataset.param;
    const kind = input.dataset.kind;
    const value = name === "extra_body" ? (Object.keys(extra).length ? extra : undefined) : params[name];
    if (kind === "boolean-always") input.checked = Boolean(params.stream);
    else if (kind === "include-usage") input.checked = params.stream_options?.include_usage !== false;
    else if (value === undefined) input.value = "";
    else if (kind === "boolean") input.value = String(value);
    else if (kind === "json" || (kind === "stop" && Array.isArray(value))) input.value = JSON.stringify(value);
    else input.value = String(value);
  }
}

/**
 * Shows each field's problem in its `<id>-error` slot as "<label> <why>", and marks it
 * invalid; `fields` is a list of [name, input], `label(name)` the name as the page says it.
 */
export function showFieldErrors(fields, errors, label = (name) => name) {
  for (const [name, input] of fields) {
    const message = errors[name] || "";
    const slot = document.getElementById(`${input.id}-error`);
    if (slot) slot.textContent = message ? `${label(name)} ${message}` : "";
    input.setAttribute("aria-invalid", message ? "true" : "false");
  }
}
