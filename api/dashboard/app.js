// The operator's console: a hierarchy browser; a node's live aggregate, history and forecast; its sites
// and a site's page; the node's peak-shaving day; the node's dispatches, with the doubtful ones flagged;
// the node's and a site's plan against what they did; an asset's bids, clearing, revenue and runs.
// It uses only the public API (/v1/...) with the token from the URL fragment (#token=...), which never
// reaches a server log, or from this browser's storage. What is looked at (node, site, time range, day)
// lives in the fragment too, so a reload or a shared link shows the same thing (the token is dropped
// from it once stored).
"use strict";

const params = new URLSearchParams(location.hash.slice(1));
let token = params.get("token") || localStorage.getItem("vpp-token") || "";
if (params.get("token")) localStorage.setItem("vpp-token", token);
// #stream=off polls only: headless Chromium's virtual clock stands still while a stream is open.
const streaming = params.get("stream") !== "off";
const view = {
  node: params.get("node"), site: params.get("site"), span: Number(params.get("span")) || 86400,
  from: params.get("from"), to: params.get("to"), day: params.get("day"),
  dispatches: params.get("dispatches") === "all" ? "all" : null, view: params.get("view"),
  asset: params.get("asset"),
};
let liveSeries = {t: [], measured: [], estimated: []};
let source = null;

// Coverage under this is an alarm: the aggregate then leans on estimates for more than 1 site in 20.
const COVERAGE_ALARM = 0.95;
// A dispatch missing more than this share of the energy it asked for is flagged as a large shortfall.
const SHORTFALL_FLAG = 0.2;
// Sites take a few seconds to follow a new command: an active dispatch's energy is judged after this.
const RAMP_MS = 60000;
const ALARM = "#b3261e";
const OK = "#2e7d32";
const STEP_MS = {minute: 60000, hour: 3600000, day: 86400000};
const SITES_PER_PAGE = 50;

const $ = (id) => document.getElementById(id);
const setStatus = (text) => { $("status").textContent = text; };
const plotConfig = {displaylogo: false, responsive: true};

function saveView() {
  const out = new URLSearchParams();
  for (const [key, value] of Object.entries(view)) {
    if (value !== null && value !== undefined && value !== "" && !(key === "span" && value === 86400)) out.set(key, value);
  }
  if (!streaming) out.set("stream", "off");
  history.replaceState(null, "", `#${out}`);
}

async function api(path) {
  const response = await fetch(path, {headers: {Authorization: `Bearer ${token}`}});
  if (response.status === 401) { $("token-form").hidden = false; throw new Error("a valid token is needed"); }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(`${path}: ${response.status} ${body.detail ?? ""}`);
  }
  return response.json();
}

const fmt = (x, digits = 1) => (x === null || x === undefined || Number.isNaN(x)) ? "–" :
  Number(x).toLocaleString(undefined, {maximumFractionDigits: digits});
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const utcText = (t) => (t ? new Date(t).toISOString().slice(0, 16).replace("T", " ") : "–");

function card(label, value, cls = "") { return `<div class="card ${cls}">${label}<b>${value}</b></div>`; }

function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, (Date.now() - Date.parse(t)) / 1000);
  return s < 120 ? `${fmt(s, 0)} s ago` : s < 7200 ? `${fmt(s / 60, 0)} min ago` : `${fmt(s / 3600, 1)} h ago`;
}

function window_(start, end) {
  if (!start) return "?";
  const a = utcText(start);
  const b = end ? utcText(end) : "?";
  return `${a}–${b.slice(0, 10) === a.slice(0, 10) ? b.slice(11) : b}`;
}

// -- windows on a regular grid: a missing window is a gap (null), never a zero -----------------------

// The windows of [start, end) at `resolution`, each the history row or null; outages are the runs of
// missing windows between the first and the last present one (before and after: no data yet).
function onGrid(rows, start, end, resolution) {
  const step = STEP_MS[resolution];
  const byStart = new Map();
  // A window where no site reported says nothing about the fleet's power: a gap too, not a zero.
  for (const row of rows) if (row.reporting_sites !== 0) byStart.set(Date.parse(row.start), row);
  const x = [];
  const at = [];
  for (let t = Math.floor(start.getTime() / step) * step; t < end.getTime(); t += step) {
    x.push(new Date(t).toISOString());
    at.push(byStart.get(t) ?? null);
  }
  const present = at.flatMap((row, i) => (row ? [i] : []));
  const outages = [];
  for (let k = 1; k < present.length; k++) {
    const [a, b] = [present[k - 1], present[k]];
    if (b - a > 1) outages.push({from: a + 1, to: b, start: x[a + 1], end: x[b]});
  }
  return {x, at, outages, step};
}

// A band as one plotly trace: a closed polygon per run of indices where lo/hi are set (null elsewhere).
function band(x, lo, hi, trace) {
  const px = [];
  const py = [];
  let i = 0;
  while (i < x.length) {
    if (lo[i] === null) { i++; continue; }
    let j = i;
    while (j + 1 < x.length && lo[j + 1] !== null) j++;
    for (let k = i; k <= j; k++) { px.push(x[k]); py.push(hi[k]); }
    for (let k = j; k >= i; k--) { px.push(x[k]); py.push(lo[k]); }
    px.push(null); py.push(null);
    i = j + 1;
  }
  return {x: px, y: py, fill: "toself", mode: "lines", line: {width: 0}, hoverinfo: "skip", ...trace};
}

// The all-sites estimate of a power: the reporting sites' sum scaled up by the coverage.
const estimate = (row, key) => (row.coverage > 0 ? row[key] / row.coverage : row[key]);

// The estimate as a band: between measured and estimated where coverage is short, and across an
// outage between the values on either side of it (what the fleet was doing is not known there).
function estimateBand(grid, key) {
  const lo = grid.at.map(() => null);
  const hi = grid.at.map(() => null);
  grid.at.forEach((row, i) => {
    if (row && row.coverage < 1) {
      const [m, e] = [row[key], estimate(row, key)];
      lo[i] = Math.min(m, e); hi[i] = Math.max(m, e);
    }
  });
  for (const outage of grid.outages) {
    const edges = [grid.at[outage.from - 1], grid.at[outage.to]];
    const values = edges.flatMap((row) => [row[key], estimate(row, key)]);
    const [low, high] = [Math.min(...values), Math.max(...values)];
    for (let i = outage.from - 1; i <= outage.to; i++) {
      lo[i] = Math.min(lo[i] ?? low, low); hi[i] = Math.max(hi[i] ?? high, high);
    }
  }
  return band(grid.x, lo, hi, {name: "estimate (not measured)", fillcolor: "rgba(230, 140, 20, 0.25)"});
}

const outageShapes = (grid) => grid.outages.slice(0, 50).map((o) => ({
  type: "rect", xref: "x", yref: "paper", x0: o.start, x1: o.end, y0: 0, y1: 1, line: {width: 0},
  fillcolor: "rgba(90, 90, 90, 0.12)", layer: "below"}));

function outageText(grid) {
  if (!grid.outages.length) return "";
  const span = (o) => `${window_(o.start, o.end)} (${fmt(((o.to - o.from) * grid.step) / 60000, 0)} min)`;
  const listed = grid.outages.slice(0, 3).map(span).join(", ");
  const more = grid.outages.length > 3 ? ` and ${grid.outages.length - 3} more` : "";
  return `${grid.outages.length} outage${grid.outages.length > 1 ? "s" : ""} (no data, drawn as gaps): ${listed}${more}`;
}

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
  if (!view.node && roots.data.length) view.node = roots.data[0].id;
  if (view.node) select(view.node);
}

// -- the selected node ---------------------------------------------------------------------------

let sitesOffset = 0;

function select(nodeId) {
  if (nodeId !== view.node) sitesOffset = 0;
  view.node = nodeId;
  saveView();
  document.querySelectorAll("#tree span").forEach((s) => s.classList.toggle("selected", s.dataset.node === nodeId));
  $("node-title").textContent = nodeId;
  $("sites-node").textContent = nodeId;
  $("dispatch-node").textContent = view.dispatches === "all" ? "(every node)" : `(${nodeId} and below)`;
  liveSeries = {t: [], measured: [], estimated: []};
  refreshLive();
  loadHistory();
  loadForecast();
  loadSites();
  loadPeak();
  loadDispatches();
  loadPlan();
  listen();
}

function showLive(live) {
  if (!live) { $("live").innerHTML = card("live", "no aggregate yet"); return; }
  const lag = live.pipeline_lag_s === null || live.pipeline_lag_s === undefined ? "" : ` · lag ${fmt(live.pipeline_lag_s, 0)} s`;
  $("live").innerHTML = [
    card("coverage", `${fmt(live.coverage * 100)} % (${fmt(live.reporting_sites, 0)}/${fmt(live.expected_sites, 0)})`,
      live.coverage < COVERAGE_ALARM ? "alarm" : ""),
    card("battery kW", fmt(live.battery_kw)), card("est. battery kW", fmt(live.est_battery_kw)),
    card("energy available kWh", fmt(live.energy_available_kwh)),
    card("est. energy kWh", fmt(live.est_energy_available_kwh)),
    card("delayed / offline", `${fmt(live.delayed_sites, 0)} / ${fmt(live.offline_sites, 0)}`,
      live.offline_sites > 0 ? "warn" : ""),
    card("oldest data s", `${fmt(live.oldest_knowledge_age_s, 0)}${lag}`),
  ].join("");
  const t = live.event_time ? new Date(typeof live.event_time === "number" ? live.event_time : Date.parse(live.event_time)) : new Date();
  liveSeries.t.push(t); liveSeries.measured.push(live.battery_kw); liveSeries.estimated.push(live.est_battery_kw);
  for (const key of Object.keys(liveSeries)) liveSeries[key] = liveSeries[key].slice(-300);
  Plotly.react("chart-live", [
    {x: liveSeries.t, y: liveSeries.measured, name: "battery kW (reporting)", mode: "lines+markers"},
    {x: liveSeries.t, y: liveSeries.estimated, name: "battery kW (estimate, all sites)", mode: "lines", line: {dash: "dot"}},
  ], {title: {text: `live: ${view.node}`}, margin: {t: 40, r: 10, b: 40, l: 60}, legend: {orientation: "h"},
      // a single point gets a readable minute around it, not a millisecond axis
      xaxis: liveSeries.t.length > 1 ? {} : {range: [new Date(t.getTime() - 60000), new Date(t.getTime() + 60000)]}},
  plotConfig);
}

async function refreshLive() {
  if (!view.node) return;
  try {
    const node = await api(`/v1/nodes/${view.node}`);
    showLive(node.live);
    setStatus(`${node.kind} ${node.node_id} · ${node.hierarchy}`);
  } catch (error) { setStatus(error.message); }
}

function listen() {
  if (source) source.close();
  if (!streaming || !window.EventSource || !view.node) return;
  source = new EventSource(`/v1/stream?nodes=${encodeURIComponent(view.node)}&token=${encodeURIComponent(token)}`);
  source.addEventListener("node", (event) => {
    const data = JSON.parse(event.data);
    if (data.node_id === view.node) showLive(data);
  });
}

// -- history -------------------------------------------------------------------------------------

// The time range looked at: from/to in the URL if given, else the last `span` seconds.
function range() {
  const end = view.to ? new Date(view.to) : new Date();
  const start = view.from ? new Date(view.from) : new Date(end.getTime() - view.span * 1000);
  return {start, end};
}

function coverageTrace(grid) {
  const y = grid.at.map((row) => (row ? row.coverage * 100 : null));
  return {x: grid.x, y, name: "coverage %", yaxis: "y3", mode: "lines+markers", line: {color: "#8a97a6", width: 1},
    marker: {size: 4, color: y.map((v) => (v !== null && v < COVERAGE_ALARM * 100 ? ALARM : OK))}};
}

// Coverage gets its own labelled axis under the powers, with the alarm level drawn on it.
const coverageLayout = (grid) => ({
  yaxis: {title: {text: "kW"}, domain: [0.32, 1]},
  yaxis2: {title: {text: "kWh"}, overlaying: "y", side: "right"},
  yaxis3: {title: {text: "coverage %"}, domain: [0, 0.24], range: [0, 105], anchor: "x"},
  xaxis: {anchor: "y3", range: [grid.x[0], grid.x[grid.x.length - 1]]},
  shapes: [...outageShapes(grid), {type: "line", xref: "paper", yref: "y3", x0: 0, x1: 1,
    y0: COVERAGE_ALARM * 100, y1: COVERAGE_ALARM * 100, line: {color: ALARM, width: 1, dash: "dash"}}],
});

let zoomFollowed = false;

async function loadHistory() {
  if (!view.node) return;
  const node = view.node;
  const {start, end} = range();
  try {
    const history = await api(`/v1/nodes/${node}/history?start=${start.toISOString()}&end=${end.toISOString()}`);
    if (node !== view.node) return;
    const grid = onGrid(history.data, start, end, history.resolution);
    const low = history.data.filter((p) => p.coverage < COVERAGE_ALARM).length;
    $("history-note").textContent = history.count
      ? [`${history.count} ${history.resolution} windows`, view.from || view.to ? `${window_(start, end)} UTC` : "",
        low ? `coverage below ${COVERAGE_ALARM * 100} % in ${low}` : "", outageText(grid)].filter(Boolean).join(" · ")
      : "no windows yet: a minute closes into history about 30 s after it ends";
    $("history-note").classList.toggle("warning", low > 0 || grid.outages.length > 0);
    $("chart-history").dataset.outages = grid.outages.length;
    const get = (key) => grid.at.map((row) => (row ? row[key] : null));
    const minMax = band(grid.x, get("battery_kw_min"), get("battery_kw_max"),
      {name: "min–max kW", fillcolor: "rgba(31, 119, 180, 0.18)"});
    Plotly.react("chart-history", [
      minMax, estimateBand(grid, "battery_kw"),
      {x: grid.x, y: get("battery_kw"), name: "battery kW (reporting)", line: {color: "#1f77b4"}},
      {x: grid.x, y: get("energy_available_kwh"), name: "energy kWh", yaxis: "y2", line: {color: "#7b4fa0"}},
      coverageTrace(grid),
    ], {title: {text: `history: ${node} (${history.resolution})`}, margin: {t: 40, r: 60, b: 40, l: 60},
        legend: {orientation: "h", y: -0.2}, ...coverageLayout(grid)},
    plotConfig);
    if (!zoomFollowed) { followZoom(); zoomFollowed = true; }
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
    if (node !== view.node) return;
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
    plotConfig);
  } catch (error) {
    $("price-note").classList.remove("warning");
    $("price-note").textContent = error.message;
  }
}

async function loadForecast() {
  if (!view.node) return;
  loadPriceForecast(view.node);
  const node = view.node;
  try {
    const f = await api(`/v1/nodes/${node}/forecast?series=${forecastSeries}`);
    const first = Date.parse(f.data[0].target_time);
    const start = new Date(first - 86400000);
    const end = new Date(Math.min(Date.now(), Date.parse(f.data[f.count - 1].target_time) + f.step_s * 1000));
    const actual = end > start
      ? await api(`/v1/nodes/${node}/history?start=${start.toISOString()}&end=${end.toISOString()}&resolution=minute`)
      : {data: []};
    if (node !== view.node) return;
    const grid = end > start ? onGrid(actual.data, start, end, "minute") : {x: [], at: []};
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
      {x: grid.x, y: grid.at.map((row) => (row ? row[key] : null)), name: `actual ${forecastSeries} kW`},
    ], {title: {text: `forecast: ${node} ${forecastSeries}`}, margin: {t: 40, r: 10, b: 40, l: 60},
        legend: {orientation: "h"}},
    plotConfig);
  } catch (error) {
    $("forecast-note").classList.remove("warning");
    $("forecast-note").textContent = error.message;
  }
}

// -- the node's sites and a site's page ----------------------------------------------------------

async function loadSites() {
  if (!view.node) return;
  const node = view.node;
  try {
    const page = await api(`/v1/nodes/${node}/sites/twins?limit=${SITES_PER_PAGE}&offset=${sitesOffset}`);
    if (node !== view.node) return;
    $("sites-page").textContent = page.count
      ? `${fmt(sitesOffset + 1, 0)}–${fmt(sitesOffset + page.data.length, 0)} of ${fmt(page.count, 0)}`
      : "no sites below this node";
    $("sites-prev").disabled = sitesOffset === 0;
    $("sites-next").disabled = sitesOffset + SITES_PER_PAGE >= page.count;
    $("site-rows").replaceChildren(...page.data.map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.site = s.site_id;
      tr.classList.toggle("selected", s.site_id === view.site);
      tr.innerHTML = `<td><a href="#">${esc(s.site_id)}</a></td><td class="status-${esc(s.status)}">${esc(s.status)}</td>` +
        `<td title="${esc(s.last_seen ?? "")}">${ago(s.last_seen)}</td><td class="num">${fmt(s.battery_kw)}</td>` +
        `<td class="num">${fmt(s.grid_kw)}</td><td class="num">${fmt(s.soc_pct, 0)}</td>` +
        `<td>${esc(s.active_command_id ?? "")}</td>`;
      tr.addEventListener("click", (event) => { event.preventDefault(); openSite(s.site_id); });
      return tr;
    }));
  } catch (error) { $("sites-page").textContent = error.message; }
}

function openSite(siteId) {
  view.site = siteId;
  saveView();
  document.querySelectorAll("#site-rows tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.site === siteId));
  loadSite();
}

async function loadSite() {
  $("site").hidden = !view.site;
  if (!view.site) return;
  const site = view.site;
  const {start, end} = range();
  $("site-title").textContent = site;
  try {
    const twin = await api(`/v1/sites/${site}`);
    $("site-twin").innerHTML = [
      card("status", twin.status, `status-${twin.status}`), card("last seen", ago(twin.last_seen)),
      card("battery kW", fmt(twin.battery_kw)), card("SoC %", fmt(twin.soc_pct, 0)),
      card("solar / load / grid kW", `${fmt(twin.solar_kw)} / ${fmt(twin.load_kw)} / ${fmt(twin.grid_kw)}`),
      card("mode", twin.mode ?? "–"), card("command", twin.active_command_id ?? "none"),
      card("capacity kWh · reserve %", `${fmt(twin.capacity_kwh)} · ${fmt(twin.reserve_pct, 0)}`),
      card("max charge / discharge kW", `${fmt(twin.max_charge_kw)} / ${fmt(twin.max_discharge_kw)}`),
      card("available kWh", fmt(twin.energy_available_kwh)),
    ].join("");
  } catch (error) { $("site-twin").textContent = error.message; }
  api(`/v1/sites/${site}/ancestors`).then((a) => {
    $("site-ancestors").textContent = `· ${[...a.electrical, ...a.geographic, ...a.program].join(" · ")}`;
  }).catch(() => { $("site-ancestors").textContent = ""; });
  try {
    const history = await api(`/v1/sites/${site}/history?start=${start.toISOString()}&end=${end.toISOString()}`);
    if (site !== view.site) return;
    const grid = onGrid(history.data, start, end, history.resolution);
    $("site-history-note").textContent = history.count
      ? [`${history.count} ${history.resolution} windows`, outageText(grid)].filter(Boolean).join(" · ")
      : "no windows yet: a minute closes into history about 30 s after it ends";
    const get = (key) => grid.at.map((row) => (row ? row[key] : null));
    Plotly.react("chart-site", [
      band(grid.x, get("battery_kw_min"), get("battery_kw_max"), {name: "min–max kW", fillcolor: "rgba(31, 119, 180, 0.18)"}),
      {x: grid.x, y: get("battery_kw_mean"), name: "battery kW", line: {color: "#1f77b4"}},
      {x: grid.x, y: get("grid_kw_mean"), name: "grid kW", line: {color: "#555"}},
      {x: grid.x, y: get("soc_pct_last"), name: "SoC %", yaxis: "y2", line: {color: "#7b4fa0"}},
      coverageTrace(grid),
    ], {title: {text: `site history: ${site} (${history.resolution})`}, margin: {t: 40, r: 60, b: 40, l: 60},
        legend: {orientation: "h", y: -0.2}, ...coverageLayout(grid),
        yaxis2: {title: {text: "SoC %"}, overlaying: "y", side: "right", range: [0, 100]}},
    plotConfig);
  } catch (error) { $("site-history-note").textContent = error.message; }
  try {
    const commands = await api(`/v1/sites/${site}/commands?start=${start.toISOString()}&end=${end.toISOString()}`);
    if (site !== view.site) return;
    $("commands-note").textContent = commands.count ? `(${commands.count}, newest first)` : "(none in this range)";
    $("command-rows").innerHTML = commands.data.map((c) =>
      `<tr class="command-${esc(c.status)}"><td>${utcText(c.event_time)}</td><td>${esc(c.dispatch_id)}</td>` +
      `<td>${esc(c.command_id)}</td><td class="num">${fmt(c.setpoint_kw)}</td>` +
      `<td>${window_(c.valid_from, c.valid_until)}</td><td class="num">${c.attempt}</td><td>${esc(c.status)}</td></tr>`).join("");
  } catch (error) { $("commands-note").textContent = error.message; }
}

// -- peak shaving day ----------------------------------------------------------------------------

const today = () => new Date().toISOString().slice(0, 10);

// A day's net load with the fleet (grid_kw, measured) and without it (grid_kw + battery_kw: the
// fleet's measured discharge put back), the planned threshold and the fleet's state of charge.
async function loadPeak() {
  if (!view.node) return;
  const node = view.node;
  const day = view.day || today();
  $("peak-day").value = day;
  const start = new Date(`${day}T00:00:00Z`);
  const end = new Date(start.getTime() + 86400000);
  try {
    const [history, plans] = await Promise.all([
      start < new Date()
        ? api(`/v1/nodes/${node}/history?start=${start.toISOString()}&end=${end.toISOString()}&resolution=minute`)
        : Promise.resolve({data: []}),
      api(`/v1/peak/plans?node_id=${node}&start=${start.toISOString()}&end=${end.toISOString()}`),
    ]);
    if (node !== view.node) return;
    const grid = onGrid(history.data, start, end, "minute");
    const withVpp = grid.at.map((row) => (row ? row.grid_kw : null));
    const without = grid.at.map((row) => (row ? row.grid_kw + row.battery_kw : null));
    const soc = grid.at.map((row) => {
      const usable = row ? row.energy_available_kwh + row.charge_headroom_kwh : 0;
      return usable > 0 ? (100 * row.energy_available_kwh) / usable : null;
    });
    const plan = plans.data.length ? plans.data[plans.data.length - 1] : null;
    const peak = (ys) => { const v = ys.filter((y) => y !== null); return v.length ? Math.max(...v) : null; };
    const traces = [
      {x: grid.x, y: without, name: "net load without VPP kW", line: {color: "#8a97a6"}},
      {x: grid.x, y: withVpp, name: "net load with VPP kW", line: {color: "#1f77b4"}},
      {x: grid.x, y: soc, name: "fleet SoC % (usable)", yaxis: "y2", line: {color: "#7b4fa0", dash: "dot"}},
    ];
    if (plan && plan.threshold_kw !== null) {
      traces.push({x: [grid.x[0], grid.x[grid.x.length - 1]], y: [plan.threshold_kw, plan.threshold_kw],
        name: `threshold ${fmt(plan.threshold_kw)} kW`, mode: "lines", line: {color: ALARM, dash: "dash"}});
    }
    const measured = history.data.length
      ? `measured peak ${fmt(peak(withVpp))} kW with the VPP, ${fmt(peak(without))} kW without`
      : "no history for this day";
    const planned = plan
      ? `plan ${plan.plan_id}: ${plan.status}${plan.threshold_kw !== null ? `, threshold ${fmt(plan.threshold_kw)} kW` : ""}` +
        `${plan.forecast_peak_kw !== null ? `, forecast peak ${fmt(plan.forecast_peak_kw)} kW` : ""}` +
        `${plan.rebound ? ", REBOUND" : ""}${plan.note ? ` (${plan.note})` : ""}`
      : "no plan for this day";
    $("peak-note").textContent = [planned, measured, outageText(grid)].filter(Boolean).join(" · ");
    $("peak-note").classList.toggle("warning", Boolean(plan && plan.rebound));
    Plotly.react("chart-peak", traces, {
      title: {text: `peak day: ${node} ${day}`}, margin: {t: 40, r: 60, b: 40, l: 60}, legend: {orientation: "h"},
      yaxis: {title: {text: "kW"}}, yaxis2: {title: {text: "SoC %"}, overlaying: "y", side: "right", range: [0, 100]},
      xaxis: {range: [start.toISOString(), end.toISOString()]}, shapes: outageShapes(grid),
    }, plotConfig);
  } catch (error) { $("peak-note").textContent = error.message; }
}

// -- dispatch ------------------------------------------------------------------------------------

const ancestry = new Map();

// The node and every node above it (parents, walked to the roots; cached: the hierarchy changes rarely).
function lineage(nodeId) {
  if (!ancestry.has(nodeId)) {
    ancestry.set(nodeId, api(`/v1/nodes/${nodeId}/parents`).then(async (parents) => {
      const above = await Promise.all(parents.data.map((p) => lineage(p.id)));
      return new Set([nodeId, ...above.flatMap((s) => [...s])]);
    }).catch(() => new Set([nodeId])));
  }
  return ancestry.get(nodeId);
}

// Why an operator should look at a dispatch: it ended short, it has nobody, its sites cannot give the
// target, or (past the first minute's ramp, or once ended) it delivered far less energy than it asked for.
function flags(d) {
  const out = [];
  if (d.state === "PARTIAL" || d.state === "FAILED") out.push(d.reason ? `${d.state}: ${d.reason}` : d.state);
  if (d.sites_total === 0) out.push("0 sites");
  const asked = Math.abs(d.target_kw ?? 0);
  if (d.shortfall_kw && asked && d.shortfall_kw > SHORTFALL_FLAG * asked) {
    out.push(`shortfall: its sites can give ${fmt(asked - d.shortfall_kw)} of ${fmt(asked)} kW`);
  } else if (d.requested_kwh && d.delivered_kwh !== null && d.delivered_kwh !== undefined &&
             (d.state !== "ACTIVE" || Date.now() - Date.parse(d.start) > RAMP_MS)) {
    const missing = 1 - d.delivered_kwh / d.requested_kwh;
    if (missing > SHORTFALL_FLAG) out.push(`shortfall: ${fmt(missing * 100, 0)} % of the energy asked for is missing`);
  }
  return out;
}

let dispatchShown = null;

async function loadDispatches() {
  const node = view.node;
  try {
    const list = await api("/v1/dispatch?limit=200");
    let shown = list.data;
    if (view.dispatches !== "all") {
      const below = await Promise.all(list.data.map((d) => (d.node_id ? lineage(d.node_id) : Promise.resolve(new Set()))));
      shown = list.data.filter((d, i) => below[i].has(node));
    }
    if (node !== view.node) return;
    $("dispatch-note").textContent = view.dispatches === "all"
      ? `${shown.length} of ${list.count} dispatches`
      : `${shown.length} of the newest ${list.data.length} dispatches are on ${node} or below it`;
    const ids = shown.map((d) => d.dispatch_id);
    if (!ids.includes(dispatchShown)) dispatchShown = ids[0] ?? null;
    $("dispatch-list").replaceChildren(...shown.map((d) => {
      const flagged = flags(d);
      const tr = document.createElement("tr");
      tr.dataset.dispatch = d.dispatch_id;
      tr.classList.toggle("flagged", flagged.length > 0);
      tr.classList.toggle("selected", d.dispatch_id === dispatchShown);
      tr.innerHTML = `<td><a href="#">${esc(d.node_id ?? "sites")} · ${window_(d.start, d.end)}</a>` +
        ` <span class="muted">${esc(d.dispatch_id)}</span></td><td>${esc(d.state ?? "new")}</td>` +
        `<td class="num">${fmt(d.target_kw)}</td><td class="num">${fmt(d.delivered_kwh, 2)} / ${fmt(d.requested_kwh, 2)}</td>` +
        `<td class="num">${fmt(d.sites_total, 0)}</td><td class="flag">${flagged.map((f) => `⚠ ${esc(f)}`).join("<br>")}</td>`;
      tr.addEventListener("click", (event) => { event.preventDefault(); dispatchShown = d.dispatch_id; loadDispatches(); });
      return tr;
    }));
    await showDispatch(dispatchShown);
  } catch (error) { $("dispatch-summary").textContent = error.message; }
}

async function showDispatch(id) {
  let points = [];
  let title = "dispatch: none on this node";
  if (id) {
    const d = await api(`/v1/dispatch/${id}`);
    points = d.history;
    title = `dispatch ${id}: ${d.state}`;
    const flagged = flags(d);
    $("dispatch-summary").innerHTML = [
      card("state", d.state, flagged.length ? "alarm" : ""), card("node · window", `${d.node_id || "sites"} · ${window_(d.start, d.end)}`),
      card("target kW", fmt(d.target_kw)), card("measured kW", fmt(d.measured_kw)), card("error kW", fmt(d.error_kw)),
      card("delivered / requested kWh", `${fmt(d.delivered_kwh, 2)} / ${fmt(d.requested_kwh, 2)}`),
      card("sites total / acked / pending / rejected",
        `${fmt(d.sites_total, 0)} / ${fmt(d.sites_acked, 0)} / ${fmt(d.sites_pending, 0)} / ${fmt(d.sites_rejected, 0)}`),
      ...(d.reason ? [card("reason", esc(d.reason))] : []),
    ].join("");
  } else {
    $("dispatch-summary").innerHTML = "";
  }
  const x = points.map((p) => p.event_time);
  Plotly.react("chart-dispatch", [
    {x, y: points.map((p) => p.target_kw), name: "target kW", line: {shape: "hv"}},
    {x, y: points.map((p) => p.measured_kw), name: "measured kW"},
    {x, y: points.map((p) => p.error_kw), name: "error kW", line: {dash: "dot"}},
  ], {title: {text: title}, margin: {t: 40, r: 10, b: 40, l: 60}, legend: {orientation: "h"}},
  plotConfig);
}

// -- plan against actual -------------------------------------------------------------------------

// Plans look ahead: without a `to` in the URL the plan view runs 6 h past now, to show what comes.
const PLAN_AHEAD_MS = 6 * 3600000;

function planRange() {
  const {start, end} = range();
  return {start, end: view.to ? end : new Date(end.getTime() + PLAN_AHEAD_MS)};
}

// Plans are steps (a value holds for its interval): drawn as "hv" lines, with a last point at the end.
function steps(rows, key, startKey = "interval_start") {
  const x = [];
  const y = [];
  rows.forEach((row, i) => {
    const at = Date.parse(row[startKey]);
    const next = i + 1 < rows.length ? Date.parse(rows[i + 1][startKey]) : null;
    x.push(row[startKey]); y.push(row[key]);
    const end = at + row.interval_minutes * 60000;
    if (next === null || next > end) { x.push(new Date(end).toISOString()); y.push(next === null ? row[key] : null); }
  });
  return {x, y};
}

// The mean measured value over each planned interval (minute windows inside it), against its plan.
function deviation(planRows, grid, planKey, actualKey) {
  const gaps = [];
  for (const row of planRows) {
    const from = Date.parse(row.interval_start);
    const to = from + row.interval_minutes * 60000;
    const inside = grid.at.filter((w, i) => w && Date.parse(grid.x[i]) >= from && Date.parse(grid.x[i]) < to);
    if (inside.length) gaps.push(Math.abs(inside.reduce((a, w) => a + w[actualKey], 0) / inside.length - row[planKey]));
  }
  return gaps.length ? {mean: gaps.reduce((a, b) => a + b, 0) / gaps.length, n: gaps.length} : null;
}

async function loadPlan() {
  if (!view.node) return;
  const node = view.node;
  const {start, end} = planRange();
  const now = new Date();
  const span = `start=${start.toISOString()}&end=${end.toISOString()}`;
  const past = `start=${start.toISOString()}&end=${(end < now ? end : now).toISOString()}`;
  $("plan-node").textContent = `(${node}; + = discharge)`;
  try {
    const [plan, actual] = await Promise.all([
      api(`/v1/nodes/${node}/plan/history?${span}&limit=10000`),
      start < now ? api(`/v1/nodes/${node}/history?${past}`) : Promise.resolve({data: [], resolution: "minute"}),
    ]);
    if (node !== view.node) return;
    const grid = onGrid(actual.data, start, end, actual.resolution);
    const planned = steps(plan.data, "planned_kw");
    const estimated = steps(plan.data, "estimate_kw");
    const lo = planned.y.map((v, i) => (v === null ? null : Math.min(v, estimated.y[i])));
    const hi = planned.y.map((v, i) => (v === null ? null : Math.max(v, estimated.y[i])));
    const coverage = plan.data.map((r) => r.coverage * 100);
    const low = coverage.filter((c) => c < COVERAGE_ALARM * 100).length;
    const gap = deviation(plan.data, grid, "planned_kw", "battery_kw");
    $("plan-note").textContent = plan.count
      ? [`${plan.count} planned intervals`, `plan coverage ${fmt(Math.min(...coverage), 0)}–${fmt(Math.max(...coverage), 0)} %`,
        low ? `below ${COVERAGE_ALARM * 100} % in ${low}` : "",
        gap ? `measured differs from plan by ${fmt(gap.mean)} kW on average over ${gap.n} intervals` : "nothing measured yet"]
        .filter(Boolean).join(" · ")
      : "no aggregate plan in this range: the plans dataflow writes one once sites send plans";
    $("plan-note").classList.toggle("warning", low > 0);
    Plotly.react("chart-plan-node", [
      band(planned.x, lo, hi, {name: "estimate with offline sites' last plans", fillcolor: "rgba(230, 140, 20, 0.25)"}),
      {x: planned.x, y: planned.y, name: "planned kW", line: {shape: "hv", color: "#2e7d32", width: 2}},
      {x: grid.x, y: grid.at.map((w) => (w ? w.battery_kw : null)), name: "measured battery kW", line: {color: "#1f77b4"}},
      {x: plan.data.map((r) => r.interval_start), y: coverage, name: "plan coverage %", yaxis: "y3", mode: "markers",
       marker: {size: 5, color: coverage.map((c) => (c < COVERAGE_ALARM * 100 ? ALARM : OK))}},
    ], {title: {text: `plan against actual: ${node}`}, margin: {t: 40, r: 60, b: 40, l: 60},
        legend: {orientation: "h", y: -0.2},
        yaxis: {title: {text: "kW (+ = discharge)"}, domain: [0.32, 1]},
        yaxis3: {title: {text: "coverage %"}, domain: [0, 0.24], range: [0, 105], anchor: "x"},
        xaxis: {anchor: "y3", range: [start.toISOString(), end.toISOString()]},
        shapes: [{type: "line", xref: "x", yref: "paper", x0: now.toISOString(), x1: now.toISOString(), y0: 0, y1: 1,
                  line: {color: "#6b7785", width: 1, dash: "dot"}}]},
    plotConfig);
  } catch (error) { $("plan-note").textContent = error.message; }
  loadSitePlan(node, start, end);
}

// A site's plan against its measured battery power: the open site, else the node's first site.
async function loadSitePlan(node, start, end) {
  try {
    const site = view.site || (await api(`/v1/nodes/${node}/sites?limit=1`)).data[0];
    if (!site) { $("plan-site-note").textContent = "no sites below this node"; return; }
    const now = new Date();
    const [plan, actual] = await Promise.all([
      api(`/v1/sites/${site}/plan/history?start=${start.toISOString()}&end=${end.toISOString()}&limit=10000`),
      start < now
        ? api(`/v1/sites/${site}/history?start=${start.toISOString()}&end=${(end < now ? end : now).toISOString()}`)
        : Promise.resolve({data: [], resolution: "minute"}),
    ]);
    if (node !== view.node) return;
    const grid = onGrid(actual.data, start, end, actual.resolution);
    const planned = steps(plan.data, "power_kw");
    const gap = deviation(plan.data, grid, "power_kw", "battery_kw_mean");
    const plans = new Set(plan.data.map((r) => r.plan_id)).size;
    $("plan-site-note").textContent = plan.count
      ? [`site ${site}: ${plan.count} planned intervals from ${plans} plan${plans > 1 ? "s" : ""}`,
        gap ? `measured differs from plan by ${fmt(gap.mean, 2)} kW on average over ${gap.n} intervals` : "nothing measured yet"]
        .join(" · ")
      : `site ${site}: no accepted plan in this range`;
    Plotly.react("chart-plan-site", [
      {x: planned.x, y: planned.y, name: "planned battery kW", line: {shape: "hv", color: "#2e7d32", width: 2}},
      {x: grid.x, y: grid.at.map((w) => (w ? w.battery_kw_mean : null)), name: "measured battery kW", line: {color: "#1f77b4"}},
      {x: grid.x, y: grid.at.map((w) => (w ? w.soc_pct_last : null)), name: "SoC %", yaxis: "y2",
       line: {color: "#7b4fa0", dash: "dot"}},
    ], {title: {text: `site plan against actual: ${site}`}, margin: {t: 40, r: 60, b: 40, l: 60},
        legend: {orientation: "h"}, yaxis: {title: {text: "kW (+ = discharge)"}},
        yaxis2: {title: {text: "SoC %"}, overlaying: "y", side: "right", range: [0, 100]},
        xaxis: {range: [start.toISOString(), end.toISOString()]}},
    plotConfig);
  } catch (error) { $("plan-site-note").textContent = error.message; }
}

// -- bidding -------------------------------------------------------------------------------------

const RUN_STATES = ["running", "failed", "submitted"];
const RUN_COLOURS = {submitted: OK, failed: ALARM, running: "#8a97a6"};
const PRODUCT_COLOURS = ["#1f77b4", "#7b4fa0", "#c77700", "#2e7d32"];
const isSafe = (note) => String(note ?? "").startsWith("safe bid");

// Bids are for intervals ahead: without a `to` in the URL the view runs a day past now.
function bidRange() {
  const {start, end} = range();
  return {start, end: view.to ? end : new Date(end.getTime() + 86400000)};
}

async function loadBidding() {
  const {start, end} = bidRange();
  const {end: runsEnd} = range();
  try {
    const runs = await api(`/v1/bidding/workflows?start=${start.toISOString()}&end=${runsEnd.toISOString()}&limit=5000`);
    const assets = [...new Set(runs.data.map((r) => r.asset_id))].sort();
    if (view.asset && !assets.includes(view.asset)) assets.unshift(view.asset);
    const asset = view.asset || assets[0];
    $("bidding-assets").innerHTML = assets.map((a) => `<option${a === asset ? " selected" : ""}>${esc(a)}</option>`).join("");
    $("bidding-asset").textContent = asset ? `(${asset}; MW + = sell / discharge)` : "";
    if (!asset) { $("bidding-note").textContent = "no bidding runs in this range (vpp bid run ASSET)"; return; }
    const [bids, mine] = await Promise.all([
      api(`/v1/bidding/bids?asset_id=${encodeURIComponent(asset)}&start=${start.toISOString()}&end=${end.toISOString()}`),
      api(`/v1/bidding/workflows?asset_id=${encodeURIComponent(asset)}&start=${start.toISOString()}` +
          `&end=${runsEnd.toISOString()}&limit=5000`),
    ]);
    showRuns(asset, mine, showBids(asset, bids.data, start, end));
  } catch (error) { $("bidding-note").textContent = error.message; }
  loadBacktest();
}

// The newest kept backtest (vpp backtest): would today's logic decide differently, and earn more or less?
async function loadBacktest() {
  try {
    const kept = await api("/v1/bidding/backtests?limit=1");
    const b = kept.data[0];
    $("backtest-note").textContent = b
      ? `(${b.report_id}, run ${utcText(b.ran_at)} UTC over ${window_(b.window_start, b.window_end)}; ${kept.count} kept)`
      : "(none kept yet: vpp backtest --from T1 --to T2)";
    $("backtest-summary").innerHTML = b ? [
      card("decisions replayed", fmt(b.decisions, 0)),
      card("would change", fmt(b.changed, 0), b.changed ? "warn" : ""),
      card("stored revenue EUR", fmt(b.stored_revenue_eur, 2)),
      card("today's logic EUR", fmt(b.replayed_revenue_eur, 2),
        b.replayed_revenue_eur < b.stored_revenue_eur ? "alarm" : ""),
    ].join("") : "";
  } catch (error) { $("backtest-note").textContent = error.message; }
}

// Each interval's curve as the range of quantities it offers (from its lowest to its highest band),
// what cleared (MW) and at what price; safe bids (hold the state of charge) are marked in the alarm colour.
// Returns the time axis it drew, for the runs chart under it.
function showBids(asset, bids, start, end) {
  const products = [...new Set(bids.map((b) => b.product))].sort();
  const traces = [];
  products.forEach((product, k) => {
    const rows = bids.filter((b) => b.product === product);
    const x = rows.map((b) => b.interval_start);
    const colour = PRODUCT_COLOURS[k % PRODUCT_COLOURS.length];
    const qty = rows.map((b) => b.bands.map((band) => band.quantity_mw));
    traces.push(band(x, qty.map((q) => Math.min(...q)), qty.map((q) => Math.max(...q)),
      {name: `${product}: offered MW (lowest–highest band)`, fillcolor: `${colour}33`}));
    traces.push({x, y: rows.map((b) => b.cleared_mw), name: `${product}: cleared MW`, mode: "lines+markers",
      line: {shape: "hv", color: colour}, marker: {size: 4}});
    traces.push({x, y: rows.map((b) => b.cleared_price), name: `${product}: clearing price`, yaxis: "y2",
      mode: "lines", line: {color: colour, dash: "dot", width: 1}});
  });
  const safe = bids.filter((b) => isSafe(b.note));
  if (safe.length) {
    traces.push({x: safe.map((b) => b.interval_start), y: safe.map(() => 0), name: "safe bid (holds SoC)",
      mode: "markers", marker: {symbol: "x", size: 9, color: ALARM}, text: safe.map((b) => b.note)});
  }
  const cleared = bids.filter((b) => b.revenue_eur !== null);
  const revenue = cleared.reduce((a, b) => a + b.revenue_eur, 0);
  const intervals = new Set(bids.map((b) => b.interval_start)).size;
  $("bidding-note").textContent = bids.length
    ? [`${intervals} intervals bid (${products.join(", ")})`, `${cleared.length} cleared`,
      `revenue ${fmt(revenue, 2)} EUR`, safe.length ? `${safe.length} safe bids` : ""].filter(Boolean).join(" · ")
    : "no bids in this range";
  $("bidding-note").classList.toggle("warning", safe.length > 0);
  // from the range's start to now or the last interval bid, whichever is later (bids run ahead of now)
  const last = Math.max(Date.now(), ...bids.map((b) => Date.parse(b.interval_start) + 900000));
  const xaxis = {range: [start.toISOString(), new Date(Math.min(last, end.getTime())).toISOString()]};
  Plotly.react("chart-bids", traces, {title: {text: `bids and clearing: ${asset}`}, margin: {t: 40, r: 60, b: 40, l: 60},
    legend: {orientation: "h", y: -0.2}, yaxis: {title: {text: "MW (+ = sell)"}},
    yaxis2: {title: {text: "EUR/MWh"}, overlaying: "y", side: "right"}, xaxis}, plotConfig);
  // revenue per interval (all products) and its running total
  const byInterval = new Map();
  for (const b of cleared) byInterval.set(b.interval_start, (byInterval.get(b.interval_start) ?? 0) + b.revenue_eur);
  const x = [...byInterval.keys()].sort();
  let total = 0;
  const running = x.map((t) => (total += byInterval.get(t)));
  Plotly.react("chart-revenue", [
    {x, y: x.map((t) => byInterval.get(t)), type: "bar", name: "revenue per interval EUR",
     marker: {color: x.map((t) => (byInterval.get(t) < 0 ? ALARM : "#1f77b4"))}},
    {x, y: running, name: "cumulative revenue EUR", yaxis: "y2", line: {color: OK}},
  ], {title: {text: `revenue: ${fmt(revenue, 2)} EUR`}, margin: {t: 40, r: 60, b: 40, l: 60}, legend: {orientation: "h"},
      yaxis: {title: {text: "EUR"}}, yaxis2: {title: {text: "EUR (total)"}, overlaying: "y", side: "right"},
      xaxis}, plotConfig);
  return xaxis;
}

// The runs by interval and state; a safe bid is an ✕. Runs with flags are listed under the chart.
function showRuns(asset, runs, xaxis) {
  const count = (state) => runs.data.filter((r) => r.state === state).length;
  const safe = runs.data.filter((r) => r.safe_bid).length;
  $("runs-note").textContent = runs.count
    ? `${runs.count} runs: ${count("submitted")} submitted, ${count("failed")} failed, ${count("running")} running` +
      (safe ? ` · ${safe} fell back to a safe bid` : "")
    : "no runs in this range";
  $("runs-note").classList.toggle("warning", count("failed") > 0 || safe > 0);
  const at = (r) => r.interval_start ?? r.started_at;
  Plotly.react("chart-runs", [{
    x: runs.data.map(at), y: runs.data.map((r) => r.state), mode: "markers", name: "runs",
    text: runs.data.map((r) => `${r.workflow_id}${r.flags.length ? `: ${r.flags.join("; ")}` : ""}`),
    marker: {size: 9, color: runs.data.map((r) => RUN_COLOURS[r.state]),
             symbol: runs.data.map((r) => (r.safe_bid ? "x" : "circle"))},
  }], {title: {text: `bidding runs: ${asset}`}, margin: {t: 40, r: 60, b: 30, l: 60}, showlegend: false, xaxis,
      yaxis: {type: "category", categoryorder: "array", categoryarray: RUN_STATES}}, plotConfig);
  const flagged = runs.data.filter((r) => r.flags.length || r.state !== "submitted");
  $("run-rows").innerHTML = flagged.slice(0, 50).map((r) =>
    `<tr class="flagged"><td>${esc(r.workflow_id)}</td><td>${utcText(r.interval_start)}</td><td>${esc(r.state)}</td>` +
    `<td class="num">${r.steps}</td><td class="flag">${r.flags.map((f) => `⚠ ${esc(f)}`).join("<br>")}</td></tr>`).join("");
}

// -- start ---------------------------------------------------------------------------------------

function showView(name) {
  view.view = name || null;
  document.body.dataset.view = name || "";
  saveView();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token-input").value.trim();
  localStorage.setItem("vpp-token", token);
  $("token-form").hidden = true;
  start();
});
document.querySelectorAll("[data-span]").forEach((b) => b.addEventListener("click", () => {
  Object.assign(view, {span: Number(b.dataset.span), from: null, to: null});
  saveView();
  loadHistory();
  loadSite();
  loadPlan();
  loadBidding();
}));
document.querySelectorAll("[data-series]").forEach((b) => b.addEventListener("click", () => {
  forecastSeries = b.dataset.series;
  loadForecast();
}));
document.querySelectorAll("[data-view]").forEach((a) => a.addEventListener("click", (event) => {
  event.preventDefault();
  showView(a.dataset.view);
}));
// Zooming the history chart narrows the range (finer windows, kept in the URL); autoscale goes back.
function followZoom() {
  $("chart-history").on("plotly_relayout", (change) => {
    if (change["xaxis.range[0]"] && change["xaxis.range[1]"]) {
      const iso = (t) => new Date(`${String(t).replace(" ", "T")}Z`).toISOString();
      Object.assign(view, {from: iso(change["xaxis.range[0]"]), to: iso(change["xaxis.range[1]"])});
    } else if (change["xaxis.autorange"]) {
      Object.assign(view, {from: null, to: null});
    } else {
      return;
    }
    saveView();
    loadHistory();
    loadSite();
    loadPlan();
    loadBidding();
  });
}
$("sites-prev").addEventListener("click", () => { sitesOffset = Math.max(0, sitesOffset - SITES_PER_PAGE); loadSites(); });
$("sites-next").addEventListener("click", () => { sitesOffset += SITES_PER_PAGE; loadSites(); });
$("site-close").addEventListener("click", () => { view.site = null; saveView(); loadSite(); loadSites(); });
$("peak-day").addEventListener("change", (event) => { view.day = event.target.value || null; saveView(); loadPeak(); });
$("bidding-assets").addEventListener("change", (event) => { view.asset = event.target.value || null; saveView(); loadBidding(); });
$("dispatch-all").checked = view.dispatches === "all";
$("dispatch-all").addEventListener("change", (event) => {
  view.dispatches = event.target.checked ? "all" : null;
  saveView();
  $("dispatch-node").textContent = view.dispatches === "all" ? "(every node)" : `(${view.node} and below)`;
  loadDispatches();
});

async function start() {
  showView(view.view);
  try { await loadRoots(); } catch (error) { setStatus(error.message); return; }
  loadSite();
  loadBidding();
  setInterval(refreshLive, 5000);
  setInterval(loadSites, 5000);
  setInterval(loadDispatches, 5000);
}
start();
