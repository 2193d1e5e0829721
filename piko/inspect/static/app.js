// Piko inspector: one page, no external assets.  Every value from a capture is set as text
// (textContent), never as markup.  Changes are POST/DELETE with application/json, which the
// inspector requires (a cross-site form cannot send it).
"use strict";

const state = {
  rows: new Map(),      // id -> summary (from the list or the stream)
  order: [],            // ids, newest first
  conns: new Map(),
  connOrder: [],
  selected: null,       // full record of the selected exchange
  replays: new Map(),   // original id -> latest replay record
  view: "pretty",
  token: new URLSearchParams(location.hash.slice(1)).get("token"),
};
const $ = (id) => document.getElementById(id);

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  return h;
}

async function api(method, path, body) {
  const init = { method, headers: headers(), credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.startsWith("application/json") ? response.json() : response.text();
}

function showError(error) { $("error").textContent = error ? String(error.message || error) : ""; }

// -- bytes and bodies

function decode(b64) {
  const bin = atob(b64 || "");
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

function splitMessage(bytes) {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return [bytes.slice(0, i), bytes.slice(i + 4)];
    }
  }
  return [bytes, new Uint8Array()];
}

function latin1(bytes) { let s = ""; for (const b of bytes) s += String.fromCharCode(b); return s; }

function text(bytes) {
  try { return new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (e) { return null; }
}

function hexdump(bytes) {
  const lines = [];
  for (let i = 0; i < bytes.length && i < 4096; i += 16) {
    const chunk = Array.from(bytes.slice(i, i + 16));
    lines.push(i.toString(16).padStart(6, "0") + "  " +
      chunk.map((b) => b.toString(16).padStart(2, "0")).join(" ").padEnd(48) + "  " +
      chunk.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join(""));
  }
  if (bytes.length > 4096) lines.push("…");
  return lines.join("\n");
}

function prettyXML(source) {
  const doc = new DOMParser().parseFromString(source, "application/xml");
  if (doc.getElementsByTagName("parsererror").length) return null;
  const out = [];
  (function walk(node, depth) {
    const pad = "  ".repeat(depth);
    for (const child of node.childNodes) {
      if (child.nodeType === 1) {
        const attrs = Array.from(child.attributes).map((a) => ` ${a.name}="${a.value}"`).join("");
        const kids = Array.from(child.childNodes);
        if (kids.length === 1 && kids[0].nodeType === 3) {
          out.push(`${pad}<${child.nodeName}${attrs}>${kids[0].nodeValue.trim()}</${child.nodeName}>`);
        } else if (!kids.length) {
          out.push(`${pad}<${child.nodeName}${attrs}/>`);
        } else {
          out.push(`${pad}<${child.nodeName}${attrs}>`);
          walk(child, depth + 1);
          out.push(`${pad}</${child.nodeName}>`);
        }
      } else if (child.nodeType === 3 && child.nodeValue.trim()) {
        out.push(pad + child.nodeValue.trim());
      }
    }
  })(doc, 0);
  return out.join("\n");
}

function prettyBody(bytes, contentType) {
  if (!bytes.length) return "(no body)";
  const t = text(bytes);
  if (t === null) return hexdump(bytes);
  const type = (contentType || "").toLowerCase();
  if (type.includes("json") || /^\s*[[{]/.test(t)) {
    try { return JSON.stringify(JSON.parse(t), null, 2); } catch (e) { /* not JSON after all */ }
  }
  if (type.includes("xml") || /^\s*<\?xml/.test(t)) {
    const x = prettyXML(t);
    if (x !== null) return x;
  }
  if (type.includes("x-www-form-urlencoded")) {
    return Array.from(new URLSearchParams(t)).map(([k, v]) => `${k} = ${v}`).join("\n");
  }
  return t;
}

function headerLines(map) {
  const lines = [];
  for (const [name, values] of Object.entries(map || {})) {
    for (const v of values) lines.push(`${name}: ${v}`);
  }
  return lines.join("\n");
}

function firstHeader(map, name) {
  for (const [k, v] of Object.entries(map || {})) if (k.toLowerCase() === name) return v[0];
  return "";
}

function sizeNote(body) {
  if (!body) return "";
  const note = `${body.size} bytes`;
  return body.truncated ? `${note}, first ${body.captured} kept (truncated)` : note;
}

// -- rendering one side of an exchange

function messageText(part, record, which) {
  if (!part) return which === "response" ? (record.complete ? "(no response)" : "(waiting)") : "";
  const [head, body] = splitMessage(decode(part.raw));
  if (state.view === "raw") {
    const t = text(body);
    return latin1(head) + "\r\n\r\n" + (t === null ? hexdump(body) : t);
  }
  if (state.view === "headers") return headerLines(part.headers);
  const line = which === "request" ? `${part.method} ${part.uri} ${part.proto}`
    : `${part.proto} ${part.status}`;
  return line + "\n" + headerLines(part.headers) + "\n\n" +
    prettyBody(body, firstHeader(part.headers, "content-type"));
}

function statusClass(code) { return "s" + String(code || 0)[0]; }

function renderDetail() {
  const r = state.selected;
  $("detail").hidden = !r;
  $("detail-empty").hidden = !!r;
  if (!r) return;
  $("d-method").textContent = r.request.method;
  $("d-path").textContent = r.request.uri;
  const code = r.response ? r.response.status_code : 0;
  $("d-status").textContent = r.response ? r.response.status : (r.complete ? "no response" : "…");
  $("d-status").className = "status " + statusClass(code);
  $("d-meta").textContent = `${r.id} · ${r.tunnel_name} · from ${r.remote_addr || "?"} · ` +
    `${new Date(r.start).toLocaleString()} · ${(r.duration / 1e6).toFixed(1)} ms` +
    (r.replay_of ? ` · replay of ${r.replay_of}` : "");
  $("d-error").textContent = r.error || "";
  $("d-req-size").textContent = sizeNote(r.request.body);
  $("d-resp-size").textContent = r.response ? sizeNote(r.response.body) : "";
  $("d-request").textContent = messageText(r.request, r, "request");
  $("d-response").textContent = messageText(r.response, r, "response");
  for (const b of document.querySelectorAll(".tabs button")) {
    b.classList.toggle("on", b.dataset.view === state.view);
  }
  $("replay").disabled = $("modify").disabled = !!r.upgraded;
  $("show-compare").hidden = !state.replays.has(r.id);
}

// -- the comparison of a replay with its original

function comparable(record) {
  if (!record.response) return [record.error || "(no response)"];
  const [, body] = splitMessage(decode(record.response.raw));
  return [`${record.response.proto} ${record.response.status}`]
    .concat(headerLines(record.response.headers).split("\n").filter((l) => !/^Date: /.test(l)))
    .concat([""])
    .concat(prettyBody(body, firstHeader(record.response.headers, "content-type")).split("\n"));
}

function fillCompare(pre, lines, other) {
  pre.textContent = "";
  lines.forEach((line, i) => {
    const span = document.createElement("span");
    span.textContent = line + "\n";
    if (line !== other[i]) span.className = "diff";
    pre.appendChild(span);
  });
}

function showCompare(original, replay) {
  const left = comparable(original);
  const right = comparable(replay);
  fillCompare($("c-left"), left, right);
  fillCompare($("c-right"), right, left);
  $("compare-ids").textContent = `${original.id} → ${replay.id}`;
  $("compare").hidden = false;
  $("compare").dataset.replay = replay.id;
}

// -- the list

function matches(r) {
  const path = $("f-path").value.trim();
  if (path && !r.request.uri.includes(path)) return false;
  const status = $("f-status").value.trim();
  const code = r.response ? r.response.status_code : 0;
  if (status) {
    let m;
    if ((m = /^([1-5])xx$/i.exec(status))) { if (String(code)[0] !== m[1]) return false; }
    else if ((m = /^(>=|<=|>|<|=)?\s*(\d+)$/.exec(status))) {
      const n = Number(m[2]);
      const ok = { ">=": code >= n, "<=": code <= n, ">": code > n, "<": code < n }[m[1]];
      if (ok === undefined ? code !== n : !ok) return false;
    }
  }
  const size = Number($("f-size").value) || 0;
  const bytes = (r.request.body ? r.request.body.size : 0) +
    (r.response && r.response.body ? r.response.body.size : 0);
  if (size && bytes < size) return false;
  const ms = Number($("f-duration").value) || 0;
  if (ms && r.duration / 1e6 < ms) return false;
  const header = $("f-header").value.trim();
  if (header) {
    const [name, value] = header.split(/[=:](.*)/s).map((s) => (s || "").trim().toLowerCase());
    const all = Object.entries(r.request.headers || {})
      .concat(Object.entries((r.response && r.response.headers) || {}));
    const hit = all.some(([k, vs]) => k.toLowerCase() === name &&
      (!value || vs.some((v) => v.toLowerCase().includes(value))));
    if (!hit) return false;
  }
  return true;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function renderList() {
  const tbody = $("requests").tBodies[0];
  tbody.textContent = "";
  let shown = 0;
  for (const id of state.order) {
    const r = state.rows.get(id);
    if (!r || !matches(r)) continue;
    shown++;
    const tr = document.createElement("tr");
    tr.dataset.id = r.id;
    const code = r.response ? r.response.status_code : 0;
    tr.dataset.status = String(code);
    if (r.replay_of) { tr.classList.add("replay"); tr.dataset.replayOf = r.replay_of; }
    if (state.selected && state.selected.id === r.id) tr.classList.add("selected");
    cell(tr, new Date(r.start).toLocaleTimeString());
    cell(tr, r.request.method);
    cell(tr, r.request.uri, "path").title = r.request.uri;
    cell(tr, r.complete ? String(code || "—") : "…", "num " + (r.complete ? statusClass(code) : "pending"));
    const size = r.response && r.response.body ? r.response.body.size : 0;
    cell(tr, String(size), "num");
    cell(tr, r.complete ? (r.duration / 1e6).toFixed(1) : "", "num");
    cell(tr, r.tunnel_name);
    tr.addEventListener("click", () => select(r.id));
    tbody.appendChild(tr);
  }
  $("empty").hidden = shown > 0;
  $("counts").textContent = `${state.order.length} requests` +
    (shown !== state.order.length ? `, ${shown} shown` : "");
  document.body.dataset.requests = String(state.order.length);
}

function renderConnections() {
  const tbody = $("connections").tBodies[0];
  tbody.textContent = "";
  for (const id of state.connOrder) {
    const c = state.conns.get(id);
    const tr = document.createElement("tr");
    tr.dataset.id = c.id;
    tr.dataset.kind = c.kind;
    cell(tr, new Date(c.start).toLocaleTimeString());
    cell(tr, c.kind + (c.open ? " (open)" : ""));
    cell(tr, c.tunnel_name);
    cell(tr, c.target);
    cell(tr, String(c.bytes_in), "num");
    cell(tr, String(c.bytes_out), "num");
    cell(tr, c.open ? "" : (c.duration / 1e6).toFixed(1), "num");
    tbody.appendChild(tr);
  }
}

function upsert(map, order, record) {
  if (!map.has(record.id)) order.unshift(record.id);
  map.set(record.id, record);
}

async function reload() {
  const [list, conns] = await Promise.all([
    api("GET", "api/requests/http?limit=500"), api("GET", "api/connections?limit=200")]);
  state.rows.clear(); state.order = [];
  for (const r of list.requests.slice().reverse()) upsert(state.rows, state.order, r);
  state.conns.clear(); state.connOrder = [];
  for (const c of conns.connections.slice().reverse()) upsert(state.conns, state.connOrder, c);
  for (const r of list.requests) {
    if (r.replay_of && !state.replays.has(r.replay_of)) state.replays.set(r.replay_of, r);
  }
  renderList();
  renderConnections();
  document.body.dataset.loaded = "true";
}

async function select(id) {
  try {
    state.selected = await api("GET", "api/requests/http/" + encodeURIComponent(id));
    $("editor").hidden = true;
    $("curl-box").hidden = true;
    $("compare").hidden = true;
    renderDetail();
    renderList();
  } catch (e) { showError(e); }
}

// -- the live stream (fetch, so an Authorization header can go with it)

async function stream() {
  for (;;) {
    try {
      const response = await fetch("api/stream", { headers: headers() });
      if (!response.ok) throw new Error("stream: " + response.status);
      $("live").textContent = "live"; $("live").classList.add("on");
      await reload();
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          handle(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (e) { /* retried below */ }
    $("live").textContent = "reconnecting"; $("live").classList.remove("on");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function handle(block) {
  let event = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (event === "exchange") {
    const r = JSON.parse(data);
    upsert(state.rows, state.order, r);
    if (r.replay_of && r.complete) state.replays.set(r.replay_of, r);
    renderList();
    if (state.selected && state.selected.id === r.id && r.complete) select(r.id);
  } else if (event === "connection") {
    upsert(state.conns, state.connOrder, JSON.parse(data));
    renderConnections();
  } else if (event === "cleared" || event === "resync") {
    reload().catch(showError);
  }
}

// -- actions

async function replay(changes) {
  const original = state.selected;
  if (!original) return;
  showError(null);
  try {
    const body = Object.assign({ id: original.id, wait: true }, changes || {});
    const record = await api("POST", "api/requests/http", body);
    $("editor").hidden = true;
    state.replays.set(original.id, record);
    upsert(state.rows, state.order, record);
    renderList();
    renderDetail();
    showCompare(original, record);
  } catch (e) { showError(e); }
}

function openEditor() {
  const r = state.selected;
  if (!r) return;
  const [, body] = splitMessage(decode(r.request.raw));
  $("m-method").value = r.request.method;
  $("m-path").value = r.request.uri;
  $("m-headers").value = headerLines(r.request.headers);
  $("m-body").value = text(body) || "";
  $("editor").hidden = false;
}

function sendModified() {
  const lines = $("m-headers").value.split("\n").filter((l) => l.trim());
  const hs = [];
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i <= 0) { showError(`not a header line: ${line}`); return; }
    hs.push([line.slice(0, i).trim(), line.slice(i + 1).trim()]);
  }
  replay({ method: $("m-method").value.trim(), path: $("m-path").value.trim(),
    headers: hs, body: $("m-body").value });
}

async function copyCurl() {
  const r = state.selected;
  if (!r) return;
  try {
    const base = encodeURIComponent($("curl-base").value.trim());
    const command = await api("GET", `api/requests/http/${encodeURIComponent(r.id)}/curl?base=${base}`);
    $("curl-text").value = command.trim();
    $("curl-box").hidden = false;
    $("curl-text").select();
    if (navigator.clipboard) navigator.clipboard.writeText(command.trim()).catch(() => {});
  } catch (e) { showError(e); }
}

async function clearAll() {
  try {
    await api("DELETE", "api/requests/http");
    await api("DELETE", "api/connections");
    state.selected = null;
    state.replays.clear();
    renderDetail();
    await reload();
  } catch (e) { showError(e); }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("replay").addEventListener("click", () => replay(null));
  $("modify").addEventListener("click", openEditor);
  $("m-send").addEventListener("click", sendModified);
  $("m-cancel").addEventListener("click", () => { $("editor").hidden = true; });
  $("curl").addEventListener("click", copyCurl);
  $("clear").addEventListener("click", clearAll);
  $("show-compare").addEventListener("click", () => {
    const r = state.selected;
    if (r && state.replays.has(r.id)) showCompare(r, state.replays.get(r.id));
  });
  for (const b of document.querySelectorAll(".tabs button")) {
    b.addEventListener("click", () => { state.view = b.dataset.view; renderDetail(); });
  }
  for (const input of document.querySelectorAll("#filters input")) {
    input.addEventListener("input", renderList);
  }
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  try {
    const status = await api("GET", "api/status");
    $("curl-base").value = status.proxy_url;
  } catch (e) { showError(e); }
  stream();
});
