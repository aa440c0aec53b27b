// The dashboard's only script (served from /ui/assets/, so the CSP can forbid inline code).
// It polls what the server renders: `data-live` elements get their fragment again, the
// overview's cards and chart get /ui/overview.json. Fragments are HTML escaped on the server.
"use strict";

(function () {
  const POLL_MS = 2000;

  async function fetchText(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
    if (r.status === 401) { location.reload(); return null; } // session ended: to the login
    return r.ok ? r.text() : null;
  }

  function poll(fn) {
    let busy = false;
    const tick = async () => {
      if (busy || document.hidden) return;
      busy = true;
      try { await fn(); } catch (e) { /* next tick tries again */ } finally { busy = false; }
    };
    setInterval(tick, POLL_MS);
  }

  // Task rows (first page of the list) and a task's live part.
  for (const id of ["task-rows", "task-live"]) {
    const el = document.getElementById(id);
    if (!el || !el.dataset.live) continue;
    poll(async () => {
      const html = await fetchText(el.dataset.live);
      if (html !== null && html !== el.dataset.last) {
        el.innerHTML = html;
        el.dataset.last = html;
      }
    });
  }

  // Overview: cards, tables and the chart.
  const overview = document.getElementById("overview");
  const canvas = document.getElementById("rate-chart");
  if (overview && overview.dataset.live) {
    const ms = (v) => (v === null || v === undefined ? "–" : v + " ms");
    const format = {
      created_per_sec: (o) => o.rates.created_per_sec.toFixed(1),
      delivered_per_sec: (o) => o.rates.delivered_per_sec.toFixed(1),
      latency_p50_ms: (o) => ms(o.rates.latency_p50_ms),
      latency_p95_ms: (o) => ms(o.rates.latency_p95_ms),
      failed_last_min: (o) => String(o.rates.failed_last_min),
      retries_last_min: (o) => String(o.rates.retries_last_min),
      open_breakers: (o) => String(o.open_breakers),
      in_flight: (o) => String(o.in_flight),
    };
    const update = (o) => {
      for (const el of overview.querySelectorAll("[data-k]")) {
        const f = format[el.dataset.k];
        if (f) el.textContent = f(o);
      }
      for (const el of document.querySelectorAll("[data-backlog]")) {
        el.textContent = String(o.backlog[el.dataset.backlog] || 0);
      }
      for (const el of document.querySelectorAll("[data-status]")) {
        if (el.tagName === "TD") el.textContent = String(o.by_status[el.dataset.status] || 0);
      }
      if (canvas) draw(canvas, o.rates.series);
      overview.dataset.updated = String(Date.now()); // tests wait for it
    };
    const refresh = async () => {
      const r = await fetch(overview.dataset.live, { credentials: "same-origin" });
      if (r.status === 401) { location.reload(); return; }
      if (r.ok) update(await r.json());
    };
    refresh();
    poll(refresh);
  }

  const COLORS = { created: "#2f6fde", delivered: "#1f9d55", failed: "#d64545" };

  function draw(canvas, series) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 24;
    ctx.clearRect(0, 0, w, h);
    let max = 1;
    for (const p of series) max = Math.max(max, p.created, p.delivered, p.failed);
    ctx.strokeStyle = "#ddd";
    ctx.fillStyle = "#777";
    ctx.font = "12px sans-serif";
    ctx.beginPath();
    ctx.moveTo(pad, h - pad); ctx.lineTo(w, h - pad);
    ctx.moveTo(pad, pad); ctx.lineTo(w, pad);
    ctx.stroke();
    ctx.fillText(String(max), 2, pad + 4);
    ctx.fillText("0", 2, h - pad + 4);
    const x = (i) => pad + (i * (w - pad)) / Math.max(1, series.length - 1);
    const y = (v) => h - pad - (v * (h - 2 * pad)) / max;
    for (const key of ["created", "delivered", "failed"]) {
      ctx.strokeStyle = COLORS[key];
      ctx.lineWidth = 2;
      ctx.beginPath();
      series.forEach((p, i) => (i ? ctx.lineTo(x(i), y(p[key])) : ctx.moveTo(x(i), y(p[key]))));
      ctx.stroke();
    }
  }
})();
