# -*- test-case-name: piko.test.server.test_dashboard -*-
"""
The status dashboard on the admin port: ``/ui`` (``/`` redirects there).

One self-contained page: inline CSS and JavaScript, no build step and no external asset (its
``Content-Security-Policy`` forbids loading any).  It polls the admin API of the node serving
it, every two seconds by default (``?interval=<seconds>``):

* ``/status/cluster/nodes`` for the nodes, their status and addresses;
* ``/status/cluster/nodes/<id>`` for each node's endpoints and upstream counts, shown as an
  endpoint by node table;
* ``/metrics`` for this node's request rate, from the change in ``piko_proxy_requests_total``
  (by status class) between two polls, plus requests in flight and connected upstreams.

Endpoint and node ids come from upstreams and peers, so they are only ever set as text, never
as markup.  With admin auth on, the page and its API calls need the same token (a browser
does not add one by itself): put the dashboard behind an authenticating proxy.
"""

from __future__ import annotations

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Piko status</title>
<style>
  :root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f8f9fb; --card: #fff;
          --ok: #12805c; --warn: #b54708; --bad: #b42318; --accent: #3856d6; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
         color: var(--fg); background: var(--bg); }
  header { display: flex; align-items: baseline; gap: 1rem; padding: .9rem 1.5rem;
           background: var(--card); border-bottom: 1px solid var(--line); }
  header h1 { margin: 0; font-size: 1.15rem; }
  header .meta { color: var(--muted); font-size: .85rem; }
  #error { color: var(--bad); font-weight: 600; }
  main { padding: 1.2rem 1.5rem; display: grid; gap: 1.2rem; }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
            padding: 1rem 1.2rem; overflow-x: auto; }
  h2 { margin: 0 0 .7rem; font-size: 1rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .4rem .7rem; border-bottom: 1px solid var(--line);
           white-space: nowrap; }
  th { color: var(--muted); font-weight: 600; font-size: .8rem; text-transform: uppercase; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .status { display: inline-block; padding: 0 .5rem; border-radius: 999px; font-size: .8rem;
            color: #fff; background: var(--muted); }
  .status.active { background: var(--ok); }
  .status.unreachable { background: var(--bad); }
  .status.left { background: var(--warn); }
  .tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(10rem, 1fr));
           gap: .8rem; }
  .tile { border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; }
  .tile .label { color: var(--muted); font-size: .8rem; }
  .tile .value { font-size: 1.4rem; font-weight: 600; font-variant-numeric: tabular-nums; }
  .empty { color: var(--muted); }
  .zero { color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>Piko status</h1>
  <span class="meta">node <span id="local-node">&hellip;</span></span>
  <span class="meta">updated <span id="updated">never</span></span>
  <span id="error" role="alert"></span>
</header>
<main>
  <section>
    <h2>Requests on this node</h2>
    <div class="tiles">
      <div class="tile"><div class="label">requests/s</div>
        <div class="value" id="rate-total">&ndash;</div></div>
      <div class="tile"><div class="label">2xx/s</div>
        <div class="value" id="rate-2xx">&ndash;</div></div>
      <div class="tile"><div class="label">4xx/s</div>
        <div class="value" id="rate-4xx">&ndash;</div></div>
      <div class="tile"><div class="label">5xx/s</div>
        <div class="value" id="rate-5xx">&ndash;</div></div>
      <div class="tile"><div class="label">in flight</div>
        <div class="value" id="in-flight">&ndash;</div></div>
      <div class="tile"><div class="label">connected upstreams</div>
        <div class="value" id="connected-upstreams">&ndash;</div></div>
      <div class="tile"><div class="label">requests (total)</div>
        <div class="value" id="requests-total">&ndash;</div></div>
    </div>
  </section>
  <section>
    <h2>Nodes</h2>
    <table id="nodes"><thead><tr><th>Node</th><th>Status</th><th>Proxy</th><th>Admin</th>
      <th class="num">Endpoints</th><th class="num">Upstreams</th></tr></thead>
      <tbody></tbody></table>
  </section>
  <section>
    <h2>Endpoints (upstream connections per node)</h2>
    <table id="endpoints"><thead><tr></tr></thead><tbody></tbody></table>
  </section>
</main>
<script>
"use strict";
(function () {
  var params = new URLSearchParams(location.search);
  var interval = Math.max(0.5, parseFloat(params.get("interval")) || 2) * 1000;
  var previous = null;

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }
  function setText(id, text) { document.getElementById(id).textContent = text; }
  function getJSON(path) {
    return fetch(path, {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error(path + ": " + r.status); }
      return r.json();
    });
  }
  function getText(path) {
    return fetch(path, {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error(path + ": " + r.status); }
      return r.text();
    });
  }

  // Prometheus text exposition: {name: [{labels: {...}, value: n}]}
  function parseMetrics(text) {
    var out = {};
    text.split("\\n").forEach(function (line) {
      if (!line || line.charAt(0) === "#") { return; }
      var m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\\{(.*)\\})?\\s+(\\S+)/.exec(line);
      if (!m) { return; }
      var labels = {};
      var re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\]|\\\\.)*)"/g, l;
      while ((l = re.exec(m[3] || "")) !== null) { labels[l[1]] = l[2]; }
      (out[m[1]] = out[m[1]] || []).push({labels: labels, value: parseFloat(m[4])});
    });
    return out;
  }
  function sum(samples, keep) {
    return (samples || []).reduce(function (acc, s) {
      return acc + (!keep || keep(s.labels) ? s.value : 0);
    }, 0);
  }
  function fmtRate(v) { return v === null ? "\\u2013" : (v < 10 ? v.toFixed(2) : v.toFixed(1)); }

  function renderRates(metrics, now) {
    var requests = metrics.piko_proxy_requests_total;
    var totals = {
      total: sum(requests),
      "2xx": sum(requests, function (l) { return l.status && l.status.charAt(0) === "2"; }),
      "4xx": sum(requests, function (l) { return l.status && l.status.charAt(0) === "4"; }),
      "5xx": sum(requests, function (l) { return l.status && l.status.charAt(0) === "5"; })
    };
    Object.keys(totals).forEach(function (key) {
      var rate = null;
      if (previous && now > previous.time) {
        rate = Math.max(0, totals[key] - previous.totals[key]) / ((now - previous.time) / 1000);
      }
      setText("rate-" + key, fmtRate(rate));
    });
    previous = {time: now, totals: totals};
    setText("requests-total", String(totals.total));
    setText("in-flight", String(sum(metrics.piko_proxy_requests_in_flight)));
    setText("connected-upstreams", String(sum(metrics.piko_upstreams_connected_upstreams)));
  }

  function renderNodes(nodes) {
    var body = document.querySelector("#nodes tbody");
    body.replaceChildren();
    nodes.forEach(function (n) {
      var tr = el("tr");
      tr.dataset.node = n.id;
      tr.appendChild(el("td", n.id));
      var status = el("td");
      status.appendChild(el("span", n.status, "status " + n.status));
      tr.appendChild(status);
      tr.appendChild(el("td", n.proxy_addr));
      tr.appendChild(el("td", n.admin_addr));
      tr.appendChild(el("td", n.endpoints, "num"));
      tr.appendChild(el("td", n.upstreams, "num"));
      body.appendChild(tr);
    });
  }

  function renderEndpoints(nodes, details) {
    var head = document.querySelector("#endpoints thead tr");
    var body = document.querySelector("#endpoints tbody");
    head.replaceChildren(el("th", "Endpoint"));
    nodes.forEach(function (n) { head.appendChild(el("th", n.id, "num")); });
    head.appendChild(el("th", "Total", "num"));
    var names = {};
    details.forEach(function (d) {
      Object.keys((d && d.endpoints) || {}).forEach(function (e) { names[e] = true; });
    });
    body.replaceChildren();
    var sorted = Object.keys(names).sort();
    if (!sorted.length) {
      var td = el("td", "No endpoint has an upstream connected.", "empty");
      td.colSpan = nodes.length + 2;
      body.appendChild(el("tr")).appendChild(td);
      return;
    }
    sorted.forEach(function (name) {
      var tr = el("tr"), total = 0;
      tr.dataset.endpoint = name;
      tr.appendChild(el("td", name));
      details.forEach(function (d, i) {
        var count = (d && d.endpoints && d.endpoints[name]) || 0;
        total += count;
        var td = el("td", count, count ? "num" : "num zero");
        td.dataset.node = nodes[i].id;
        tr.appendChild(td);
      });
      tr.appendChild(el("td", total, "num total"));
      body.appendChild(tr);
    });
  }

  function refresh() {
    var nodesP = getJSON("/status/cluster/nodes").then(function (nodes) {
      nodes.sort(function (a, b) { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0; });
      renderNodes(nodes);
      return Promise.all(nodes.map(function (n) {
        return getJSON("/status/cluster/nodes/" + encodeURIComponent(n.id))
          .catch(function () { return null; });
      })).then(function (details) { renderEndpoints(nodes, details); });
    });
    var localP = getJSON("/status/cluster/nodes/local").then(function (local) {
      setText("local-node", local.id);
    });
    var metricsP = getText("/metrics").then(function (text) {
      renderRates(parseMetrics(text), performance.now());
    });
    return Promise.all([nodesP, localP, metricsP]).then(function () {
      setText("error", "");
      setText("updated", new Date().toLocaleTimeString());
      document.body.dataset.loaded = "true";
    }, function (err) {
      setText("error", "refresh failed: " + err.message);
    });
  }

  function loop() { refresh().then(function () { setTimeout(loop, interval); }); }
  loop();
})();
</script>
</body>
</html>
"""

#: The page's bytes.
PAGE = _PAGE.encode("utf-8")

#: Its response headers: no caching, and no asset from anywhere but the page itself.
PAGE_HEADERS = (
    (b"Cache-Control", b"no-store"),
    (
        b"Content-Security-Policy",
        b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        b"connect-src 'self'; img-src data:; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"Content-Type", b"text/html; charset=utf-8"),
    (b"X-Content-Type-Options", b"nosniff"),
)
