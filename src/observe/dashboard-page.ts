/**
 * The dashboard's single page: HTML, CSS and JS in one string, no CDN and no external request.
 * It subscribes to the server's `events` stream (SSE) and redraws on every `view` event; charts
 * are inline SVG built in the browser. Data is only ever put in the page as text (textContent),
 * never as HTML, so task keys, errors and log lines cannot inject markup.
 */

/** CSS shared by the dashboard and the report. */
export const BASE_CSS = `
:root{--bg:#f7f7f5;--card:#fff;--ink:#1d2330;--muted:#6b7280;--line:#e5e7eb;--done:#16a34a;--leased:#2563eb;--pending:#d1d5db;--dead:#dc2626;--retry:#f59e0b;--skipped:#a8a29e}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--ink)}
header{display:flex;gap:16px;align-items:baseline;padding:14px 24px;background:var(--ink);color:#fff;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header .muted{color:#cbd5e1}
main{padding:16px 24px;display:grid;gap:16px;grid-template-columns:repeat(auto-fit,minmax(420px,1fr))}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;min-width:0}
section.wide{grid-column:1/-1}h2{font-size:14px;margin:0 0 8px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;background:#475569;color:#fff}
.badge.running{background:var(--leased)}.badge.succeeded{background:var(--done)}.badge.failed{background:var(--dead)}.badge.interrupted{background:var(--retry)}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{flex:1;min-width:90px;padding:8px 10px;border:1px solid var(--line);border-radius:6px}
.card .n{font-size:22px;font-weight:700;font-variant-numeric:tabular-nums}.card .l{color:var(--muted);font-size:12px}
.bar{display:flex;height:14px;border-radius:7px;overflow:hidden;background:var(--pending);margin-top:10px}
.bar div{height:100%}.s-done{background:var(--done)}.s-leased{background:var(--leased)}.s-dead{background:var(--dead)}.s-skipped{background:var(--skipped)}.s-pending{background:var(--pending)}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
pre{margin:4px 0 0;padding:6px 8px;background:#0f172a;color:#e2e8f0;border-radius:4px;font-size:12px;overflow:auto;max-height:160px;white-space:pre-wrap}
code{font-size:12px}.muted{color:var(--muted)}.err{color:var(--dead)}svg text{font:11px system-ui,sans-serif;fill:var(--ink)}
`;

const SCRIPT = `
'use strict';
const qs = new URLSearchParams(location.search);
const token = qs.get('token');
const NS = 'http://www.w3.org/2000/svg';
function url(p) { const u = new URL(p, location.href); u.search = ''; if (token) u.searchParams.set('token', token); if (qs.get('job')) u.searchParams.set('job', qs.get('job')); return u.toString(); }
function $(id) { return document.getElementById(id); }
function el(tag, attrs, text) { const e = document.createElement(tag); for (const k in attrs || {}) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = String(text); return e; }
function svg(tag, attrs, text) { const e = document.createElementNS(NS, tag); for (const k in attrs || {}) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = String(text); return e; }
function dur(ms) { if (!(ms >= 0)) return '–'; const s = ms / 1000; if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + 's'; const m = Math.floor(s / 60); if (m < 60) return m + 'm' + String(Math.round(s % 60)).padStart(2, '0') + 's'; return Math.floor(m / 60) + 'h' + String(m % 60).padStart(2, '0') + 'm'; }
function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }

function renderCounts(v) {
  const c = v.counts;
  // every state has its card, so done + running + pending + waiting + failed + skipped = total
  for (const k of ['total', 'done', 'leased', 'pending', 'blocked', 'dead', 'skipped']) { $(k).textContent = String(c[k]); $(k).dataset.count = String(c[k]); }
  $('retries').textContent = String(v.retries);
  const bar = clear($('progress'));
  for (const k of ['done', 'leased', 'dead', 'skipped']) { if (c.total > 0 && c[k] > 0) { const d = el('div', { class: 's-' + k, title: k + ': ' + c[k] }); d.style.width = (100 * c[k] / c.total) + '%'; bar.appendChild(d); } }
  const pct = c.total ? Math.floor(100 * (c.done + c.dead + c.skipped) / c.total) : 0;
  $('pct').textContent = pct + '% finished';
}

function renderHeader(v) {
  $('job').textContent = v.job;
  const b = $('status'); b.textContent = v.status; b.className = 'badge ' + v.status; b.dataset.status = v.status;
  const end = v.finishedAt || v.at;
  $('elapsed').textContent = v.startedAt ? 'elapsed ' + dur(end - v.startedAt) : 'not started';
  $('rate').textContent = v.status === 'running' ? v.rate.toFixed(1) + ' tasks/s' : '';
  // the time left at the rate of the last 10 s; -- until tasks finish at some rate
  const eta = $('eta'); eta.textContent = v.status === 'running' ? 'ETA ' + (v.eta === null ? '--' : dur(v.eta * 1000)) : ''; eta.dataset.eta = v.eta === null ? '' : String(v.eta);
  document.title = 'corral · ' + v.job + ' · ' + v.counts.done + '/' + v.counts.total;
}

function renderThroughput(v) {
  const t = v.throughput; const box = clear($('chart'));
  const W = 640, H = 180, L = 36, B = 22, T = 8;
  const s = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, width: '100%', role: 'img', 'aria-label': 'finished attempts over time' });
  const n = t.ok.length;
  if (n === 0) { s.appendChild(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'muted' }, 'no task finished yet')); box.appendChild(s); return; }
  let max = 1; for (let i = 0; i < n; i++) max = Math.max(max, t.ok[i] + t.failed[i]);
  const bw = (W - L - 4) / n, ph = H - B - T;
  s.appendChild(svg('line', { x1: L, y1: H - B, x2: W, y2: H - B, stroke: '#9ca3af' }));
  s.appendChild(svg('text', { x: L - 4, y: T + 8, 'text-anchor': 'end' }, max));
  s.appendChild(svg('text', { x: L - 4, y: H - B, 'text-anchor': 'end' }, 0));
  for (let i = 0; i < n; i++) {
    const x = L + i * bw, ho = ph * t.ok[i] / max, hf = ph * t.failed[i] / max;
    if (t.ok[i]) s.appendChild(svg('rect', { x: x + 0.5, y: H - B - ho, width: Math.max(1, bw - 1), height: ho, fill: 'var(--done)', 'data-ok': t.ok[i] }));
    if (t.failed[i]) s.appendChild(svg('rect', { x: x + 0.5, y: H - B - ho - hf, width: Math.max(1, bw - 1), height: hf, fill: 'var(--dead)', 'data-failed': t.failed[i] }));
  }
  s.appendChild(svg('text', { x: L, y: H - 6 }, new Date(t.start).toLocaleTimeString()));
  s.appendChild(svg('text', { x: W - 2, y: H - 6, 'text-anchor': 'end' }, 'per ' + dur(t.bucketMs)));
  box.appendChild(s);
}

function renderDag(v) {
  const box = clear($('dag'));
  const steps = v.steps.length ? v.steps : [{ name: 'map', needs: [], counts: v.counts }];
  const by = new Map(steps.map((s) => [s.name, s]));
  const depth = new Map();
  function d(name, seen) { if (depth.has(name)) return depth.get(name); if (seen.has(name)) return 0; seen.add(name); const s = by.get(name); let k = 0; for (const n of (s ? s.needs : [])) if (by.has(n)) k = Math.max(k, d(n, seen) + 1); depth.set(name, k); return k; }
  for (const s of steps) d(s.name, new Set());
  const cols = new Map(); for (const s of steps) { const k = depth.get(s.name); if (!cols.has(k)) cols.set(k, []); cols.get(k).push(s); }
  const NW = 170, NH = 58, GX = 60, GY = 16;
  const ncol = Math.max(...cols.keys()) + 1; const nrow = Math.max(...[...cols.values()].map((c) => c.length));
  const W = ncol * NW + (ncol - 1) * GX + 8, H = nrow * NH + (nrow - 1) * GY + 8;
  const s = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, width: Math.min(W, 900), role: 'img', 'aria-label': 'steps' });
  const pos = new Map();
  for (const [k, list] of cols) list.forEach((st, i) => pos.set(st.name, { x: 4 + k * (NW + GX), y: 4 + i * (NH + GY) }));
  for (const st of steps) for (const n of st.needs) { const a = pos.get(n), b = pos.get(st.name); if (!a || !b) continue;
    const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2, mx = (x1 + x2) / 2;
    s.appendChild(svg('path', { d: 'M' + x1 + ',' + y1 + ' C' + mx + ',' + y1 + ' ' + mx + ',' + y2 + ' ' + x2 + ',' + y2, fill: 'none', stroke: '#9ca3af', 'stroke-width': 1.5, 'data-edge': n + '->' + st.name })); }
  for (const st of steps) { const p = pos.get(st.name), c = st.counts;
    const skipped = st.state === 'skipped' || (c.total > 0 && c.skipped === c.total);
    const g = svg('g', { 'data-step': st.name, 'data-done': c.done, 'data-total': c.total, 'data-state': skipped ? 'skipped' : (st.state || '') });
    g.appendChild(svg('rect', { x: p.x, y: p.y, width: NW, height: NH, rx: 6, fill: '#fff', stroke: c.dead ? 'var(--dead)' : c.total && c.done === c.total ? 'var(--done)' : '#94a3b8' }));
    const f = c.total ? (c.done / c.total) : 0;
    g.appendChild(svg('rect', { x: p.x, y: p.y + NH - 6, width: NW * f, height: 6, fill: 'var(--done)' }));
    g.appendChild(svg('text', { x: p.x + 8, y: p.y + 18, 'font-weight': 600 }, st.name));
    g.appendChild(svg('text', { x: p.x + 8, y: p.y + 34 }, skipped ? 'skipped' : c.total === 0 ? 'not planned yet' : c.done + '/' + c.total + ' done' + (c.leased ? ', ' + c.leased + ' running' : '') + (c.blocked ? ', ' + c.blocked + ' waiting' : '')));
    const more = (c.dead ? c.dead + ' failed' : '') + (c.dead && c.skipped && !skipped ? ', ' : '') + (c.skipped && !skipped ? c.skipped + ' skipped' : '');
    if (more) g.appendChild(svg('text', { x: p.x + 8, y: p.y + 48, fill: 'var(--dead)' }, more));
    s.appendChild(g); }
  box.appendChild(s);
}

function renderWorkers(v) {
  const tb = clear($('workers'));
  const list = v.workers.filter((w) => w.state === 'running').concat(v.workers.filter((w) => w.state !== 'running')).slice(0, 50);
  if (!list.length) { const tr = el('tr'); tr.appendChild(el('td', { colspan: 6, class: 'muted' }, 'no worker yet')); tb.appendChild(tr); return; }
  for (const w of list) { const tr = el('tr', { 'data-worker': w.id });
    tr.appendChild(el('td', {}, w.id)); tr.appendChild(el('td', {}, w.state));
    tr.appendChild(el('td', { class: 'num' }, w.pid)); tr.appendChild(el('td', {}, w.host));
    tr.appendChild(el('td', { class: 'num' }, dur(v.at - w.heartbeatAt) + ' ago'));
    tr.appendChild(el('td', {}, w.tasks.length ? w.tasks.join(', ') : '–'));
    tb.appendChild(tr); }
}

function renderFailures(v) {
  const box = clear($('failures'));
  if (!v.failures.length) { box.appendChild(el('p', { class: 'muted' }, 'no failure')); return; }
  for (const f of v.failures) { const d = el('div', { 'data-failure': f.key });
    const h = el('div'); h.appendChild(el('strong', {}, 'task ' + f.key + (f.input ? ' (' + f.input + ')' : ''))); h.appendChild(document.createTextNode(' · step ' + f.step + ' · ' + f.state + ' · ' + f.attempts + ' attempt(s) · '));
    h.appendChild(el('span', { class: 'err' }, f.error)); d.appendChild(h);
    if (f.logTail.length) d.appendChild(el('pre', {}, f.logTail.join('\\n')));
    box.appendChild(d); }
}

function render(v) {
  renderHeader(v); renderCounts(v); renderThroughput(v); renderDag(v); renderWorkers(v); renderFailures(v);
  $('updated').textContent = 'updated ' + new Date(v.at).toLocaleTimeString();
}

let es;
function connect() {
  es = new EventSource(url('events'));
  es.addEventListener('view', (e) => { $('conn').textContent = 'live'; render(JSON.parse(e.data)); });
  es.addEventListener('end', (e) => { render(JSON.parse(e.data)); es.close(); $('conn').textContent = 'the run ended; the dashboard stopped'; });
  es.onerror = () => { $('conn').textContent = 'reconnecting…'; };
}
fetch(url('api/jobs')).then((r) => r.json()).then((j) => {
  const sel = $('jobs'); if (j.jobs.length < 2) return;
  for (const name of j.jobs) { const o = el('option', { value: name }, name); if (name === j.current) o.selected = true; sel.appendChild(o); }
  sel.hidden = false;
  sel.onchange = () => { const q = new URLSearchParams(location.search); q.set('job', sel.value); location.search = q.toString(); };
}).catch(() => {});
connect();
`;

/** The dashboard page. */
export function dashboardPage(): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>corral dashboard</title><style>${BASE_CSS}</style></head>
<body>
<header><h1>corral · <span id="job">…</span></h1><span id="status" class="badge">connecting</span>
<span id="elapsed" class="muted"></span><span id="rate" class="muted"></span><span id="eta" class="muted"></span><select id="jobs" hidden></select>
<span class="muted" style="margin-left:auto"><span id="conn">connecting…</span> · <span id="updated"></span></span></header>
<main>
<section class="wide"><h2>Progress</h2>
<div class="cards">
<div class="card"><div class="n" id="done">0</div><div class="l">done</div></div>
<div class="card"><div class="n" id="total">0</div><div class="l">total</div></div>
<div class="card"><div class="n" id="leased">0</div><div class="l">running</div></div>
<div class="card"><div class="n" id="pending">0</div><div class="l">pending</div></div>
<div class="card"><div class="n" id="blocked">0</div><div class="l">waiting (for inputs)</div></div>
<div class="card"><div class="n" id="dead">0</div><div class="l">failed (dead letters)</div></div>
<div class="card"><div class="n" id="skipped">0</div><div class="l">skipped (inputs failed)</div></div>
<div class="card"><div class="n" id="retries">0</div><div class="l">retries</div></div>
</div>
<div class="bar" id="progress"></div><div class="muted" id="pct"></div></section>
<section><h2>Throughput (finished attempts)</h2><div id="chart"></div></section>
<section><h2>Steps</h2><div id="dag"></div></section>
<section class="wide"><h2>Workers</h2><table><thead><tr><th>worker</th><th>state</th><th class="num">pid</th><th>host</th><th class="num">last heartbeat</th><th>current task</th></tr></thead><tbody id="workers"></tbody></table></section>
<section class="wide"><h2>Failures</h2><div id="failures"></div></section>
</main>
<script>${SCRIPT}</script>
</body></html>`;
}
