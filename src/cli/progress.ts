import { createRequire } from 'node:module';
import type { Progress } from '../engine/coordinator.js';
import { formatSeconds } from './output.js';

const require = createRequire(import.meta.url);

/** Shows a job's progress: a bar on a terminal, a plain line every few seconds otherwise. */
export interface ProgressView {
  update(p: Progress): void;
  stop(): void;
}

/** Time left at the current rate, with its unit (`12s`, `3m05s`), or `--` until there is a rate. */
export function etaText(p: Progress): string {
  const left = p.pending + p.leased + p.blocked;
  if (left === 0) return '0s';
  return p.rate > 0 ? formatSeconds(left / p.rate) : '--';
}

/** Tasks running now: leased ones, of which each worker runs one at a time (the others wait in its queue). */
export function runningNow(p: Progress): number {
  return Math.min(p.leased, p.workers);
}

/** Tasks that will not run any more: done, failed (dead letters) or skipped. */
function finished(p: Progress): number {
  return p.done + p.dead + p.skipped;
}

const BAR_MAX = 24;
const BAR_MIN = 6;

/**
 * One progress line that fits `columns`: the counts (done, failed, skipped, waiting, running of
 * the total), the ETA and the rate are kept; the bar gets what is left (and goes below ~60
 * columns), so the failed count is never cut off at the right edge.
 */
export function progressLine(p: Progress, columns: number): string {
  const pct = p.total > 0 ? Math.floor((100 * finished(p)) / p.total) : 0;
  const counts = [
    `${p.done}/${p.total} done`,
    `failed ${p.dead}`,
    ...(p.skipped > 0 ? [`skipped ${p.skipped}`] : []),
    ...(p.blocked > 0 ? [`waiting ${p.blocked}`] : []),
    `running ${runningNow(p)}`,
  ].join(' · ');
  const eta = `ETA ${etaText(p)}`;
  const rate = `${p.rate.toFixed(1)}/s`;
  const width = Math.max(20, columns - 1); // the last column would wrap on some terminals
  // widest first; `bar` marks the forms that draw a bar in the room left
  const forms: Array<{ bar: boolean; make: (bar: string) => string }> = [
    { bar: true, make: (bar) => ` ${bar} ${pct}% | ${counts} | ${rate} | ${eta}` },
    { bar: true, make: (bar) => ` ${bar} ${pct}% | ${counts} | ${eta}` },
    { bar: false, make: () => ` ${pct}% | ${counts} | ${eta}` },
    { bar: false, make: () => ` ${counts} | ${eta}` },
  ];
  for (const { bar, make } of forms) {
    const base = make('').length;
    if (!bar) {
      if (base <= width) return make('');
      continue;
    }
    const room = Math.min(BAR_MAX, width - base);
    if (room >= BAR_MIN) {
      const full = p.total > 0 ? Math.round((room * finished(p)) / p.total) : 0;
      return make(`${'█'.repeat(full)}${'░'.repeat(room - full)}`);
    }
  }
  return ` ${counts}`;
}

/** A progress view for stderr: a live bar on a TTY, plain lines every `plainEveryMs` otherwise. */
export function createProgressView(opts: {
  tty: boolean;
  quiet?: boolean;
  plainEveryMs?: number;
}): ProgressView {
  if (opts.quiet) return { update() {}, stop() {} };
  if (opts.tty) {
    // loaded only for a terminal: most runs (workers, CI, pipes) never draw a bar
    const cliProgress = require('cli-progress') as typeof import('cli-progress');
    const bar = new cliProgress.SingleBar({
      // the whole line is ours: cli-progress's own {eta} is "INF" without a rate, and has no unit
      format: (_o: unknown, params: { maxWidth: number }, payload: { p?: Progress }) =>
        payload.p ? progressLine(payload.p, params.maxWidth) : '',
      hideCursor: true,
      stream: process.stderr,
      fps: 5,
    });
    let started = false;
    return {
      update(p) {
        if (!started) {
          bar.start(p.total, finished(p), { p });
          started = true;
        }
        bar.setTotal(p.total);
        bar.update(finished(p), { p });
      },
      stop() {
        if (started) bar.stop();
      },
    };
  }
  const every = opts.plainEveryMs ?? 5000;
  let last = 0;
  let lastLine = '';
  return {
    update(p) {
      const now = Date.now();
      const line = `progress: ${finished(p)}/${p.total} (done ${p.done}, failed ${p.dead}, skipped ${p.skipped}, waiting ${p.blocked}, running ${runningNow(p)}) ${p.rate.toFixed(1)}/s ETA ${etaText(p)}`;
      if (now - last >= every && line !== lastLine) {
        process.stderr.write(`${line}\n`);
        last = now;
        lastLine = line;
      }
    },
    stop() {},
  };
}
