/**
 * Prometheus metrics of jobs, built from their state files with prom-client. Every metric is
 * named `corral_…` and labelled `corral_job` (not `job`, which Prometheus sets itself to the
 * scrape job's name). The names, types and labels are documented in docs/observability.md.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { JobMonitor } from './monitor.js';
import type { AttemptRow } from './snapshot.js';

/** Upper bounds (seconds) of the task duration histogram's buckets. */
export const DURATION_BUCKETS = [
  0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200,
];

/** Task states reported by `corral_tasks`. */
const STATES = ['pending', 'leased', 'done', 'dead'] as const;

/**
 * A registry with corral's metrics. Gauges are read from each job's latest snapshot when
 * scraped; counters and the histogram are fed by the attempts each monitor tails.
 */
export class CorralMetrics {
  readonly registry = new Registry();
  private readonly monitors = new Map<string, JobMonitor>();
  private readonly attempts: Counter<'corral_job' | 'step' | 'outcome'>;
  private readonly retries: Counter<'corral_job' | 'step'>;
  private readonly duration: Histogram<'corral_job' | 'step' | 'outcome'>;

  /** @param refresh updates the monitors of the jobs to report (their state files are read again) and returns them */
  constructor(private readonly refresh: () => JobMonitor[]) {
    const registers = [this.registry];
    const self = this;
    new Gauge({
      name: 'corral_tasks',
      help: 'Tasks by state (pending, leased, done, dead) per job and step.',
      labelNames: ['corral_job', 'step', 'state'],
      registers,
      collect() {
        this.reset();
        for (const m of self.monitors.values()) {
          for (const s of m.latest().steps) {
            for (const state of STATES) this.set({ corral_job: m.job, step: s.name, state }, s.counts[state]);
          }
        }
      },
    });
    new Gauge({
      name: 'corral_queue_depth',
      help: 'Tasks waiting for a worker (pending, including those waiting out a retry backoff).',
      labelNames: ['corral_job', 'step'],
      registers,
      collect() {
        this.reset();
        for (const m of self.monitors.values()) {
          for (const s of m.latest().steps) this.set({ corral_job: m.job, step: s.name }, s.counts.pending);
        }
      },
    });
    new Gauge({
      name: 'corral_dead_letters',
      help: 'Tasks that failed every attempt (dead letters).',
      labelNames: ['corral_job', 'step'],
      registers,
      collect() {
        this.reset();
        for (const m of self.monitors.values()) {
          for (const s of m.latest().steps) this.set({ corral_job: m.job, step: s.name }, s.counts.dead);
        }
      },
    });
    new Gauge({
      name: 'corral_workers_active',
      help: 'Worker processes running for the job now (0 when no coordinator runs it).',
      labelNames: ['corral_job'],
      registers,
      collect() {
        this.reset();
        for (const m of self.monitors.values()) {
          const c = m.latest();
          const n = c.status === 'running' ? c.workers.filter((w) => w.state === 'running').length : 0;
          this.set({ corral_job: m.job }, n);
        }
      },
    });
    new Gauge({
      name: 'corral_job_running',
      help: '1 while a coordinator runs the job, else 0.',
      labelNames: ['corral_job'],
      registers,
      collect() {
        this.reset();
        for (const m of self.monitors.values())
          this.set({ corral_job: m.job }, m.latest().status === 'running' ? 1 : 0);
      },
    });
    this.attempts = new Counter({
      name: 'corral_task_attempts_total',
      help: 'Attempts that ended, by outcome (committed, ok, duplicate, failed, expired, dead, released).',
      labelNames: ['corral_job', 'step', 'outcome'],
      registers,
    });
    this.retries = new Counter({
      name: 'corral_task_retries_total',
      help: 'Attempts that failed or whose lease expired, after which the task was queued again.',
      labelNames: ['corral_job', 'step'],
      registers,
    });
    this.duration = new Histogram({
      name: 'corral_task_duration_seconds',
      help: 'Run time of task attempts (start to end, as recorded by the worker), by outcome.',
      labelNames: ['corral_job', 'step', 'outcome'],
      buckets: DURATION_BUCKETS,
      registers,
    });
  }

  /** Starts counting a job's attempts; call before its monitor's first update. */
  watch(m: JobMonitor): void {
    if (this.monitors.has(m.job)) return;
    this.monitors.set(m.job, m);
    m.onAttempt((a) => this.observe(m.job, a));
  }

  private observe(job: string, a: AttemptRow): void {
    const labels = { corral_job: job, step: a.step, outcome: a.outcome };
    this.attempts.inc(labels);
    if (a.outcome === 'failed' || a.outcome === 'expired')
      this.retries.inc({ corral_job: job, step: a.step });
    if (a.startedAt !== null && a.finishedAt !== null && a.finishedAt >= a.startedAt) {
      this.duration.observe(labels, (a.finishedAt - a.startedAt) / 1000);
    }
  }

  /** The metrics in Prometheus text format. */
  async text(): Promise<string> {
    for (const m of this.refresh()) this.watch(m);
    return this.registry.metrics();
  }

  /** The content type of `text()`. */
  get contentType(): string {
    return this.registry.contentType;
  }
}
