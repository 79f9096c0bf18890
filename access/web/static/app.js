// Charts of the homeowner's energy page and the installer's drill-down, fed by the JSON API with the
// session cookie (so the policy and the ledger apply exactly as for any client). Every time is shown in
// Tokyo time, dates year-month-day; the words come from the page (#words) in the page's language.
"use strict";
(function () {
  const root = document.getElementById("dashboard");
  if (!root || typeof Chart === "undefined") return;
  const wordsEl = document.getElementById("words");
  const W = wordsEl ? JSON.parse(wordsEl.textContent) : {};
  const lang = document.documentElement.lang || "en";
  const household = root.dataset.household;
  const purposes = root.dataset.purpose.split(",");
  const status = document.getElementById("chart-status");
  const charts = {};
  const weekdays = (W.weekdays || "Mon,Tue,Wed,Thu,Fri,Sat,Sun").split(",");
  const number = new Intl.NumberFormat(lang === "ja" ? "ja-JP" : "en-GB", { maximumFractionDigits: 1, minimumFractionDigits: 1 });
  const yen = new Intl.NumberFormat(lang === "ja" ? "ja-JP" : "en-US", { style: "currency", currency: "JPY", maximumFractionDigits: 0 });
  const COLORS = { pv: "#e0a100", fuel_cell: "#8e44ad", battery_discharge: "#2e7d32", ev_discharge: "#00838f",
    grid_import: "#c62828", home: "#1f6feb", battery_charge: "#66bb6a", ev_charge: "#26c6da", grid_export: "#ef6c00" };

  function w(key, values) {
    let text = W[key] || key;
    Object.keys(values || {}).forEach(function (k) { text = text.split("{" + k + "}").join(values[k]); });
    return text;
  }

  // -- Tokyo time ------------------------------------------------------------------------------------
  const partsOf = new Intl.DateTimeFormat("en-CA", { timeZone: "Asia/Tokyo", year: "numeric", month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  function tokyo(d) {
    const o = {};
    partsOf.formatToParts(d).forEach(function (p) { o[p.type] = p.value; });
    return o;
  }
  function isoDay(d) { const p = tokyo(d); return p.year + "-" + p.month + "-" + p.day; }
  function dayText(iso) {
    const wd = (new Date(iso + "T00:00:00Z").getUTCDay() + 6) % 7;
    return iso + " (" + weekdays[wd] + ")";
  }
  function hm(d) { const p = tokyo(d); return p.hour + ":" + p.minute; }
  function stamp(d) { const p = tokyo(d); return p.month + "-" + p.day + " " + p.hour + ":" + p.minute; }
  function whenText(d) { return dayText(isoDay(d)) + " " + hm(d) + " JST"; }
  function addDays(iso, n) {
    const d = new Date(iso + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }
  function addMonths(iso, n) {
    const d = new Date(iso.slice(0, 8) + "01T00:00:00Z");
    d.setUTCMonth(d.getUTCMonth() + n);
    return d.toISOString().slice(0, 10);
  }

  // -- the API -----------------------------------------------------------------------------------------
  async function api(path, params) {
    const r = await fetch("/api/v1/households/" + encodeURIComponent(household) + path + "?" + new URLSearchParams(params),
      { credentials: "same-origin" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.detail || body.title || String(r.status));
    return body;
  }

  function draw(id, config, times) {
    const el = document.getElementById(id);
    if (!el) return null;
    if (charts[id]) charts[id].destroy();
    config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
    charts[id] = new Chart(el, config);
    charts[id].$times = times || config.data.labels; // the instants behind the labels, for tests
    return charts[id];
  }

  // One source of truth per quantity (the rule of pipeline/derived.py): a home's devices of one
  // category are views of one quantity (inverter and ECHONET solar unit, meter and smart meter), so
  // each time takes the value of the device with the most samples, a lower-ranked device filling only
  // the times it left empty. Adding them drew grid import at twice its value.
  function byTime(cols, field) {
    const counts = new Map();
    if (!cols[field]) return new Map();
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

  const POWER = [["pv", "s_pv"], ["electricity", "s_grid"], ["battery", "s_battery"], ["external_generation", "s_fc"], ["ev", "s_ev"]];

  // Power (and, where there is a chart for it, state of charge) of every category the caller may read.
  async function power(start, stop, every, purposeOf) {
    const p = { start: start.toISOString(), stop: stop.toISOString(), every: every, limit: "50000" };
    const wanted = POWER.filter(function (s) { return purposeOf(s[0]); });
    const results = await Promise.allSettled(wanted.map(function (s) {
      const fields = s[0] === "battery" || s[0] === "ev" ? "power_w,soc_pct" : "power_w";
      return api("/series/" + s[0], Object.assign({ purpose: purposeOf(s[0]), fields: fields }, p));
    }));
    const times = new Set();
    const maps = results.map(function (r) { return r.status === "fulfilled" ? byTime(r.value.columns, "power_w") : new Map(); });
    maps.forEach(function (m) { m.forEach(function (_, t) { times.add(t); }); });
    const labels = Array.from(times).sort();
    const label = every === "5m" ? function (t) { return hm(new Date(t)); } : function (t) { return stamp(new Date(t)); };
    draw("power-chart", { type: "line", data: { labels: labels.map(label),
      datasets: wanted.map(function (s, i) {
        return { label: w(s[1]), data: labels.map(function (t) { return maps[i].has(t) ? maps[i].get(t) : null; }),
          pointRadius: 0, borderWidth: 1.5, spanGaps: true };
      }) }, options: { interaction: { mode: "index", intersect: false }, scales: { x: { ticks: { maxTicksLimit: 8 } } } } }, labels);
    if (document.getElementById("soc-chart")) {
      const soc = [];
      wanted.forEach(function (s, i) {
        if ((s[0] === "battery" || s[0] === "ev") && results[i].status === "fulfilled") {
          soc.push([s[0] === "battery" ? "s_soc_battery" : "s_soc_ev", byTime(results[i].value.columns, "soc_pct")]);
        }
      });
      const socTimes = Array.from(new Set([].concat.apply([], soc.map(function (x) { return Array.from(x[1].keys()); })))).sort();
      draw("soc-chart", { type: "line", data: { labels: socTimes.map(label), datasets: soc.map(function (x) {
        return { label: w(x[0]), data: socTimes.map(function (t) { return x[1].has(t) ? x[1].get(t) : null; }), pointRadius: 0, borderWidth: 1.5, spanGaps: true };
      }) }, options: { scales: { y: { min: 0, max: 100 }, x: { ticks: { maxTicksLimit: 8 } } } } }, socTimes);
    }
    return results.filter(function (r) { return r.status === "rejected"; }).map(function (r) { return r.reason.message; });
  }

  // -- installer: the last 1, 7 or 30 days -------------------------------------------------------------
  async function installerDays(spanDays) {
    const stop = new Date();
    const start = new Date(stop.getTime() - Math.max(spanDays, 1) * 86400e3);
    const p = { purpose: purposes[0], start: start.toISOString(), stop: stop.toISOString(), every: "1h" };
    const wanted = [["pv", "energy_wh_total", "e_pv"], ["electricity", "import_wh_total", "e_import"],
      ["electricity", "export_wh_total", "e_export"], ["battery", "charge_wh_total", "e_charge"],
      ["battery", "discharge_wh_total", "e_discharge"]];
    const res = await Promise.allSettled(wanted.map(function (x) { return api("/daily/" + x[0], Object.assign({ field: x[1] }, p)); }));
    const days = new Set();
    const maps = res.map(function (r) {
      const m = new Map();
      if (r.status === "fulfilled") r.value.columns.day.forEach(function (d, i) { m.set(d, r.value.columns.delta[i]); days.add(d); });
      return m;
    });
    const labels = Array.from(days).sort();
    draw("energy-chart", { type: "bar", data: { labels: labels.map(dayText), datasets: wanted.map(function (x, i) {
      return { label: w(x[2]), data: labels.map(function (d) { return maps[i].has(d) ? maps[i].get(d) / 1000 : null; }) };
    }) } }, labels);
    return res.filter(function (r) { return r.status === "rejected"; }).map(function (r) { return r.reason.message; });
  }

  async function showInstaller(spanDays) {
    status.textContent = w("loading");
    try {
      const stop = new Date();
      const start = new Date(stop.getTime() - spanDays * 86400e3);
      const every = spanDays <= 1 ? "5m" : spanDays <= 7 ? "1h" : "3h";
      const purposeOf = function (c) { return ["pv", "electricity", "battery"].indexOf(c) >= 0 ? purposes[0] : null; };
      const errors = (await power(start, stop, every, purposeOf)).concat(await installerDays(spanDays));
      const unique = Array.from(new Set(errors));
      status.textContent = unique.length ? w("load_failed", { error: unique.join("; ") }) : w("updated", { time: hm(new Date()) });
      root.dataset.loaded = "true";
    } catch (e) {
      status.textContent = w("load_failed", { error: e.message });
      root.dataset.loaded = "error";
    }
  }

  if (root.dataset.mode !== "homeowner") {
    root.querySelectorAll(".tabs button").forEach(function (b) {
      b.addEventListener("click", function () {
        root.querySelectorAll(".tabs button").forEach(function (x) { x.classList.toggle("on", x === b); });
        showInstaller(Number(b.dataset.span));
      });
    });
    showInstaller(1);
    return;
  }

  // -- homeowner: one Tokyo day, week or month ----------------------------------------------------------
  const dateInput = document.getElementById("date");
  const spanInput = document.getElementById("span");
  const today = root.dataset.today;
  const SOURCES = ["pv", "fuel_cell", "battery_discharge", "ev_discharge", "grid_import"];
  const SINKS = ["home", "grid_export", "battery_charge", "ev_charge"];

  function kwh(wh) { return number.format(wh / 1000) + " kWh"; }
  function pct(x) { return x === null || x === undefined ? w("no_data") : Math.round(x * 100) + " %"; }
  function change(now, before) {
    if (!before) return "";
    const d = (now - before) / before * 100;
    return " (" + (d >= 0 ? "+" : "−") + Math.abs(d).toFixed(0) + " %)";
  }
  function setKpi(key, value, compare) {
    const el = document.getElementById("kpi-" + key);
    if (!el) return;
    el.querySelector(".value").textContent = value;
    el.querySelector(".compare").textContent = compare || "";
  }

  function kpis(r) {
    const t = r.totals, p = r.previous.totals, vs = "vs_" + r.span;
    const energy = [["kpi_pv", "pv_wh"], ["kpi_home", "home_wh"], ["kpi_import", "grid_import_wh"],
      ["kpi_export", "grid_export_wh"], ["kpi_fc", "fuel_cell_wh"]];
    energy.forEach(function (k) {
      setKpi(k[0], kwh(t[k[1]]), w(vs, { value: kwh(p[k[1]]) + change(t[k[1]], p[k[1]]) }));
    });
    setKpi("kpi_self_sufficiency", pct(r.self_sufficiency), w(vs, { value: pct(r.previous.self_sufficiency) }));
    setKpi("kpi_self_consumption", pct(r.self_consumption), w(vs, { value: pct(r.previous.self_consumption) }));
    setKpi("kpi_cost", yen.format(r.cost.net_yen), w(vs, { value: yen.format(r.previous.cost.net_yen) + change(r.cost.net_yen, r.previous.cost.net_yen) }));
    const bat = r.last_state.battery, ev = r.last_state.ev;
    setKpi("kpi_battery", bat ? Math.round(bat.soc_pct) + " %" : w("no_data"), bat ? w("as_of", { time: whenText(new Date(bat.time)) }) : "");
    setKpi("kpi_ev", ev ? Math.round(ev.soc_pct) + " %" : w("no_data"),
      ev ? (ev.connected === null ? "" : w(ev.connected ? "ev_plugged" : "ev_unplugged") + ", ") + w("as_of", { time: whenText(new Date(ev.time)) }) : "");
  }

  function flows(r) {
    const data = r.flows.map(function (f) { return { from: f.from, to: f.to, flow: Math.round(f.wh) / 1000 }; });
    const labels = {};
    SOURCES.concat(SINKS).forEach(function (k) { labels[k] = w("node_" + k); });
    draw("flow-chart", { type: "sankey", data: { datasets: [{ data: data, labels: labels, size: "max",
      colorFrom: function (c) { return COLORS[c.dataset.data[c.dataIndex].from]; },
      colorTo: function (c) { return COLORS[c.dataset.data[c.dataIndex].to]; },
      colorMode: "gradient", borderWidth: 0, nodeWidth: 12 }] }, options: { plugins: { legend: { display: false } } } });
    const body = document.querySelector("#flow-table tbody");
    body.textContent = "";
    data.forEach(function (f) {
      const tr = document.createElement("tr");
      [labels[f.from], labels[f.to], f.flow.toFixed(3)].forEach(function (v, i) {
        const td = document.createElement("td");
        td.textContent = v;
        if (i === 2) td.className = "num";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    const b = r.balance;
    const diff = b.sources_wh > 0 ? Math.abs(b.sources_wh - b.sinks_wh) / b.sources_wh * 100 : 0;
    const el = document.getElementById("balance");
    el.textContent = w("balance", { sources: (b.sources_wh / 1000).toFixed(2), sinks: (b.sinks_wh / 1000).toFixed(2), diff: diff.toFixed(1) });
    el.dataset.sourcesWh = b.sources_wh;
    el.dataset.sinksWh = b.sinks_wh;
  }

  function hourly(r) {
    const h = r.hourly;
    const byDay = r.span !== "day";
    const keys = [];
    const index = new Map();
    h.time.forEach(function (t) {
      const k = byDay ? isoDay(new Date(t)) : t;
      if (!index.has(k)) { index.set(k, keys.length); keys.push(k); }
    });
    function series(col, sign, scale) {
      const out = keys.map(function () { return 0; });
      h.time.forEach(function (t, i) { out[index.get(byDay ? isoDay(new Date(t)) : t)] += sign * h[col][i] * scale; });
      return out.map(function (v) { return Math.round(v * 1000) / 1000; });
    }
    const labels = keys.map(function (k) { return byDay ? dayText(k) : hm(new Date(k)); });
    const stacks = SOURCES.map(function (q) { return [q, 1]; }).concat(SINKS.map(function (q) { return [q, -1]; }));
    draw("energy-chart", { type: "bar", data: { labels: labels, datasets: stacks.map(function (s) {
      return { label: w("node_" + s[0]), data: series(s[0] + "_wh", s[1], 0.001), backgroundColor: COLORS[s[0]], stack: "energy" };
    }) }, options: { scales: { x: { stacked: true }, y: { stacked: true } }, plugins: { legend: { labels: { boxWidth: 12 } } } } }, keys);
    document.getElementById("energy-chart-caption").textContent = w(byDay ? "chart_energy_day" : "chart_energy_hour");
    draw("water-gas-chart", { type: "bar", data: { labels: labels, datasets: [
      { label: w("s_water"), data: series("water_m3", 1, 1), backgroundColor: "#1976d2" },
      { label: w("s_gas"), data: series("gas_m3", 1, 1), backgroundColor: "#f57c00" }] } }, keys);
  }

  function cost(r) {
    const body = document.querySelector("#cost-table tbody");
    body.textContent = "";
    function row(cells, cls) {
      const tr = document.createElement("tr");
      if (cls) tr.className = cls;
      cells.forEach(function (v, i) {
        const td = document.createElement("td");
        td.textContent = v;
        if (i >= 2) td.className = "num";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
    const bands = {};
    r.tariff.bands.forEach(function (b) { bands[b.name] = bands[b.name] || []; bands[b.name].push(b); });
    r.cost.bands.forEach(function (b) {
      const defs = bands[b.band] || [];
      const hours = defs.map(function (d) { return d.from + "–" + d.until + " (" + w("days_" + d.days) + ")"; }).join(", ");
      const price = defs.map(function (d) { return d.yen_per_kwh; }).join(" / ");
      row([w("cost_bought") + ": " + b.band, hours, b.import_kwh.toFixed(3), price, yen.format(b.yen)]);
    });
    row([w("cost_sold"), "", (r.totals.grid_export_wh / 1000).toFixed(3), String(r.tariff.feed_in_yen_per_kwh), "−" + yen.format(r.cost.export_yen)]);
    row([w("cost_net"), "", "", "", yen.format(r.cost.net_yen)], "total");
  }

  function periodLabel(r) {
    if (r.span === "day") return dayText(r.first_day);
    if (r.span === "month") return r.first_day.slice(0, 7);
    return dayText(r.first_day) + " – " + dayText(r.last_day);
  }

  function params() {
    return { purpose: purposes.join(","), date: dateInput.value || today, span: spanInput.value };
  }

  let busy = false;
  async function show() {
    if (busy) return;
    busy = true;
    status.textContent = w("loading");
    try {
      const q = params();
      const r = await api("/energy", q);
      document.getElementById("csv").href = "/api/v1/households/" + encodeURIComponent(household) + "/energy?" +
        new URLSearchParams(Object.assign({ format: "csv" }, q));
      document.getElementById("period-label").textContent = periodLabel(r);
      kpis(r);
      flows(r);
      hourly(r);
      cost(r);
      const every = r.span === "day" ? "5m" : r.span === "week" ? "1h" : "3h";
      const purposeOf = function (c) { return r.purposes[c] || null; };
      const errors = await power(new Date(r.start), new Date(r.stop), every, purposeOf);
      const refused = Object.keys(r.refused);
      const notes = [];
      if (refused.length) notes.push(w("refused_some", { categories: refused.join(", ") }));
      if (errors.length) notes.push(w("load_failed", { error: Array.from(new Set(errors)).join("; ") }));
      status.textContent = [w("updated", { time: hm(new Date()) })].concat(notes).join(" ");
      root.dataset.loaded = "true";
      root.dataset.generation = String(Number(root.dataset.generation || 0) + 1);
    } catch (e) {
      status.textContent = w("load_failed", { error: e.message });
      root.dataset.loaded = "error";
    } finally {
      busy = false;
    }
  }

  function shift(direction) {
    const d = dateInput.value || today;
    const span = spanInput.value;
    let next = span === "month" ? addMonths(d, direction) : addDays(d, direction * (span === "week" ? 7 : 1));
    if (next > today) next = today;
    dateInput.value = next;
    show();
  }

  dateInput.addEventListener("change", function () { if (dateInput.value) show(); });
  spanInput.addEventListener("change", show);
  document.getElementById("earlier").addEventListener("click", function () { shift(-1); });
  document.getElementById("later").addEventListener("click", function () { shift(1); });
  document.getElementById("refresh").addEventListener("click", show);
  // Refresh without reloading while the period shown includes today.
  setInterval(function () {
    const auto = document.getElementById("auto");
    if (!auto.checked || document.hidden) return;
    const d = dateInput.value || today;
    const span = spanInput.value;
    const current = d === today || (span === "month" && d.slice(0, 7) === today.slice(0, 7));
    if (current) show();
  }, 60000);
  show();
})();
