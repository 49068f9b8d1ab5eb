import { Imds, type ImdsOptions } from './imds.js';

/** Paths that announce the end of a spot instance. */
export const SPOT_PATHS = [
  '/latest/meta-data/spot/instance-action',
  '/latest/meta-data/events/recommendations/rebalance',
] as const;

/** A notice read from IMDS. */
export interface SpotNotice {
  /** `instance-action` (interruption in ~2 minutes) or `rebalance` (elevated risk). */
  readonly kind: 'instance-action' | 'rebalance';
  /** The notice's JSON text. */
  readonly detail: string;
  /** When the watcher saw it. */
  readonly seenAt: number;
}

/**
 * Time between two polls of IMDS. The wait for a notice to be seen is up to this long, and the
 * leases should be back within a second of the notice (bench 6b); a poll is two GETs to the
 * link-local IMDS, four requests a second per worker.
 */
export const SPOT_POLL_MS = 500;

/** Options of the spot watcher. */
export interface SpotWatcherOptions extends ImdsOptions {
  /** Time between polls. @default SPOT_POLL_MS */
  readonly intervalMs?: number;
  /**
   * Called once per kind: on a rebalance recommendation (polling goes on, for the interruption
   * notice that may follow), and on the interruption notice (polling stops).
   */
  readonly onNotice: (n: SpotNotice) => void;
  /** Called on polling errors (IMDS unreachable). @default - ignored */
  readonly onError?: (err: Error) => void;
}

/**
 * Polls IMDSv2 for a spot interruption notice or a rebalance recommendation twice a second and
 * calls `onNotice` once for each. A rebalance recommendation is only an elevated risk: the worker
 * claims no new task but finishes those it holds. AWS gives two minutes between the interruption
 * notice and the interruption: the worker then hands its leases back at once and drains.
 */
export class SpotWatcher {
  private timer: NodeJS.Timeout | undefined;
  private fired = false;
  private rebalanceSeen = false;
  private readonly imds: Imds;

  constructor(private readonly o: SpotWatcherOptions) {
    this.imds = new Imds(o);
  }

  start(): void {
    const tick = async () => {
      try {
        const n = await this.check();
        if (n?.kind === 'instance-action' && !this.fired) {
          this.fired = true;
          this.stop();
          this.o.onNotice(n);
          return;
        }
        if (n?.kind === 'rebalance' && !this.rebalanceSeen) {
          this.rebalanceSeen = true;
          this.o.onNotice(n);
        }
      } catch (err) {
        this.o.onError?.(err as Error);
      }
      if (!this.fired) this.schedule(tick);
    };
    this.schedule(tick, 0);
  }

  private schedule(fn: () => void, ms = this.o.intervalMs ?? SPOT_POLL_MS): void {
    this.timer = setTimeout(fn, ms);
    this.timer.unref();
  }

  /** One poll of both paths. */
  async check(): Promise<SpotNotice | undefined> {
    const [action, rebalance] = await Promise.all(SPOT_PATHS.map((p) => this.imds.get(p)));
    if (action) return { kind: 'instance-action', detail: action, seenAt: Date.now() };
    if (rebalance) return { kind: 'rebalance', detail: rebalance, seenAt: Date.now() };
    return undefined;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
