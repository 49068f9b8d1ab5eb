/**
 * The dashboard's HTTP server (node:http): the page, a live view over Server-Sent Events, a JSON
 * view and Prometheus metrics. It binds 127.0.0.1 by default; any other address needs a token,
 * which is then checked on every request (`?token=` or `Authorization: Bearer`). Without a token
 * it answers only requests whose Host is a loopback name (no DNS rebinding from a web page).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { listJobs } from '../engine/job-state.js';
import { UsageError } from '../spec/errors.js';
import { dashboardPage } from './dashboard-page.js';
import { CorralMetrics } from './metrics.js';
import { JobMonitor, type LiveView } from './monitor.js';

/** Options of the dashboard server. */
export interface DashboardOptions {
  readonly stateDir: string;
  /** The job shown; without it, every job of the state folder can be picked (default: the newest). */
  readonly job?: string;
  /** Address to bind. @default 127.0.0.1 */
  readonly host?: string;
  /** Port to bind; 0 picks a free one. @default 0 */
  readonly port?: number;
  /** Required when `host` is not a loopback address; checked on every request when given. */
  readonly token?: string;
  /** Milliseconds between live updates. @default 500 */
  readonly intervalMs?: number;
  /** CLI flag names for error messages. @default --host, --port, --token */
  readonly flags?: { host: string; port: string; token: string };
}

/** A running dashboard. */
export interface Dashboard {
  /** The URL to open (without the token: add `?token=…` when there is one). */
  readonly url: string;
  readonly port: number;
  /** Sends a last view to every open page, ends their streams and closes the server. */
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** Whether an address to bind is a loopback one. */
export function isLoopback(host: string): boolean {
  return LOOPBACK.has(host) || /^127\.\d+\.\d+\.\d+$/.test(host) || host === '[::1]';
}

/** Refuses to bind a non-loopback address without a token (a UsageError, exit 2). */
export function checkBindOptions(
  host: string,
  token: string | undefined,
  flags: { host: string; token: string } = { host: '--host', token: '--token' },
): void {
  if (!isLoopback(host) && !token) {
    throw new UsageError(
      flags.host,
      `binding ${host} would show the job to other machines without a password`,
      `pass ${flags.token} SECRET (or CORRAL_DASHBOARD_TOKEN), or keep the default 127.0.0.1`,
    );
  }
  if (token !== undefined && token.length < 8) {
    throw new UsageError(
      flags.token,
      'the token is shorter than 8 characters',
      'use a longer random token, e.g. openssl rand -hex 16',
    );
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** The newest job of a state folder: a running one first, else the last one listed. */
function defaultJob(stateDir: string, jobs: string[]): string | undefined {
  return jobs.length <= 1 ? jobs[0] : pickNewest(stateDir, jobs);
}

function pickNewest(stateDir: string, jobs: string[]): string | undefined {
  let best: { name: string; t: number } | undefined;
  for (const name of jobs) {
    const core = new JobMonitor(stateDir, name);
    try {
      const c = core.reader.core();
      const t = c.status === 'running' ? Number.MAX_SAFE_INTEGER : (c.startedAt ?? 0);
      if (!best || t > best.t) best = { name, t };
    } finally {
      core.close();
    }
  }
  return best?.name;
}

/** Starts the dashboard server; resolves once it listens. */
export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  const host = opts.host ?? '127.0.0.1';
  const flags = opts.flags ?? { host: '--host', port: '--port', token: '--token' };
  checkBindOptions(host, opts.token, flags);
  const tokenDigest = opts.token ? digest(opts.token) : undefined;
  const monitors = new Map<string, JobMonitor>();
  const jobs = (): string[] => (opts.job ? [opts.job] : listJobs(opts.stateDir));
  const metrics = new CorralMetrics(() =>
    jobs().map((j) => {
      const m = monitorOf(j);
      m.update();
      return m;
    }),
  );
  const clients = new Map<ServerResponse, string>();
  let lastSent = new Map<string, string>();

  function monitorOf(job: string): JobMonitor {
    let m = monitors.get(job);
    if (!m) {
      m = new JobMonitor(opts.stateDir, job);
      metrics.watch(m);
      monitors.set(job, m);
    }
    return m;
  }

  function resolveJob(req: URL): string | undefined {
    const asked = req.searchParams.get('job');
    const all = jobs();
    if (asked) return all.includes(asked) ? asked : undefined;
    return opts.job ?? defaultJob(opts.stateDir, all);
  }

  /** Why a request is refused, or undefined when it may proceed. */
  function refusal(req: IncomingMessage, u: URL): [number, string] | undefined {
    if (tokenDigest) {
      const auth = req.headers.authorization;
      const given = u.searchParams.get('token') ?? (auth?.startsWith('Bearer ') ? auth.slice(7) : undefined);
      return given !== undefined && timingSafeEqual(digest(given), tokenDigest)
        ? undefined
        : [401, 'unauthorized: add ?token=… to the URL (or send Authorization: Bearer …)\n'];
    }
    const h = (req.headers.host ?? '').replace(/:\d+$/, '');
    return isLoopback(h) ? undefined : [403, 'forbidden: open the dashboard as 127.0.0.1 or localhost\n'];
  }

  function send(res: ServerResponse, code: number, type: string, body: string): void {
    res.writeHead(code, {
      'content-type': type,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'content-security-policy':
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
    });
    res.end(body);
  }

  function sse(res: ServerResponse, event: string, data: string): void {
    // A page that does not read its stream gets no more than ~1 MiB queued.
    if (res.writableLength < 1 << 20) res.write(`event: ${event}\ndata: ${data}\n\n`);
  }

  function viewJson(job: string): string {
    return JSON.stringify(monitorOf(job).view() satisfies LiveView);
  }

  const server: Server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://localhost');
    const refused = refusal(req, u);
    if (refused) return send(res, refused[0], 'text/plain', refused[1]);
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return send(res, 405, 'text/plain', 'method not allowed\n');
    try {
      switch (u.pathname) {
        case '/':
          return send(res, 200, 'text/html; charset=utf-8', dashboardPage());
        case '/healthz':
          return send(res, 200, 'text/plain', 'ok\n');
        case '/api/jobs':
          return send(
            res,
            200,
            'application/json',
            JSON.stringify({ jobs: jobs(), current: resolveJob(u) ?? null }),
          );
        case '/api/view': {
          const job = resolveJob(u);
          if (!job) return send(res, 404, 'application/json', JSON.stringify({ error: 'no such job' }));
          return send(res, 200, 'application/json', viewJson(job));
        }
        case '/metrics':
          metrics.text().then(
            (t) => send(res, 200, metrics.contentType, t),
            (err: Error) => send(res, 500, 'text/plain', `${err.message}\n`),
          );
          return;
        case '/events': {
          const job = resolveJob(u);
          if (!job) return send(res, 404, 'text/plain', 'no such job\n');
          res.writeHead(200, {
            'content-type': 'text/event-stream',
            'cache-control': 'no-store',
            connection: 'keep-alive',
          });
          res.write('retry: 2000\n\n');
          clients.set(res, job);
          const data = viewJson(job);
          sse(res, 'view', data);
          req.on('close', () => clients.delete(res));
          return;
        }
        default:
          return send(res, 404, 'text/plain', 'not found\n');
      }
    } catch (err) {
      return send(res, 500, 'text/plain', `${(err as Error).message}\n`);
    }
  });

  /** Pushes a new view to the pages of each job that changed. */
  function tick(): void {
    const next = new Map<string, string>();
    for (const job of new Set(clients.values())) {
      try {
        next.set(job, viewJson(job));
      } catch {
        // the state file is being replaced or is busy: try again on the next tick
      }
    }
    for (const [res, job] of clients) {
      const data = next.get(job);
      if (data !== undefined && data !== lastSent.get(job)) sse(res, 'view', data);
    }
    lastSent = next;
  }
  const timer = setInterval(tick, opts.intervalMs ?? 500);
  const keepAlive = setInterval(() => {
    for (const res of clients.keys()) res.write(': keep-alive\n\n');
  }, 15_000);
  timer.unref();
  keepAlive.unref();

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EADDRINUSE' || err.code === 'EACCES' || err.code === 'EADDRNOTAVAIL'
          ? new UsageError(
              flags.port,
              `cannot listen on ${host}:${opts.port ?? 0} (${err.code})`,
              'pick another port, or 0 for any free one',
            )
          : err,
      ),
    );
    server.listen(opts.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const shown = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  // The token is never printed: the user knows it and appends it (?token=…).
  const url = `http://${shown}:${port}/`;

  return {
    url,
    port,
    async close() {
      clearInterval(timer);
      clearInterval(keepAlive);
      for (const [res, job] of clients) {
        try {
          sse(res, 'end', viewJson(job));
        } catch {
          // nothing more to say
        }
        res.end();
      }
      clients.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      for (const m of monitors.values()) m.close();
    },
  };
}
