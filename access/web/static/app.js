// Charts for the homeowner dashboard and the installer drill-down, fed by the JSON API with the
// session cookie (so the policy and the ledger apply exactly as for any client). Times in Asia/Tokyo.
"use strict";
(function () {
  const root = document.getElementById("dashboard");
  if (!root || typeof Chart === "undefined") return;
  const household = root.dataset.household;
  const purpose = root.dataset.purpose;
  const status = document.getElementById("chart-status");
  const tz = "Asia/Tokyo";
  const hhmm = new Intl.DateTimeFormat("en-GB", { timeZone: tz, month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });
  const charts = {};

  async function api(path, params) {
    const q = new URLSearchParams(Object.assign({ purpose: purpose }, params));
    const r = await fetch("/api/v1/households/" + encodeURIComponent(household) + path + "?" + q, { credentials: "same-origin" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || body.title || String(r.status));
    return body;
  }

  function draw(id, type, labels, datasets, times) {
    const el = document.getElementById(id);
    if (!el) return;
    if (charts[id]) charts[id].destroy();
    charts[id] = new Chart(el, { type: type, data: { labels: labels, datasets: datasets },
      options: { animation: false, responsive: true, maintainAspectRatio: false, interaction: { mode: "index", intersect: false },
        scales: { x: { ticks: { maxTicksLimit: 8 } } } } });
    charts[id].$times = times || labels; // the instants behind the labels, for tests and CSV
  }

  // One source of truth per quantity (the rule of pipeline/derived.py): a home's devices of one
  // category are views of one quantity (inverter and ECHONET solar unit, meter and smart meter), so
  // each time takes the value of the device with the most samples, a lower-ranked device filling only
  // the times it left empty. Adding them drew grid import at twice its value.
  function byTime(cols, field) {
    const counts = new Map();
    cols.time.forEach(function (_, i) {
      if (cols[field][i] === null || cols[field][i] === undefined) return;
      counts.set(cols.device[i], (counts.get(cols.device[i]) || 0) + 1);
    });
    const rank = new Map(Array.from(counts.keys()).sort(function (a, b) {
      return (counts.get(b) - counts.get(a)) || (a < b ? -1 : a > b ? 1 : 0);
    }).map(function (d, i) { return [d, i]; }));
    const out = new Map();
    const from = new Map();
    cols.time.forEach(function (t, i) {
      const v = cols[field][i];
      if (v === null || v === undefined) return;
      const r = rank.get(cols.device[i]);
      if (!from.has(t) || r < from.get(t)) { out.set(t, v); from.set(t, r); }
    });
    return out;
  }

  async function power(spanDays) {
    const stop = new Date();
    const start = new Date(stop.getTime() - spanDays * 86400e3);
    const every = spanDays <= 1 ? "5m" : spanDays <= 7 ? "1h" : "3h";
    const p = { start: start.toISOString(), stop: stop.toISOString(), every: every, fields: "power_w", limit: "50000" };
    const series = [["pv", "PV"], ["electricity", "Grid (+import / -export)"], ["battery", "Battery (+charge)"]];
    const results = await Promise.allSettled(series.map(function (s) { return api("/series/" + s[0], p); }));
    const times = new Set();
    const maps = results.map(function (r) { return r.status === "fulfilled" ? byTime(r.value.columns, "power_w") : new Map(); });
    maps.forEach(function (m) { m.forEach(function (_, t) { times.add(t); }); });
    const labels = Array.from(times).sort();
    draw("power-chart", "line", labels.map(function (t) { return hhmm.format(new Date(t)); }),
      series.map(function (s, i) { return { label: s[1], data: labels.map(function (t) { return maps[i].has(t) ? maps[i].get(t) : null; }), pointRadius: 0, borderWidth: 1.5, spanGaps: true }; }),
      labels);
    const refused = results.filter(function (r) { return r.status === "rejected"; });
    return refused.map(function (r) { return r.reason.message; });
  }

  async function days(spanDays) {
    const stop = new Date();
    const start = new Date(stop.getTime() - Math.max(spanDays, 1) * 86400e3);
    const p = { start: start.toISOString(), stop: stop.toISOString(), every: "1h" };
    const wanted = [["pv", "energy_wh_total", "PV yield (kWh)", 1000], ["electricity", "import_wh_total", "Grid import (kWh)", 1000],
      ["electricity", "export_wh_total", "Grid export (kWh)", 1000], ["battery", "charge_wh_total", "Battery charge (kWh)", 1000],
      ["battery", "discharge_wh_total", "Battery discharge (kWh)", 1000]];
    const flows = [["water", "volume_l_total", "Water (L)", 1], ["gas", "volume_l_total", "Gas (L)", 1]];
    async function fetchAll(list) {
      const res = await Promise.allSettled(list.map(function (w) { return api("/daily/" + w[0], Object.assign({ field: w[1] }, p)); }));
      const dayset = new Set();
      const maps = res.map(function (r) {
        const m = new Map();
        if (r.status === "fulfilled") r.value.columns.day.forEach(function (d, i) { m.set(d, r.value.columns.delta[i]); dayset.add(d); });
        return m;
      });
      const labels = Array.from(dayset).sort();
      return { labels: labels, datasets: list.map(function (w, i) { return { label: w[2], data: labels.map(function (d) { return maps[i].has(d) ? maps[i].get(d) / w[3] : null; }) }; }),
        errors: res.filter(function (r) { return r.status === "rejected"; }).map(function (r) { return r.reason.message; }) };
    }
    const energy = await fetchAll(wanted);
    if (root.dataset.mode === "homeowner" && energy.labels.length) {
      // Consumption estimate: what PV, the grid and the battery delivered to the home.
      const d = energy.datasets;
      energy.datasets.push({ label: "Consumption, estimated (kWh)", data: energy.labels.map(function (_, i) {
        const v = (d[0].data[i] || 0) + (d[1].data[i] || 0) - (d[2].data[i] || 0) - (d[3].data[i] || 0) + (d[4].data[i] || 0);
        return Math.round(v * 100) / 100; }) });
    }
    draw("energy-chart", "bar", energy.labels, energy.datasets);
    let errors = energy.errors;
    if (document.getElementById("flow-chart")) {
      const flow = await fetchAll(flows);
      draw("flow-chart", "bar", flow.labels, flow.datasets);
      errors = errors.concat(flow.errors);
    }
    return errors;
  }

  async function show(spanDays) {
    status.textContent = "Loading...";
    try {
      const errors = (await power(spanDays)).concat(await days(spanDays));
      const unique = Array.from(new Set(errors));
      status.textContent = unique.length ? "Some series were refused: " + unique.join("; ") : "Updated " + hhmm.format(new Date()) + " (Asia/Tokyo)";
      root.dataset.loaded = "true";
    } catch (e) {
      status.textContent = "Could not load the charts: " + e.message;
      root.dataset.loaded = "error";
    }
  }

  root.querySelectorAll(".tabs button").forEach(function (b) {
    b.addEventListener("click", function () {
      root.querySelectorAll(".tabs button").forEach(function (x) { x.classList.toggle("on", x === b); });
      show(Number(b.dataset.span));
    });
  });
  show(1);
})();
