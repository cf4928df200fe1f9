// The operator's console: a hierarchy browser; a node's live aggregate, history and forecast; its sites
// and a site's page; the node's peak-shaving day; the node's dispatches, with the doubtful ones flagged.
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
  });
}
$("sites-prev").addEventListener("click", () => { sitesOffset = Math.max(0, sitesOffset - SITES_PER_PAGE); loadSites(); });
$("sites-next").addEventListener("click", () => { sitesOffset += SITES_PER_PAGE; loadSites(); });
$("site-close").addEventListener("click", () => { view.site = null; saveView(); loadSite(); loadSites(); });
$("peak-day").addEventListener("change", (event) => { view.day = event.target.value || null; saveView(); loadPeak(); });
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
  setInterval(refreshLive, 5000);
  setInterval(loadSites, 5000);
  setInterval(loadDispatches, 5000);
}
start();
