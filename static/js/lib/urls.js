// The paths the pages call, from the server: `{% client_config %}` (playground/templatetags/
// client.py) writes them by URL name (playground/urls.py), with `{id}` for a row id.
// No script writes a path of its own; ask this module.
const { urls } = JSON.parse(document.getElementById("client-config").textContent);

/** The path of route `name`, its `{id}` filled, with `query`'s non-empty values as a query string. */
export function url(name, id = null, query = null) {
  const template = urls[name];
  if (template === undefined) throw new Error(`No URL named ${name} in the client config.`);
  if (template.includes("{id}") !== (id != null)) throw new Error(`URL ${name} takes ${id == null ? "an" : "no"} id.`);
  let path = id == null ? template : template.replace("{id}", encodeURIComponent(id));
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value != null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  if (text) path += `?${text}`;
  return path;
}

/** The id in `path` when it is route `name`'s path (or begins with it), else null. */
export function idIn(name, path) {
  const [before, after] = urls[name].split("{id}");
  const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const match = path.match(new RegExp(`^${escape(before)}(\\d+)${escape(after)}`));
  return match ? Number(match[1]) : null;
}
