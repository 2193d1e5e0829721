# -*- test-case-name: piko.test.server.test_dashboard -*-
"""
The status dashboard on the admin port: ``/ui`` (``/`` redirects there).

One self-contained page: inline CSS and JavaScript, charts drawn on ``<canvas>`` by the page
itself, no build step and no external asset (its ``Content-Security-Policy`` forbids loading
any).  It polls the admin API of the node serving it, every two seconds by default
(``?interval=<seconds>``):

* ``/status/cluster/nodes`` for the nodes of the cluster, their status and addresses;
* ``/status/dashboard/node?forward=<node-id>`` for each node's traffic, upstreams and recent
  errors (see :mod:`piko.server.admin` and :mod:`piko.server.traffic`): the serving node relays
  the request to the others' admin ports, so the browser only talks to one.

From these it shows the whole cluster (or one node, picked in the header): rates and latency of
the last minute, charts of requests, errors, p99 latency and bytes over the last fifteen
minutes, a per-endpoint table (HTTP and TCP apart), the nodes, the upstream sessions and the
recent errors.  Node figures are summed; latency percentiles are read from the merged latency
histograms.  A node that does not answer (a Go node has no such route) is shown without figures.

Endpoint and node ids, addresses and error reasons come from upstreams, peers and clients, so
they are only ever set as text, never as markup.  With admin auth on, the page and its API
calls need the same token (a browser does not add one by itself): put the dashboard behind an
authenticating proxy.
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
  header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 1rem;
           padding: .9rem 1.5rem; background: var(--card); border-bottom: 1px solid var(--line); }
  header h1 { margin: 0; font-size: 1.15rem; }
  header .meta { color: var(--muted); font-size: .85rem; }
  #error { color: var(--bad); font-weight: 600; }
  main { padding: 1.2rem 1.5rem; display: grid; gap: 1.2rem;
         grid-template-columns: repeat(auto-fit, minmax(min(100%, 34rem), 1fr)); }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
            padding: 1rem 1.2rem; overflow-x: auto; min-width: 0; }
  section.wide { grid-column: 1 / -1; }
  h2 { margin: 0 0 .7rem; font-size: 1rem; }
  h2 .sub { color: var(--muted); font-weight: 400; font-size: .8rem; margin-left: .4rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line);
           white-space: nowrap; }
  th { color: var(--muted); font-weight: 600; font-size: .8rem; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  td.reason { white-space: normal; min-width: 12rem; }
  .status { display: inline-block; padding: 0 .5rem; border-radius: 999px; font-size: .8rem;
            color: #fff; background: var(--muted); }
  .status.active { background: var(--ok); }
  .status.unreachable { background: var(--bad); }
  .status.left { background: var(--warn); }
  .kind { font-size: .75rem; padding: 0 .4rem; border-radius: 4px; border: 1px solid var(--line); }
  .kind.tcp { color: #6b3fa0; } .kind.http { color: var(--accent); }
  .tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(8.5rem, 1fr));
           gap: .8rem; }
  .tile { border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; }
  .tile .label { color: var(--muted); font-size: .8rem; }
  .tile .value { font-size: 1.4rem; font-weight: 600; font-variant-numeric: tabular-nums; }
  .empty, .zero { color: var(--muted); }
  .bad { color: var(--bad); }
  canvas { width: 100%; height: 170px; display: block; }
  .legend { display: flex; flex-wrap: wrap; gap: .3rem .9rem; font-size: .8rem;
            color: var(--muted); margin-top: .3rem; }
  .legend i { display: inline-block; width: .8rem; height: .8rem; border-radius: 2px;
              vertical-align: -1px; margin-right: .3rem; }
  select { font: inherit; }
</style>
</head>
<body>
<header>
  <h1>Piko status</h1>
  <span class="meta">served by node <span id="local-node">&hellip;</span></span>
  <label class="meta">view
    <select id="scope"><option value="">whole cluster</option></select></label>
  <span class="meta">updated <span id="updated">never</span></span>
  <span id="error" role="alert"></span>
</header>
<main>
  <section class="wide">
    <h2>Traffic <span class="sub" id="scope-label">whole cluster</span>
      <span class="sub">rates over the last minute, percentiles over 15 minutes</span></h2>
    <div class="tiles">
      <div class="tile"><div class="label">requests/s</div>
        <div class="value" id="rate-total">&ndash;</div></div>
      <div class="tile"><div class="label">errors/s</div>
        <div class="value" id="rate-errors">&ndash;</div></div>
      <div class="tile"><div class="label">requests (15 min)</div>
        <div class="value" id="requests-total">&ndash;</div></div>
      <div class="tile"><div class="label">errors (15 min)</div>
        <div class="value" id="errors-total">&ndash;</div></div>
      <div class="tile"><div class="label">p50 latency</div>
        <div class="value" id="p50">&ndash;</div></div>
      <div class="tile"><div class="label">p99 latency</div>
        <div class="value" id="p99">&ndash;</div></div>
      <div class="tile"><div class="label">upstreams</div>
        <div class="value" id="upstream-count">&ndash;</div></div>
      <div class="tile"><div class="label">nodes</div>
        <div class="value" id="node-count">&ndash;</div></div>
    </div>
  </section>
  <section>
    <h2>Requests/s <span class="sub">last 15 minutes, by endpoint</span></h2>
    <canvas id="chart-requests" width="600" height="170"></canvas>
    <div class="legend" id="legend-requests"></div>
  </section>
  <section>
    <h2>Errors/s <span class="sub">5xx and failed connections</span></h2>
    <canvas id="chart-errors" width="600" height="170"></canvas>
    <div class="legend" id="legend-errors"></div>
  </section>
  <section>
    <h2>p99 latency <span class="sub">per 10 s, slowest node</span></h2>
    <canvas id="chart-latency" width="600" height="170"></canvas>
    <div class="legend" id="legend-latency"></div>
  </section>
  <section>
    <h2>Bytes/s <span class="sub">in from clients, out to clients</span></h2>
    <canvas id="chart-bytes" width="600" height="170"></canvas>
    <div class="legend" id="legend-bytes"></div>
  </section>
  <section class="wide">
    <h2>Endpoints <span class="sub">last 15 minutes; rates over the last minute</span></h2>
    <table id="endpoints"><thead><tr><th>Endpoint</th><th>Kind</th>
      <th class="num">Requests/s</th><th class="num">Errors/s</th>
      <th class="num">Requests</th><th class="num">Errors</th><th class="num">Error %</th>
      <th class="num">p50</th><th class="num">p99</th>
      <th class="num">Bytes in</th><th class="num">Bytes out</th>
      <th class="num">Upstreams</th><th class="num">Refused</th></tr></thead>
      <tbody></tbody></table>
  </section>
  <section class="wide">
    <h2>Nodes</h2>
    <table id="nodes"><thead><tr><th>Node</th><th>Status</th><th>Proxy</th><th>Admin</th>
      <th class="num">Endpoints</th><th class="num">Upstreams</th>
      <th class="num">Requests/s</th><th class="num">Requests</th><th class="num">Errors</th>
      <th class="num">Forwarded in</th><th>Dashboard data</th></tr></thead>
      <tbody></tbody></table>
  </section>
  <section>
    <h2>Upstreams</h2>
    <table id="upstreams"><thead><tr><th>Node</th><th>Endpoint</th><th>Address</th>
      <th>Connected since</th><th class="num">Streams open</th></tr></thead>
      <tbody></tbody></table>
  </section>
  <section>
    <h2>Recent errors</h2>
    <table id="errors"><thead><tr><th>Time</th><th>Node</th><th>Endpoint</th><th>Kind</th>
      <th class="num">Status</th><th>Reason</th></tr></thead><tbody></tbody></table>
  </section>
</main>
<script>
"use strict";
(function () {
  var params = new URLSearchParams(location.search);
  var interval = Math.max(0.5, parseFloat(params.get("interval")) || 2) * 1000;
  var COLORS = ["#3856d6", "#12805c", "#b54708", "#b42318", "#6b3fa0", "#0e7490",
                "#a16207", "#be185d"];
  var MAX_LINES = 8;
  var scopeSelect = document.getElementById("scope");
  var lastNodeIds = "";

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }
  function numCell(value, text, cls) {
    var td = el("td", text === undefined ? value : text, "num" + (cls ? " " + cls : ""));
    td.dataset.value = String(value);
    return td;
  }
  function setText(id, text) { document.getElementById(id).textContent = text; }
  function getJSON(path) {
    return fetch(path, {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error(path + ": " + r.status); }
      return r.json();
    });
  }
  function fmtRate(v) {
    if (v === null || v === undefined) { return "\\u2013"; }
    return v < 10 ? v.toFixed(2) : v.toFixed(1);
  }
  function fmtSeconds(v) {
    if (v === null || v === undefined) { return "\\u2013"; }
    return v < 1 ? "\\u2264" + Math.round(v * 1000 * 10) / 10 + " ms" : "\\u2264" + v + " s";
  }
  function fmtBytes(v) {
    var units = ["B", "kB", "MB", "GB", "TB"], i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (i || v % 1 ? v.toFixed(1) : String(v)) + " " + units[i];
  }
  function fmtAxisSeconds(v) {
    return v < 1 ? Math.round(v * 10000) / 10 + " ms" : Math.round(v * 100) / 100 + " s";
  }
  function fmtDuration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m ? m + "m " + s + "s" : s + "s";
  }
  function fmtTime(epoch) { return new Date(epoch * 1000).toLocaleTimeString(); }

  // The latency histogram's p-quantile: the upper bound of the bucket holding it.
  function quantile(hist, bounds, q) {
    var total = hist.reduce(function (a, b) { return a + b; }, 0);
    if (!total) { return null; }
    var seen = 0;
    for (var i = 0; i < hist.length; i++) {
      seen += hist[i];
      if (seen >= q * total) { return bounds[Math.min(i, bounds.length - 1)]; }
    }
    return bounds[bounds.length - 1];
  }
  function addInto(target, source) {
    for (var i = 0; i < source.length; i++) { target[i] = (target[i] || 0) + source[i]; }
  }

  // Endpoint figures summed over the nodes in view: key "kind endpoint".
  function merge(reports) {
    var merged = {}, bounds = null, bucketSeconds = 10, buckets = 90, rateSeconds = 60;
    reports.forEach(function (r) {
      bounds = r.latency_bounds; bucketSeconds = r.bucket_seconds; buckets = r.buckets;
      rateSeconds = r.rate_seconds;
      r.endpoints.forEach(function (e) {
        var key = e.kind + " " + e.endpoint;
        var m = merged[key];
        if (!m) {
          m = merged[key] = {endpoint: e.endpoint, kind: e.kind, requests: 0, errors: 0,
            bytes_in: 0, bytes_out: 0, rps: 0, eps: 0, forwarded_in: 0, refused: 0, latency: [],
            series: {requests: [], errors: [], bytes: [], p99: []}};
        }
        m.requests += e.requests; m.errors += e.errors;
        m.bytes_in += e.bytes_in; m.bytes_out += e.bytes_out;
        m.rps += e.requests_per_second; m.eps += e.errors_per_second;
        m.forwarded_in += e.forwarded_in; m.refused += e.refused || 0;
        addInto(m.latency, e.latency_histogram);
        addInto(m.series.requests, e.series.requests);
        addInto(m.series.errors, e.series.errors);
        var bytes = e.series.bytes_in.map(function (v, i) { return v + e.series.bytes_out[i]; });
        addInto(m.series.bytes, bytes);
        e.series.p99_seconds.forEach(function (v, i) {
          if (v !== null && (m.series.p99[i] === undefined || m.series.p99[i] === null ||
                             v > m.series.p99[i])) { m.series.p99[i] = v; }
          else if (m.series.p99[i] === undefined) { m.series.p99[i] = null; }
        });
      });
    });
    return {endpoints: merged, bounds: bounds || [], bucketSeconds: bucketSeconds,
            buckets: buckets, rateSeconds: rateSeconds};
  }

  function chart(id, lines, opts) {
    var canvas = document.getElementById(id);
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.clientWidth || 600, height = canvas.clientHeight || 170;
    canvas.width = Math.round(width * ratio); canvas.height = Math.round(height * ratio);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var left = 58, right = 8, top = 8, bottom = 20;
    var w = width - left - right, h = height - top - bottom;
    var n = opts.buckets, max = 0;
    lines.forEach(function (line) {
      line.values.forEach(function (v) { if (v !== null && v > max) { max = v; } });
    });
    max = max > 0 ? max * 1.1 : 1;
    ctx.font = "11px system-ui, sans-serif";
    ctx.strokeStyle = "#e4e7ec"; ctx.fillStyle = "#667085"; ctx.lineWidth = 1;
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (var g = 0; g <= 4; g++) {
      var y = top + h - h * g / 4;
      ctx.beginPath(); ctx.moveTo(left, y + .5); ctx.lineTo(left + w, y + .5); ctx.stroke();
      ctx.fillText(opts.format(max * g / 4), left - 6, y);
    }
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    [15, 10, 5, 0].forEach(function (minutes) {
      var x = left + w * (1 - minutes * 60 / (n * opts.bucketSeconds));
      ctx.fillText(minutes ? "-" + minutes + " min" : "now",
                   Math.max(left + 22, Math.min(x, left + w - 12)), top + h + 4);
    });
    var legend = document.getElementById(id.replace("chart-", "legend-"));
    legend.replaceChildren();
    if (!lines.length) {
      ctx.textAlign = "center"; ctx.textBaseline = "middle";
      ctx.fillText("no traffic in the last 15 minutes", left + w / 2, top + h / 2);
    }
    lines.forEach(function (line, i) {
      var color = COLORS[i % COLORS.length];
      ctx.strokeStyle = color; ctx.lineWidth = 1.6; ctx.beginPath();
      var drawing = false;
      line.values.forEach(function (v, j) {
        if (v === null || v === undefined) { drawing = false; return; }
        var x = left + w * (j + 0.5) / n, y = top + h - h * v / max;
        if (drawing) { ctx.lineTo(x, y); } else { ctx.moveTo(x, y); drawing = true; }
      });
      ctx.stroke();
      // A bucket between two empty ones is a dot (a line needs two points).
      ctx.fillStyle = color;
      line.values.forEach(function (v, j) {
        var before = line.values[j - 1], after = line.values[j + 1];
        if (v === null || v === undefined || (before !== null && before !== undefined) ||
            (after !== null && after !== undefined)) { return; }
        ctx.beginPath();
        ctx.arc(left + w * (j + 0.5) / n, top + h - h * v / max, 2.5, 0, 2 * Math.PI);
        ctx.fill();
      });
      var item = el("span", line.label);
      item.prepend(el("i"));
      item.firstChild.style.background = color;
      legend.appendChild(item);
    });
  }

  function topLines(entries, pick, perSecond, bucketSeconds) {
    var sorted = entries.slice().sort(function (a, b) { return b.requests - a.requests; });
    var lines = sorted.slice(0, MAX_LINES).map(function (e) {
      return {label: e.endpoint + (e.kind === "tcp" ? " (tcp)" : ""),
              values: pick(e).map(function (v) {
                return v === null || v === undefined ? null : perSecond ? v / bucketSeconds : v;
              })};
    });
    return lines;
  }

  function renderTraffic(view, upstreamCount, nodeCount) {
    var entries = Object.keys(view.endpoints).sort().map(function (k) {
      return view.endpoints[k];
    });
    var total = {requests: 0, errors: 0, rps: 0, eps: 0, latency: []};
    entries.forEach(function (e) {
      total.requests += e.requests; total.errors += e.errors;
      total.rps += e.rps; total.eps += e.eps; addInto(total.latency, e.latency);
    });
    setText("rate-total", fmtRate(total.rps));
    setText("rate-errors", fmtRate(total.eps));
    setText("requests-total", String(total.requests));
    setText("errors-total", String(total.errors));
    setText("p50", fmtSeconds(quantile(total.latency, view.bounds, 0.5)));
    setText("p99", fmtSeconds(quantile(total.latency, view.bounds, 0.99)));
    setText("upstream-count", String(upstreamCount));
    setText("node-count", String(nodeCount));

    var opts = {buckets: view.buckets, bucketSeconds: view.bucketSeconds, format: fmtRate};
    chart("chart-requests", topLines(entries, function (e) { return e.series.requests; },
                                     true, view.bucketSeconds), opts);
    var failing = entries.filter(function (e) { return e.errors > 0; });
    chart("chart-errors", topLines(failing, function (e) { return e.series.errors; },
                                   true, view.bucketSeconds), opts);
    chart("chart-latency", topLines(entries, function (e) { return e.series.p99; }, false),
          {buckets: view.buckets, bucketSeconds: view.bucketSeconds, format: fmtAxisSeconds});
    chart("chart-bytes", topLines(entries, function (e) { return e.series.bytes; },
                                  true, view.bucketSeconds),
          {buckets: view.buckets, bucketSeconds: view.bucketSeconds, format: fmtBytes});
    return entries;
  }

  function renderEndpoints(entries, view, upstreamsByEndpoint) {
    var body = document.querySelector("#endpoints tbody");
    body.replaceChildren();
    var names = {};
    entries.forEach(function (e) { names[e.kind + " " + e.endpoint] = e; });
    Object.keys(upstreamsByEndpoint).forEach(function (name) {
      if (!names["http " + name] && !names["tcp " + name]) {
        names["http " + name] = {endpoint: name, kind: "http", requests: 0, errors: 0,
          bytes_in: 0, bytes_out: 0, rps: 0, eps: 0, latency: []};
      }
    });
    var keys = Object.keys(names).sort(function (a, b) {
      var x = names[a], y = names[b];
      return x.endpoint < y.endpoint ? -1 : x.endpoint > y.endpoint ? 1 :
             x.kind < y.kind ? -1 : x.kind > y.kind ? 1 : 0;
    });
    if (!keys.length) {
      var td = el("td", "No traffic and no upstream in the last 15 minutes.", "empty");
      td.colSpan = 13;
      body.appendChild(el("tr")).appendChild(td);
      return;
    }
    keys.forEach(function (key) {
      var e = names[key], tr = el("tr");
      tr.dataset.endpoint = e.endpoint;
      tr.dataset.kind = e.kind;
      tr.appendChild(el("td", e.endpoint === "" ? "(none named)" : e.endpoint, "name"));
      var kind = el("td");
      kind.appendChild(el("span", e.kind.toUpperCase(), "kind " + e.kind));
      tr.appendChild(kind);
      tr.appendChild(numCell(e.rps, fmtRate(e.rps), "rps"));
      tr.appendChild(numCell(e.eps, fmtRate(e.eps), "eps" + (e.eps ? " bad" : "")));
      tr.appendChild(numCell(e.requests, String(e.requests), "requests"));
      tr.appendChild(numCell(e.errors, String(e.errors), "errors" + (e.errors ? " bad" : "")));
      var ratio = e.requests ? 100 * e.errors / e.requests : 0;
      tr.appendChild(numCell(ratio, ratio.toFixed(1) + " %", "error-ratio"));
      var p50 = quantile(e.latency, view.bounds, 0.5), p99 = quantile(e.latency, view.bounds, 0.99);
      tr.appendChild(numCell(p50, fmtSeconds(p50), "p50"));
      tr.appendChild(numCell(p99, fmtSeconds(p99), "p99"));
      tr.appendChild(numCell(e.bytes_in, fmtBytes(e.bytes_in), "bytes-in"));
      tr.appendChild(numCell(e.bytes_out, fmtBytes(e.bytes_out), "bytes-out"));
      var ups = upstreamsByEndpoint[e.endpoint] || 0;
      tr.appendChild(numCell(ups, String(ups), "upstreams" + (ups ? "" : " zero")));
      // Requests a traffic policy refused (piko.policy); their 4xx/5xx count as errors too.
      tr.appendChild(numCell(e.refused, String(e.refused), "refused" + (e.refused ? " bad" : "")));
      body.appendChild(tr);
    });
  }

  function renderNodes(nodes, reports) {
    var body = document.querySelector("#nodes tbody");
    body.replaceChildren();
    nodes.forEach(function (n, i) {
      var r = reports[i], tr = el("tr");
      tr.dataset.node = n.id;
      tr.appendChild(el("td", n.id));
      var status = el("td");
      status.appendChild(el("span", n.status, "status " + n.status));
      tr.appendChild(status);
      tr.appendChild(el("td", n.proxy_addr));
      tr.appendChild(el("td", n.admin_addr));
      tr.appendChild(numCell(n.endpoints, String(n.endpoints), "endpoints"));
      tr.appendChild(numCell(n.upstreams, String(n.upstreams), "upstreams"));
      var sums = {rps: 0, requests: 0, errors: 0, forwarded: 0};
      (r ? r.endpoints : []).forEach(function (e) {
        sums.rps += e.requests_per_second; sums.requests += e.requests;
        sums.errors += e.errors; sums.forwarded += e.forwarded_in;
      });
      tr.appendChild(numCell(sums.rps, r ? fmtRate(sums.rps) : "\\u2013", "rps"));
      tr.appendChild(numCell(sums.requests, r ? String(sums.requests) : "\\u2013", "requests"));
      tr.appendChild(numCell(sums.errors, r ? String(sums.errors) : "\\u2013", "errors"));
      tr.appendChild(numCell(sums.forwarded, r ? String(sums.forwarded) : "\\u2013", "forwarded"));
      tr.appendChild(el("td", r ? "ok" : "unavailable", r ? "" : "empty"));
      body.appendChild(tr);
    });
  }

  function renderUpstreams(rows) {
    var body = document.querySelector("#upstreams tbody");
    body.replaceChildren();
    if (!rows.length) {
      var td = el("td", "No upstream connected.", "empty");
      td.colSpan = 5;
      body.appendChild(el("tr")).appendChild(td);
      return;
    }
    rows.forEach(function (u) {
      var tr = el("tr");
      tr.dataset.endpoint = u.endpoint;
      tr.dataset.node = u.node;
      tr.appendChild(el("td", u.node));
      tr.appendChild(el("td", u.endpoint));
      tr.appendChild(el("td", u.address, "address"));
      var since = el("td", u.connected_at ?
        fmtTime(u.connected_at) + " (" + fmtDuration(u.now - u.connected_at) + ")" : "\\u2013");
      if (u.connected_since) { since.title = u.connected_since; }
      tr.appendChild(since);
      tr.appendChild(numCell(u.streams, String(u.streams), "streams"));
      body.appendChild(tr);
    });
  }

  function renderErrors(rows) {
    var body = document.querySelector("#errors tbody");
    body.replaceChildren();
    if (!rows.length) {
      var td = el("td", "No failed exchange recorded.", "empty");
      td.colSpan = 6;
      body.appendChild(el("tr")).appendChild(td);
      return;
    }
    rows.slice(0, 50).forEach(function (e) {
      var tr = el("tr");
      tr.dataset.endpoint = e.endpoint;
      tr.appendChild(el("td", fmtTime(e.time)));
      tr.appendChild(el("td", e.node));
      tr.appendChild(el("td", e.endpoint === "" ? "(none named)" : e.endpoint));
      tr.appendChild(el("td", e.kind.toUpperCase()));
      tr.appendChild(numCell(e.status, e.status ? String(e.status) : "\\u2013", "status-code"));
      tr.appendChild(el("td", e.reason, "reason"));
      body.appendChild(tr);
    });
  }

  function updateScope(nodes) {
    var ids = nodes.map(function (n) { return n.id; }).join("\\n");
    if (ids === lastNodeIds) { return; }
    lastNodeIds = ids;
    var chosen = scopeSelect.value;
    scopeSelect.replaceChildren(el("option", "whole cluster"));
    scopeSelect.firstChild.value = "";
    nodes.forEach(function (n) {
      var option = el("option", "node " + n.id);
      option.value = n.id;
      scopeSelect.appendChild(option);
    });
    scopeSelect.value = chosen;
    if (scopeSelect.value !== chosen) { scopeSelect.value = ""; }
  }

  function refresh() {
    return getJSON("/status/cluster/nodes").then(function (nodes) {
      var local = nodes[0];
      setText("local-node", local ? local.id : "?");
      nodes.sort(function (a, b) { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0; });
      updateScope(nodes);
      return Promise.all(nodes.map(function (n) {
        return getJSON("/status/dashboard/node?forward=" + encodeURIComponent(n.id))
          .catch(function () { return null; });
      })).then(function (reports) {
        var scope = scopeSelect.value;
        setText("scope-label", scope ? "node " + scope : "whole cluster");
        var inView = [], upstreams = [], errors = [], upstreamsByEndpoint = {};
        reports.forEach(function (r, i) {
          if (!r || (scope && nodes[i].id !== scope)) { return; }
          inView.push(r);
          r.upstreams.forEach(function (u) {
            u.node = nodes[i].id; u.now = r.time; upstreams.push(u);
            upstreamsByEndpoint[u.endpoint] = (upstreamsByEndpoint[u.endpoint] || 0) + 1;
          });
          r.recent_errors.forEach(function (e) { e.node = nodes[i].id; errors.push(e); });
        });
        errors.sort(function (a, b) { return b.time - a.time; });
        var view = merge(inView);
        var entries = renderTraffic(view, upstreams.length, scope ? 1 : nodes.length);
        renderEndpoints(entries, view, upstreamsByEndpoint);
        renderNodes(nodes, reports);
        renderUpstreams(upstreams);
        renderErrors(errors);
      });
    }).then(function () {
      setText("error", "");
      setText("updated", new Date().toLocaleTimeString());
      document.body.dataset.loaded = "true";
    }, function (err) {
      setText("error", "refresh failed: " + err.message);
    });
  }

  scopeSelect.addEventListener("change", function () { refresh(); });
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
