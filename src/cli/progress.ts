import { createRequire } from 'node:module';
import type { Progress } from '../engine/coordinator.js';
import { formatSeconds } from './output.js';

const require = createRequire(import.meta.url);

/** Shows a job's progress: a bar on a terminal, a plain line every few seconds otherwise. */
export interface ProgressView {
  update(p: Progress): void;
  stop(): void;
}

function eta(p: Progress): string {
  const left = p.pending + p.leased;
  return p.rate > 0 ? formatSeconds(left / p.rate) : '?';
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
    const bar = new cliProgress.SingleBar(
      {
        format:
          ' {bar} {percentage}% | {finished}/{total} done {done} · running {leased} · failed {dead} | {rate}/s | ETA {eta}',
        barsize: 24,
        hideCursor: true,
        stream: process.stderr,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(p) {
        const payload = {
          done: p.done,
          leased: p.leased,
          dead: p.dead,
          rate: p.rate.toFixed(1),
          eta: eta(p),
          finished: p.done + p.dead,
        };
        if (!started) {
          bar.start(p.total, p.done + p.dead, payload);
          started = true;
        }
        bar.setTotal(p.total);
        bar.update(p.done + p.dead, payload);
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
      const line = `progress: ${p.done + p.dead}/${p.total} (done ${p.done}, running ${p.leased}, failed ${p.dead}) ${p.rate.toFixed(1)}/s eta ${eta(p)}`;
      if (now - last >= every && line !== lastLine) {
        process.stderr.write(`${line}\n`);
        last = now;
        lastLine = line;
      }
    },
    stop() {},
  };
}
