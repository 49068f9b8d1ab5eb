/**
 * `corral report`: one self-contained HTML file about a run (inline CSS and SVG, no script, no
 * network): summary, per-step duration statistics, a timeline of every attempt per worker
 * (Gantt), failures with the end of their logs, retries, and the cost estimate of a cluster run.
 */

import { type CostEstimate, estimateClusterCost, estimateRunCost, type Pricing, pricingOf } from './cost.js';
import { BASE_CSS } from './dashboard-page.js';
import { type AttemptRow, type FullSnapshot, RETRIED_OUTCOMES, StateReader, tailLines } from './snapshot.js';
import { type DurationStats, durationStats, formatDuration } from './stats.js';

/** Options of a report. */
export interface ReportOptions {
  /** Instances the run used, for the cost estimate (a cluster run records its region only). @default - none (no estimate) */
  readonly pricing?: Partial<Pricing>;
  /** Most attempts drawn in the timeline. @default 50000 */
  readonly maxBars?: number;
  /** The report's date. @default now */
  readonly now?: Date;
}

/** Escapes text for HTML content and attribute values. */
export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const SUCCESS = new Set(['committed', 'ok', 'duplicate', 'found']);

/** Colour of an attempt's bar by its outcome. */
function outcomeColor(outcome: string): string {
  if (SUCCESS.has(outcome)) return 'var(--done)';
  if (outcome === 'dead') return 'var(--dead)';
  if (outcome === 'released') return '#94a3b8';
  return 'var(--retry)';
}

function iso(ms: number | undefined | null): string {
  return ms
    ? new Date(ms)
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z')
    : '–';
}

function secs(a: AttemptRow): number | undefined {
  return a.startedAt !== null && a.finishedAt !== null
    ? Math.max(0, a.finishedAt - a.startedAt) / 1000
    : undefined;
}

/** Reads a job's state file and renders its report. */
export function buildReport(stateDir: string, job: string, opts: ReportOptions = {}): string {
  const reader = new StateReader(stateDir, job);
  try {
    return renderReport(reader.full(), opts);
  } finally {
    reader.close();
  }
}

/** Whether the snapshot is of a run on a cluster (its coordinator records meta `cluster` with the cluster's name). */
function isClusterRun(meta: Record<string, string>): boolean {
  try {
    return typeof (JSON.parse(meta.cluster ?? '{}') as { name?: unknown }).name === 'string';
  } catch {
    return false;
  }
}

/** The wall time of the runs (meta `runs`), and of the one going on. */
function runSeconds(snap: FullSnapshot): number {
  const { core } = snap;
  const done = (core.runs ?? []).reduce((a, [s, e]) => a + (e - s), 0);
  const now = core.status === 'running' && core.startedAt !== undefined ? core.at - core.startedAt : 0;
  return (done + now) / 1000;
}

/** Renders the report of a snapshot. */
export function renderReport(snap: FullSnapshot, opts: ReportOptions = {}): string {
  const pricing = pricingOf(snap.meta, opts.pricing);
  const cost = pricing
    ? isClusterRun(snap.meta)
      ? estimateClusterCost(snap.workers.length, runSeconds(snap), pricing)
      : estimateRunCost(snap.workers, pricing)
    : undefined;
  const { core } = snap;
  const title = `corral report · ${core.job}`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(title)}</title><style>${BASE_CSS}
main{grid-template-columns:1fr}.gantt{overflow-x:auto}.bar:hover{opacity:.75}
</style></head><body>
<header><h1>corral · ${esc(core.job)}</h1><span class="badge ${esc(core.status)}">${esc(core.status)}</span>
<span class="muted">report of ${esc(iso((opts.now ?? new Date()).getTime()))}</span></header>
<main>
${summarySection(snap, cost)}
${stepsSection(snap)}
${timelineSection(snap, opts.maxBars ?? 50_000)}
${failuresSection(snap)}
${retriesSection(snap)}
${costSection(cost, isClusterRun(snap.meta))}
</main></body></html>
`;
}

function summarySection(snap: FullSnapshot, cost: CostEstimate | undefined): string {
  const { core, attempts } = snap;
  const c = core.counts;
  const durations = attempts.map(secs).filter((d): d is number => d !== undefined);
  const busy = durations.reduce((a, b) => a + b, 0);
  // the runs that did work (a re-run that did nothing leaves them as they were); a running job's
  // own run counts until now
  const runs = core.runs?.length && core.status !== 'running' ? core.runs : undefined;
  const started = runs
    ? runs[0]![0]
    : (core.startedAt ?? Math.min(...attempts.map((a) => a.startedAt ?? Number.POSITIVE_INFINITY)));
  const ended = runs
    ? runs.at(-1)![1]
    : (core.finishedAt ?? Math.max(core.at, ...attempts.map((a) => a.finishedAt ?? 0)));
  const wall = runs
    ? runs.reduce((a, [s, e]) => a + (e - s), 0) / 1000
    : Number.isFinite(started)
      ? (ended - started) / 1000
      : Number.NaN;
  const retries = attempts.filter((a) => a.outcome === 'failed' || a.outcome === 'expired').length;
  const hosts = new Set(snap.workers.map((w) => w.host));
  const rows: Array<[string, string]> = [
    ['status', core.status],
    ['started', iso(runs ? started : core.startedAt)],
    ['finished', iso(runs ? ended : core.finishedAt)],
    ...(runs && runs.length > 1
      ? ([['runs', `${runs.length} that did work (wall time is their sum)`]] as Array<[string, string]>)
      : []),
    ['wall time', formatDuration(wall)],
    [
      'tasks',
      `${c.total} total: ${c.done} done, ${c.dead} failed (dead letters)${c.skipped ? `, ${c.skipped} skipped` : ''}${c.pending + c.leased ? `, ${c.pending + c.leased} not finished` : ''}`,
    ],
    ['attempts', `${attempts.length} (${retries} retried)`],
    ['workers', `${snap.workers.length} on ${hosts.size} host(s)`],
    [
      'task time',
      `${formatDuration(busy)} in all, ${wall > 0 ? (busy / wall).toFixed(1) : '–'} tasks running on average`,
    ],
    ['throughput', wall > 0 ? `${((c.done + c.dead) / wall).toFixed(2)} tasks/s` : '–'],
  ];
  if (cost)
    rows.push([
      'cost estimate',
      `$${cost.usd.toFixed(2)} (${cost.instanceHours.toFixed(2)} h of ${cost.instanceType})`,
    ]);
  return `<section id="summary"><h2>Summary</h2><table>${rows
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td data-field="${esc(k)}">${esc(v)}</td></tr>`)
    .join('')}</table></section>`;
}

function boxPlot(s: DurationStats, max: number): string {
  const W = 220;
  const x = (v: number) => (max > 0 ? 4 + (v / max) * (W - 8) : 4);
  return `<svg width="${W}" height="18" viewBox="0 0 ${W} 18" role="img" aria-label="durations"><line x1="${x(s.min)}" x2="${x(s.max)}" y1="9" y2="9" stroke="#64748b"/><rect x="${x(s.p25)}" y="3" width="${Math.max(1, x(s.p75) - x(s.p25))}" height="12" fill="#bfdbfe" stroke="#2563eb"/><line x1="${x(s.median)}" x2="${x(s.median)}" y1="3" y2="15" stroke="#1d4ed8" stroke-width="2"/></svg>`;
}

function stepsSection(snap: FullSnapshot): string {
  const steps = snap.core.steps.length
    ? snap.core.steps
    : [{ name: 'map', needs: [], counts: snap.core.counts }];
  const byStep = new Map<string, { ok: number[]; failed: number[] }>();
  for (const a of snap.attempts) {
    const d = secs(a);
    if (d === undefined) continue;
    const g = byStep.get(a.step) ?? { ok: [], failed: [] };
    byStep.set(a.step, g);
    (SUCCESS.has(a.outcome) ? g.ok : g.failed).push(d);
  }
  const stats = steps.map((st) => ({
    st,
    ok: durationStats(byStep.get(st.name)?.ok ?? []),
    failed: byStep.get(st.name)?.failed.length ?? 0,
  }));
  const max = Math.max(0, ...stats.map((s) => s.ok?.max ?? 0));
  const f = formatDuration;
  const rows = stats
    .map(
      ({
        st,
        ok,
        failed,
      }) => `<tr data-step="${esc(st.name)}"><td>${esc(st.name)}</td><td>${esc(st.needs.join(', ') || '–')}</td>
<td class="num">${st.counts.done}/${st.counts.total}${st.counts.skipped ? ` (${st.counts.skipped} skipped)` : ''}</td><td class="num">${st.counts.dead}</td><td class="num">${failed}</td>
${ok ? `<td class="num">${f(ok.min)}</td><td class="num">${f(ok.median)}</td><td class="num">${f(ok.mean)}</td><td class="num">${f(ok.p90)}</td><td class="num">${f(ok.max)}</td><td class="num">${f(ok.total)}</td><td>${boxPlot(ok, max)}</td>` : '<td colspan="7" class="muted">no successful attempt</td>'}</tr>`,
    )
    .join('\n');
  return `<section id="steps"><h2>Steps: duration of successful attempts</h2><table>
<thead><tr><th>step</th><th>needs</th><th class="num">done</th><th class="num">dead</th><th class="num">failed attempts</th><th class="num">min</th><th class="num">median</th><th class="num">mean</th><th class="num">p90</th><th class="num">max</th><th class="num">total</th><th>min · p25–p75 · median · max</th></tr></thead>
<tbody>${rows}</tbody></table></section>`;
}

/** Nice tick spacing (ms) for a time axis of `spanMs` with about `n` ticks. */
function tickStep(spanMs: number, n = 8): number {
  const raw = spanMs / n;
  for (const s of [
    100, 200, 500, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3,
    21600e3, 43200e3, 86400e3,
  ]) {
    if (s >= raw) return s;
  }
  return 86400e3 * Math.ceil(raw / 86400e3);
}

function timelineSection(snap: FullSnapshot, maxBars: number): string {
  const timed = snap.attempts.filter(
    (a) => a.startedAt !== null && a.finishedAt !== null && a.owner !== null,
  );
  const untimed = snap.attempts.length - timed.length;
  const drawn = timed.slice(0, maxBars).sort((a, b) => a.startedAt! - b.startedAt! || a.seq - b.seq);
  if (drawn.length === 0)
    return '<section id="timeline"><h2>Timeline</h2><p class="muted">no attempt ran to an end yet</p></section>';
  const t0 = Math.min(...drawn.map((a) => a.startedAt!));
  const t1 = Math.max(...drawn.map((a) => a.finishedAt!));
  const span = Math.max(1, t1 - t0);
  // Lanes: one group per worker (in order of its first attempt), sub-lanes when attempts overlap.
  const groups = new Map<string, { lanes: number[]; bars: Array<{ a: AttemptRow; lane: number }> }>();
  for (const a of drawn) {
    const g = groups.get(a.owner!) ?? { lanes: [], bars: [] };
    groups.set(a.owner!, g);
    let lane = g.lanes.findIndex((end) => end <= a.startedAt!);
    if (lane < 0) lane = g.lanes.push(0) - 1;
    g.lanes[lane] = a.finishedAt!;
    g.bars.push({ a, lane });
  }
  const L = 150;
  const W = 1000;
  const LH = 14;
  const GAP = 6;
  const TOP = 24;
  let y = TOP;
  const parts: string[] = [];
  const x = (t: number) => L + ((t - t0) / span) * (W - L - 10);
  for (const [worker, g] of groups) {
    const h = g.lanes.length * LH;
    parts.push(
      `<g class="worker" data-worker="${esc(worker)}"><rect x="0" y="${y - 2}" width="${W}" height="${h + 4}" fill="#f8fafc"/><text x="4" y="${y + Math.min(h, LH) - 3}">${esc(worker)}</text>`,
    );
    for (const { a, lane } of g.bars) {
      const bx = x(a.startedAt!);
      const bw = Math.max(1, x(a.finishedAt!) - bx);
      const d = (a.finishedAt! - a.startedAt!) / 1000;
      parts.push(
        `<rect class="bar" x="${bx.toFixed(1)}" y="${y + lane * LH}" width="${bw.toFixed(1)}" height="${LH - 3}" rx="2" fill="${outcomeColor(a.outcome)}" data-task="${esc(a.key)}" data-step="${esc(a.step)}" data-attempt="${a.attempt}" data-worker="${esc(worker)}" data-outcome="${esc(a.outcome)}" data-start="${a.startedAt}" data-end="${a.finishedAt}"><title>task ${esc(a.key)} (step ${esc(a.step)}), attempt ${a.attempt}: ${esc(a.outcome)} in ${esc(formatDuration(d))}${a.error ? ` — ${esc(a.error)}` : ''}</title></rect>`,
      );
    }
    parts.push('</g>');
    y += h + GAP;
  }
  const step = tickStep(span);
  const ticks: string[] = [];
  for (let t = 0; t <= span; t += step) {
    ticks.push(
      `<line x1="${x(t0 + t)}" x2="${x(t0 + t)}" y1="${TOP - 6}" y2="${y}" stroke="#e5e7eb"/><text x="${x(t0 + t)}" y="${TOP - 10}" text-anchor="middle">+${esc(formatDuration(t / 1000))}</text>`,
    );
  }
  const legend = [
    ['succeeded', 'var(--done)'],
    ['failed, retried', 'var(--retry)'],
    ['failed, last attempt', 'var(--dead)'],
  ]
    .map(
      ([l, c]) =>
        `<span style="display:inline-block;width:10px;height:10px;background:${c};margin:0 4px 0 12px"></span>${l}`,
    )
    .join('');
  return `<section id="timeline"><h2>Timeline: attempts per worker</h2>
<p class="muted">from ${esc(iso(t0))} to ${esc(iso(t1))}; one bar per attempt${legend}${timed.length > drawn.length ? `; the first ${drawn.length} of ${timed.length} attempts are drawn` : ''}${untimed ? `; ${untimed} attempt(s) handed back before they ended are not drawn` : ''}</p>
<div class="gantt"><svg id="gantt" width="${W}" height="${y + 4}" viewBox="0 0 ${W} ${y + 4}" role="img" aria-label="timeline of attempts per worker">${ticks.join('')}${parts.join('')}</svg></div></section>`;
}

function failuresSection(snap: FullSnapshot): string {
  const dead = snap.troubled.filter((t) => t.state === 'dead');
  if (dead.length === 0)
    return '<section id="failures"><h2>Failures</h2><p class="muted">no task failed</p></section>';
  const items = dead
    .slice(0, 200)
    .map((t) => {
      const tail = tailLines(t.logPath, 20);
      return `<div class="failure" data-task="${esc(t.key)}"><strong>task ${esc(t.key)}${t.input ? ` (${esc(t.input)})` : ''}</strong> · step ${esc(t.step)} · ${t.attempts} attempt(s) · <span class="err">${esc(t.lastError ?? '')}</span>${t.logPath ? ` · <code>${esc(t.logPath)}</code>` : ''}${tail.length ? `<pre>${esc(tail.join('\n'))}</pre>` : ''}</div>`;
    })
    .join('\n');
  return `<section id="failures"><h2>Failures (dead letters): ${dead.length}</h2>${items}${dead.length > 200 ? `<p class="muted">… and ${dead.length - 200} more (corral status ${esc(snap.core.job)} --json)</p>` : ''}</section>`;
}

function retriesSection(snap: FullSnapshot): string {
  const byTask = new Map<number, AttemptRow[]>();
  for (const a of snap.attempts) {
    const l = byTask.get(a.taskId);
    if (l) l.push(a);
    else byTask.set(a.taskId, [a]);
  }
  // a task with an attempt that was retried; a skipped task never ran (its last_error is the reason it was skipped)
  const retried = snap.troubled.filter((t) =>
    (byTask.get(t.id) ?? []).some((a) => RETRIED_OUTCOMES.has(a.outcome)),
  );
  if (retried.length === 0)
    return '<section id="retries"><h2>Retries</h2><p class="muted">no task was retried</p></section>';
  const rows = retried
    .slice(0, 500)
    .map((t) => {
      const chain = (byTask.get(t.id) ?? []).sort((a, b) => a.attempt - b.attempt || a.seq - b.seq);
      const errors = chain.filter((a) => a.error).map((a) => a.error);
      return `<tr data-task="${esc(t.key)}"><td>${esc(t.key)}</td><td>${esc(t.step)}</td><td>${esc(t.state)}</td><td class="num">${chain.length}</td><td>${esc(chain.map((a) => a.outcome).join(' → '))}</td><td class="err">${esc(errors.at(-1) ?? t.lastError ?? '')}</td></tr>`;
    })
    .join('\n');
  return `<section id="retries"><h2>Retries: ${retried.length} task(s)</h2><table><thead><tr><th>task</th><th>step</th><th>state</th><th class="num">attempts</th><th>outcomes</th><th>last error</th></tr></thead><tbody>${rows}</tbody></table></section>`;
}

function costSection(cost: CostEstimate | undefined, cluster: boolean): string {
  if (!cost && cluster) {
    return '<section id="cost"><h2>Cost</h2><p class="muted">a run on a cluster: this machine does not know the instance types of its pools; for an estimate pass --instance-type TYPE [--spot] [--region R]</p></section>';
  }
  if (!cost) {
    return '<section id="cost"><h2>Cost</h2><p class="muted">a local run: no cloud cost (for an estimate of the same run on instances, pass --instance-type TYPE [--spot] [--region R])</p></section>';
  }
  return `<section id="cost"><h2>Cost estimate</h2><table>
<tr><th>instances</th><td>${cost.hosts} × ${esc(cost.instanceType)}${cost.spot ? ' (spot)' : ''} in ${esc(cost.region)}</td></tr>
<tr><th>instance-hours</th><td>${cost.instanceHours.toFixed(3)}</td></tr>
<tr><th>price</th><td>$${cost.hourly.toFixed(4)} per hour</td></tr>
<tr><th>estimate</th><td data-field="cost"><strong>$${cost.usd.toFixed(4)}</strong></td></tr>
</table><p class="muted">${esc(cost.note)}</p></section>`;
}
