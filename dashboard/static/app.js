// The autoif dashboard: follows /events, keeps every charted series, and redraws the charts
// whose series changed, smoothed with TensorBoard's debiased EMA.
"use strict";

// Each chart draws one line per run (and per label where byLabel). c: the component
// ("trainer" stands for any trainer process, i.e. neither orchestrator nor rollout); x: step
// or policy version; agg: the last value at an x, or the mean of those reported there. raw
// charts are never smoothed (a counter has no noise to smooth).
const CHARTS = [
  {id: "reward", title: "reward/mean", lines: [{c: "orchestrator", n: "reward/mean"}]},
  {id: "reward-instruction", title: "reward/mean per instruction (by policy version)", lines: [{c: "rollout", n: "reward/mean", byLabel: true, x: "v", agg: "mean"}]},
  {id: "loss", title: "loss", lines: [{c: "trainer", n: "loss"}]},
  {id: "rewards", title: "rewards/chosen, rewards/rejected", lines: [{c: "trainer", n: "rewards/chosen"}, {c: "trainer", n: "rewards/rejected"}]},
  {id: "margins", title: "rewards/margins", lines: [{c: "trainer", n: "rewards/margins"}]},
  {id: "accuracies", title: "rewards/accuracies", lines: [{c: "trainer", n: "rewards/accuracies"}]},
  {id: "logps", title: "logps/chosen, logps/rejected", lines: [{c: "trainer", n: "logps/chosen"}, {c: "trainer", n: "logps/rejected"}]},
  {id: "pairs", title: "pairs/s", lines: [{c: "orchestrator", n: "pairs/s"}]},
  {id: "version", title: "policy/version", raw: true, lines: [{c: "orchestrator", n: "policy/version"}]},
  {id: "lag", title: "policy/lag (versions behind, on arrival)", lines: [{c: "orchestrator", n: "policy/lag"}]},
  {id: "swap", title: "hot-swap latency (s, by policy version)", lines: [{c: "rollout", n: "policy/swap_latency_s", x: "v", agg: "mean"}]},
  {id: "train-step", title: "trainer step time (s)", lines: [{c: "trainer", n: "step_seconds"}]},
  {id: "idle", title: "trainer idle fraction", lines: [{c: "trainer", n: "idle_fraction"}]},
];
const MAX_LABELS = 8;
const COLORS = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00897b", "#6d4c41", "#3949ab", "#c0ca33", "#d81b60"];

const runs = [];            // in order of appearance
const series = new Map();   // key → {run, chart, line, label, pts: Map(x → {sum, n, last})}
let samples = [];           // newest last
let smoothing = 0;
const charts = new Map();   // id → {spec, el, plot, keys}
const dirty = new Set();

function component(c) { return c === "orchestrator" || c === "rollout" ? c : "trainer"; }

function addRun(name) { if (!runs.includes(name)) { runs.push(name); renderRuns(); } }

function addPoint(p) {
  addRun(p.r);
  for (const spec of CHARTS) {
    spec.lines.forEach((line, li) => {
      if (line.n !== p.n || line.c !== component(p.c)) return;
      if (line.byLabel ? !p.l : p.l) return;
      const x = line.x === "v" ? p.v : p.s;
      if (x < 0) return;
      const key = `${spec.id}|${p.r}|${li}|${p.l || ""}`;
      let s = series.get(key);
      if (!s) {
        if (line.byLabel && [...series.values()].filter(o => o.chart === spec.id && o.run === p.r).length >= MAX_LABELS) return;
        s = {run: p.r, chart: spec.id, line: li, label: p.l || "", pts: new Map()};
        series.set(key, s);
      }
      const cur = s.pts.get(x) || {sum: 0, n: 0, last: 0};
      cur.sum += p.y; cur.n++; cur.last = p.y;
      s.pts.set(x, cur);
      dirty.add(spec.id);
    });
  }
}

// TensorBoard's smoothing: an exponential moving average debiased for its zero start, so the
// first points are not dragged towards 0.
function smooth(ys, w) {
  if (w <= 0) return ys;
  let last = 0, n = 0;
  return ys.map(y => {
    if (y == null || !isFinite(y)) return y;
    last = last * w + (1 - w) * y;
    n++;
    return last / (1 - Math.pow(w, n));
  });
}

function chartData(spec, w = smoothing) {
  const own = [...series.entries()].filter(([, s]) => s.chart === spec.id)
    .sort(([, a], [, b]) => runs.indexOf(a.run) - runs.indexOf(b.run) || a.line - b.line || a.label.localeCompare(b.label));
  const xs = [...new Set(own.flatMap(([, s]) => [...s.pts.keys()]))].sort((a, b) => a - b);
  const data = [xs];
  for (const [, s] of own) {
    const agg = spec.lines[s.line].agg === "mean";
    const ys = xs.map(x => { const p = s.pts.get(x); return p ? (agg ? p.sum / p.n : p.last) : null; });
    data.push(smooth(ys, spec.raw ? 0 : w));
  }
  return {keys: own.map(([k]) => k), own: own.map(([, s]) => s), data};
}

function seriesName(spec, s) {
  let name = spec.lines.length > 1 ? spec.lines[s.line].n : "";
  if (s.label) name = s.label + (name ? " " + name : "");
  if (runs.length > 1 || !name) name = s.run + (name ? " · " + name : "");
  return name;
}

function draw(spec) {
  let ch = charts.get(spec.id);
  if (!ch) {
    const el = document.createElement("div");
    el.className = "chart";
    el.id = "chart-" + spec.id;
    el.innerHTML = `<h2>${spec.title}</h2><div class="empty">no data yet</div>`;
    document.getElementById("charts").appendChild(el);
    ch = {spec, el, plot: null, keys: ""};
    charts.set(spec.id, ch);
  }
  const {keys, own, data} = chartData(spec);
  ch.el.dataset.points = String(data[0].length);
  ch.el.dataset.smoothing = String(smoothing);
  // What the page shows, for a person's tools and the browser test: the first line's last
  // value as drawn and unsmoothed.
  const first = data[1] || [];
  ch.el.dataset.last = first.length ? String(first[first.length - 1]) : "";
  ch.el.dataset.rawLast = first.length ? String(chartData(spec, 0).data[1].at(-1)) : "";
  if (!own.length) return;
  const sig = keys.join(",") + "|" + runs.length;
  if (ch.plot && ch.keys === sig) { ch.plot.setData(data); return; }
  if (ch.plot) ch.plot.destroy();
  const empty = ch.el.querySelector(".empty");
  if (empty) empty.remove();
  ch.keys = sig;
  const xLabel = spec.lines[0].x === "v" ? "policy version" : "step";
  const opts = {
    width: Math.max(ch.el.clientWidth - 12, 300), height: 200,
    scales: {x: {time: false}},
    // Steps and versions are whole numbers: no ticks between them.
    axes: [{label: xLabel, labelSize: 18, size: 34, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]},
      {size: 60, values: (u, vals) => vals.map(v => +v.toPrecision(4))}],
    series: [{label: xLabel}, ...own.map((s, i) => ({
      label: seriesName(spec, s), stroke: COLORS[(spec.lines.length > 1 || s.label ? i : runs.indexOf(s.run)) % COLORS.length],
      width: 1.5, spanGaps: true, points: {show: data[0].length < 40},
    }))],
    legend: {live: true},
  };
  ch.plot = new uPlot(opts, data, ch.el);
}

function redraw() {
  for (const id of dirty) draw(CHARTS.find(c => c.id === id));
  dirty.clear();
}
let pending = false;
function schedule() { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; redraw(); }); } }

function renderRuns() {
  document.getElementById("runs").textContent = runs.length === 1 ? `run ${runs[0]}` : `${runs.length} runs: ${runs.join(", ")}`;
  for (const spec of CHARTS) dirty.add(spec.id);
}

function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c])); }

function verdictText(v) {
  if (!v) return "";
  let t = `pass ${v.Passed || 0} fail ${v.Failed || 0}`;
  if (v.Errors) t += ` errors ${v.Errors}`;
  if (v.Timeouts) t += ` timeouts ${v.Timeouts}`;
  if (v.Skipped) t += ` skipped ${v.Skipped}`;
  if (v.ErrorKinds && v.ErrorKinds.length) t += ` (${[...new Set(v.ErrorKinds)].join(", ")})`;
  return t;
}

function renderSamples() {
  const body = document.querySelector("#samples tbody");
  const shown = samples.slice(-50).reverse();
  body.innerHTML = shown.map((s, i) => {
    const scores = (s.scores || []).map(x => `<span class="${x >= 0.5 ? "pass" : "fail"}">${x.toFixed(2)}</span>`).join(" ");
    const funcs = (s.verdicts || []).map(v => `${v.Passed || 0}/${(v.Passed || 0) + (v.Failed || 0) + (v.Errors || 0)}`).join(" ");
    return `<tr data-i="${samples.length - 1 - i}"><td>${esc(s.run)}</td><td>${s.step}</td><td>v${s.version}</td><td>${esc(s.instruction_id)}</td>` +
      `<td>${esc((s.prompt || "").slice(0, 90))}</td><td>${scores}</td><td>${funcs}</td><td>${(s.chosen || []).length}</td></tr>`;
  }).join("");
}

function openSample(i) {
  const s = samples[i];
  if (!s) return;
  const chosen = new Set(s.chosen || []), rejected = new Set(s.rejected || []);
  let h = `<p><b>${esc(s.run)}</b> step ${s.step}, policy v${s.version}, instruction ${esc(s.instruction_id)}, prompt ${esc(s.prompt_id)}
    <a href="#" id="close-sample" style="float:right">close</a></p><h3>Prompt</h3><pre>${esc(s.prompt)}</pre>`;
  (s.responses || []).forEach((r, k) => {
    const tags = (chosen.has(r) ? '<span class="tag chosen">chosen</span>' : "") + (rejected.has(r) ? '<span class="tag rejected">rejected</span>' : "");
    h += `<h3>Response ${k + 1}: score ${(s.scores[k] ?? NaN).toFixed(3)} <small>${esc(verdictText((s.verdicts || [])[k]))}</small>${tags}</h3><pre class="response">${esc(r)}</pre>`;
  });
  h += `<h3>Pairs made: ${(s.chosen || []).length}</h3><details><summary>raw JSON</summary><pre>${esc(JSON.stringify(s, null, 2))}</pre></details>`;
  document.getElementById("sample-detail").innerHTML = h;
  document.getElementById("modal").classList.add("open");
  document.getElementById("close-sample").onclick = e => { e.preventDefault(); closeSample(); };
}
function closeSample() { document.getElementById("modal").classList.remove("open"); }

document.querySelector("#samples tbody").addEventListener("click", e => {
  const tr = e.target.closest("tr");
  if (tr) openSample(Number(tr.dataset.i));
});
document.getElementById("modal").addEventListener("click", e => { if (e.target.id === "modal") closeSample(); });
document.addEventListener("keydown", e => { if (e.key === "Escape") closeSample(); });

const slider = document.getElementById("smoothing");
slider.addEventListener("input", () => {
  smoothing = Number(slider.value);
  document.getElementById("smoothing-value").textContent = smoothing.toFixed(2);
  for (const spec of CHARTS) dirty.add(spec.id);
  redraw();
});

function apply(msg, reset) {
  if (reset) { series.clear(); samples = []; runs.length = 0; for (const spec of CHARTS) dirty.add(spec.id); }
  (msg.runs || []).forEach(addRun);
  (msg.points || []).forEach(addPoint);
  if (msg.samples && msg.samples.length) {
    samples.push(...msg.samples);
    if (samples.length > 500) samples = samples.slice(-500);
    renderSamples();
  }
  schedule();
}

const status = document.getElementById("status");
const es = new EventSource("events");
es.addEventListener("snapshot", e => { apply(JSON.parse(e.data), true); status.textContent = "live"; });
es.addEventListener("update", e => { apply(JSON.parse(e.data), false); status.textContent = "live, updated " + new Date().toLocaleTimeString(); });
es.onerror = () => { status.textContent = "reconnecting…"; };
for (const spec of CHARTS) draw(spec);
