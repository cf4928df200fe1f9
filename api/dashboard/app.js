// The dashboard: a hierarchy browser, the live aggregate of a node, its history and dispatches.
// It uses only the public API (/v1/...) with the token from the URL fragment (#token=...),
// which never reaches a server log, or from this browser's storage.
"use strict";

const params = new URLSearchParams(location.hash.slice(1));
let token = params.get("token") || localStorage.getItem("vpp-token") || "";
if (params.get("token")) localStorage.setItem("vpp-token", token);
let selected = params.get("node") || null;
// #stream=off polls only: headless Chromium's virtual clock stands still while a stream is open.
const streaming = params.get("stream") !== "off";
let liveSeries = {t: [], measured: [], estimated: []};
let source = null;

const $ = (id) => document.getElementById(id);
const setStatus = (text) => { $("status").textContent = text; };

async function api(path) {
  const response = await fetch(path, {headers: {Authorization: `Bearer ${token}`}});
  if (response.status === 401) { $("token-form").hidden = false; throw new Error("a valid token is needed"); }
  if (!response.ok) throw new Error(`${path}: ${response.status} ${(await response.json()).detail}`);
  return response.json();
}

const fmt = (x, digits = 1) => (x === null || x === undefined) ? "–" :
  Number(x).toLocaleString(undefined, {maximumFractionDigits: digits});

function card(label, value) { return `<div class="card">${label}<b>${value}</b></div>`; }

// -- hierarchy browser ---------------------------------------------------------------------------

function treeItem(ref) {
  const li = document.createElement("li");
  const label = document.createElement("span");
  label.textContent = `${ref.kind === "site" ? "·" : "▸"} ${ref.id}`;
  label.dataset.node = ref.id;
  li.appendChild(label);
  if (ref.kind !== "site") label.addEventListener("click", () => toggle(li, ref.id));
  return li;
}

async function toggle(li, nodeId) {
  select(nodeId);
  const open = li.querySelector("ul");
  if (open) { open.remove(); return; }
  const children = await api(`/v1/nodes/${nodeId}/children?limit=200`);
  const ul = document.createElement("ul");
  const nodes = children.data.filter((c) => c.kind !== "site");
  nodes.forEach((c) => ul.appendChild(treeItem(c)));
  // count covers every child, beyond this page too (nodes come few, sites by the thousand)
  const sites = children.count - nodes.length;
  if (sites) { const note = document.createElement("li"); note.textContent = `${fmt(sites, 0)} sites`; ul.appendChild(note); }
  li.appendChild(ul);
}

async function loadRoots() {
  const roots = await api("/v1/nodes?roots=true");
  $("roots").replaceChildren(...roots.data.map(treeItem));
  if (!selected && roots.data.length) selected = roots.data[0].id;
  if (selected) select(selected);
}

// -- live aggregate ------------------------------------------------------------------------------

function select(nodeId) {
  selected = nodeId;
  document.querySelectorAll("nav span").forEach((s) => s.classList.toggle("selected", s.dataset.node === nodeId));
  $("node-title").textContent = nodeId;
  liveSeries = {t: [], measured: [], estimated: []};
  refreshLive();
  loadHistory(86400);
  loadForecast();
  listen();
}

function showLive(live) {
  if (!live) { $("live").innerHTML = card("live", "no aggregate yet"); return; }
  $("live").innerHTML = [
    card("coverage", `${fmt(live.coverage * 100)} % (${fmt(live.reporting_sites, 0)}/${fmt(live.expected_sites, 0)})`),
    card("battery kW", fmt(live.battery_kw)), card("est. battery kW", fmt(live.est_battery_kw)),
    card("energy available kWh", fmt(live.energy_available_kwh)),
    card("est. energy kWh", fmt(live.est_energy_available_kwh)),
    card("delayed / offline", `${fmt(live.delayed_sites, 0)} / ${fmt(live.offline_sites, 0)}`),
    card("oldest data s", fmt(live.oldest_knowledge_age_s, 0)),
  ].join("");
  const t = live.event_time ? new Date(typeof live.event_time === "number" ? live.event_time : Date.parse(live.event_time)) : new Date();
  liveSeries.t.push(t); liveSeries.measured.push(live.battery_kw); liveSeries.estimated.push(live.est_battery_kw);
  for (const key of Object.keys(liveSeries)) liveSeries[key] = liveSeries[key].slice(-300);
  Plotly.react("chart-live", [
    {x: liveSeries.t, y: liveSeries.measured, name: "battery kW (reporting)", mode: "lines+markers"},
    {x: liveSeries.t, y: liveSeries.estimated, name: "battery kW (estimate, all sites)", mode: "lines", line: {dash: "dot"}},
  ], {title: {text: `live: ${selected}`}, margin: {t: 40, r: 10, b: 40, l: 60}, legend: {orientation: "h"}},
  {displaylogo: false, responsive: true});
}

async function refreshLive() {
  if (!selected) return;
  try {
    const node = await api(`/v1/nodes/${selected}`);
    showLive(node.live);
    setStatus(`${node.kind} ${node.node_id} · ${node.hierarchy}`);
  } catch (error) { setStatus(error.message); }
}

function listen() {
  if (source) source.close();
  if (!streaming || !window.EventSource || !selected) return;
  source = new EventSource(`/v1/stream?nodes=${encodeURIComponent(selected)}&token=${encodeURIComponent(token)}`);
  source.addEventListener("node", (event) => {
    const data = JSON.parse(event.data);
    if (data.node_id === selected) showLive(data);
  });
}

// -- history -------------------------------------------------------------------------------------

async function loadHistory(spanSeconds) {
  if (!selected) return;
  const end = new Date();
  const start = new Date(end.getTime() - spanSeconds * 1000);
  try {
    const history = await api(`/v1/nodes/${selected}/history?start=${start.toISOString()}&end=${end.toISOString()}`);
    const x = history.data.map((p) => p.start);
    $("history-note").textContent = history.count
      ? `${history.count} ${history.resolution} windows`
      : "no windows yet: a minute closes into history about 30 s after it ends";
    Plotly.react("chart-history", [
      {x, y: history.data.map((p) => p.battery_kw_max), name: "max", line: {width: 0}, showlegend: false},
      {x, y: history.data.map((p) => p.battery_kw_min), name: "min–max", fill: "tonexty", line: {width: 0}},
      {x, y: history.data.map((p) => p.battery_kw), name: "battery kW"},
      {x, y: history.data.map((p) => p.energy_available_kwh), name: "energy kWh", yaxis: "y2"},
      {x, y: history.data.map((p) => p.coverage * 100), name: "coverage %", yaxis: "y3", line: {dash: "dot"}},
    ], {title: {text: `history: ${selected} (${history.resolution})`}, margin: {t: 40, r: 60, b: 40, l: 60},
        yaxis: {title: {text: "kW"}}, yaxis2: {title: {text: "kWh"}, overlaying: "y", side: "right"},
        yaxis3: {overlaying: "y", visible: false, range: [0, 100]}, legend: {orientation: "h"},
        xaxis: history.count ? {} : {range: [start.toISOString(), end.toISOString()]}},
    {displaylogo: false, responsive: true});
  } catch (error) { $("history-note").textContent = error.message; }
}

// -- forecast ------------------------------------------------------------------------------------

let forecastSeries = "load";

// A region node is also a price region: its price forecast against the published prices, with the band.
async function loadPriceForecast(node) {
  const region = node.startsWith("region-");
  $("price-controls").hidden = !region;
  $("chart-price").hidden = !region;
  if (!region) return;
  try {
    const f = await api(`/v1/prices/${node}/forecast`);
    if (node !== selected) return;
    const q = f.quality;
    const scored = q.points
      ? `MAE ${fmt(q.mae, 2)} vs naive ${fmt(q.naive_mae, 2)} EUR/MWh over ${fmt(q.points, 0)} points`
      : "not scored yet";
    $("price-note").textContent = `${f.model}${f.note ? ` (${f.note})` : ""}, issued ${f.issued_at}; ${scored}; ` +
      `prices: ${f.source}${f.simulated ? " (simulated market)" : ""}` +
      (q.worse_than_naive ? " · worse than the naive so far" : "");
    $("price-note").classList.toggle("warning", Boolean(q.worse_than_naive));
    const x = f.data.map((p) => p.target_time);
    Plotly.react("chart-price", [
      {x, y: f.data.map((p) => p.q90), name: "q90", line: {width: 0}, showlegend: false},
      {x, y: f.data.map((p) => p.q10), name: "80 % band", fill: "tonexty", line: {width: 0}},
      {x, y: f.data.map((p) => p.value), name: `forecast ${f.currency}/MWh`},
      {x: f.actual.map((p) => p.interval_start), y: f.actual.map((p) => p.price_eur_mwh),
       name: `published ${f.currency}/MWh`},
    ], {title: {text: `price forecast: ${node}`}, margin: {t: 40, r: 10, b: 40, l: 60},
        legend: {orientation: "h"}},
    {displaylogo: false, responsive: true});
  } catch (error) {
    $("price-note").classList.remove("warning");
    $("price-note").textContent = error.message;
  }
}

async function loadForecast() {
  if (!selected) return;
  loadPriceForecast(selected);
  const node = selected;
  try {
    const f = await api(`/v1/nodes/${node}/forecast?series=${forecastSeries}`);
    const first = Date.parse(f.data[0].target_time);
    const start = new Date(first - 86400000);
    const end = new Date(Math.min(Date.now(), Date.parse(f.data[f.count - 1].target_time) + f.step_s * 1000));
    const actual = end > start
      ? await api(`/v1/nodes/${node}/history?start=${start.toISOString()}&end=${end.toISOString()}&resolution=minute`)
      : {data: []};
    if (node !== selected) return;
    const q = f.quality;
    const scored = q.points
      ? `MAE ${fmt(q.mae, 2)} vs naive ${fmt(q.naive_mae, 2)} over ${fmt(q.points, 0)} points, ` +
        `${fmt(q.coverage_80 * 100, 0)} % inside the 80 % band`
      : "not scored yet";
    $("forecast-note").textContent = `${f.model}${f.note ? ` (${f.note})` : ""}, issued ${f.issued_at}; ${scored}` +
      (q.worse_than_naive ? " · worse than the naive so far" : "");
    $("forecast-note").classList.toggle("warning", Boolean(q.worse_than_naive));
    const x = f.data.map((p) => p.target_time);
    const key = `${forecastSeries}_kw`;
    Plotly.react("chart-forecast", [
      {x, y: f.data.map((p) => p.q90), name: "q90", line: {width: 0}, showlegend: false},
      {x, y: f.data.map((p) => p.q10), name: "80 % band", fill: "tonexty", line: {width: 0}},
      {x, y: f.data.map((p) => p.value), name: `forecast ${forecastSeries} kW`},
      {x: actual.data.map((p) => p.start), y: actual.data.map((p) => p[key]), name: `actual ${forecastSeries} kW`},
    ], {title: {text: `forecast: ${node} ${forecastSeries}`}, margin: {t: 40, r: 10, b: 40, l: 60},
        legend: {orientation: "h"}},
    {displaylogo: false, responsive: true});
  } catch (error) {
    $("forecast-note").classList.remove("warning");
    $("forecast-note").textContent = error.message;
  }
}

// -- dispatch ------------------------------------------------------------------------------------

async function loadDispatches() {
  try {
    const list = await api("/v1/dispatch?limit=50");
    const current = $("dispatch-list").value;
    if (list.data.length) {
      const hhmm = (t) => (t ? t.slice(11, 16) : "?");
      const label = (d) => `${d.node_id ?? "sites"} ${hhmm(d.start)}-${hhmm(d.end)} ${d.state ?? "new"} (${d.dispatch_id})`;
      const ids = list.data.map((d) => d.dispatch_id);
      $("dispatch-list").replaceChildren(...list.data.map((d) => new Option(label(d), d.dispatch_id)));
      $("dispatch-list").value = ids.includes(current) ? current : ids[0];
    }
    await showDispatch($("dispatch-list").value);
  } catch (error) { $("dispatch-summary").textContent = error.message; }
}

async function showDispatch(id) {
  let points = [];
  let title = "dispatch: none yet";
  if (id) {
    const d = await api(`/v1/dispatch/${id}`);
    points = d.history;
    title = `dispatch ${id}: ${d.state}`;
    $("dispatch-summary").innerHTML = [
      card("state", d.state), card("node", d.node_id || "sites"), card("target kW", fmt(d.target_kw)),
      card("measured kW", fmt(d.measured_kw)), card("error kW", fmt(d.error_kw)),
      card("acked / pending / rejected", `${fmt(d.sites_acked, 0)} / ${fmt(d.sites_pending, 0)} / ${fmt(d.sites_rejected, 0)}`),
    ].join("");
  }
  const x = points.map((p) => p.event_time);
  Plotly.react("chart-dispatch", [
    {x, y: points.map((p) => p.target_kw), name: "target kW", line: {shape: "hv"}},
    {x, y: points.map((p) => p.measured_kw), name: "measured kW"},
    {x, y: points.map((p) => p.error_kw), name: "error kW", line: {dash: "dot"}},
  ], {title: {text: title}, margin: {t: 40, r: 10, b: 40, l: 60}, legend: {orientation: "h"}},
  {displaylogo: false, responsive: true});
}

// -- start ---------------------------------------------------------------------------------------

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token-input").value.trim();
  localStorage.setItem("vpp-token", token);
  $("token-form").hidden = true;
  start();
});
document.querySelectorAll("[data-span]").forEach((b) => b.addEventListener("click", () => loadHistory(Number(b.dataset.span))));
document.querySelectorAll("[data-series]").forEach((b) => b.addEventListener("click", () => {
  forecastSeries = b.dataset.series;
  loadForecast();
}));
$("dispatch-list").addEventListener("change", (event) => showDispatch(event.target.value));

async function start() {
  try { await loadRoots(); } catch (error) { setStatus(error.message); return; }
  loadDispatches();
  setInterval(refreshLive, 5000);
  setInterval(loadDispatches, 5000);
}
start();
