/**
 * Structured logs: the coordinator's pino events always go to the job's events log as JSON lines;
 * `--log-format json|pretty` (env CORRAL_LOG_FORMAT) also prints them on stderr in that form, and
 * `--log-level` (env CORRAL_LOG_LEVEL) sets the least level recorded. The pretty form is corral's
 * own one-line rendering (the same as `corral logs`), so no extra dependency is needed.
 */
import { Writable } from 'node:stream';
import { UsageError } from '../spec/errors.js';
import { type DestinationStream, type Level, pino } from '../vendor/pino.js';

/** Forms of the logs on stderr. */
export const LOG_FORMATS = ['json', 'pretty'] as const;
/** Levels of `--log-level`, least to most severe (`silent` records nothing). */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/** Form of the logs on stderr. */
export type LogFormat = (typeof LOG_FORMATS)[number];
/** A level of `--log-level`. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Checks `--log-format` / `--log-level` values and puts them in the environment of this process and its children. */
export function applyLogFlags(flags: { logFormat?: string; logLevel?: string }): void {
  if (flags.logFormat !== undefined) {
    if (!(LOG_FORMATS as readonly string[]).includes(flags.logFormat)) {
      throw new UsageError(
        '--log-format',
        `unknown format "${flags.logFormat}"`,
        `use one of ${LOG_FORMATS.join(', ')}`,
      );
    }
    process.env.CORRAL_LOG_FORMAT = flags.logFormat;
  }
  if (flags.logLevel !== undefined) {
    if (!(LOG_LEVELS as readonly string[]).includes(flags.logLevel)) {
      throw new UsageError(
        '--log-level',
        `unknown level "${flags.logLevel}"`,
        `use one of ${LOG_LEVELS.join(', ')}`,
      );
    }
    process.env.CORRAL_LOG_LEVEL = flags.logLevel;
  }
}

/** The level from CORRAL_LOG_LEVEL (info when unset or unknown). */
export function logLevel(env: NodeJS.ProcessEnv = process.env): LogLevel {
  const l = env.CORRAL_LOG_LEVEL;
  return l && (LOG_LEVELS as readonly string[]).includes(l) ? (l as LogLevel) : 'info';
}

/** The stderr form from CORRAL_LOG_FORMAT (none when unset or unknown). */
export function logFormat(env: NodeJS.ProcessEnv = process.env): LogFormat | undefined {
  const f = env.CORRAL_LOG_FORMAT;
  return f && (LOG_FORMATS as readonly string[]).includes(f) ? (f as LogFormat) : undefined;
}

const LEVEL_NAMES: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO ',
  40: 'WARN ',
  50: 'ERROR',
  60: 'FATAL',
};

/** One JSON event line as one readable line: `time LEVEL message key=value …`; other lines as they are. */
export function formatEvent(line: string): string {
  let e: Record<string, unknown>;
  try {
    e = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  if (e === null || typeof e !== 'object' || typeof e.time !== 'number') return line;
  const { time, level, msg, event, pid: _pid, hostname: _host, job: _job, ...rest } = e;
  const lvl = LEVEL_NAMES[Number(level)] ?? String(level);
  const extra = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
  const text = typeof msg === 'string' ? msg : typeof event === 'string' ? event : '';
  return `${new Date(time).toISOString()} ${lvl} ${text}${extra ? ` ${extra}` : ''}`;
}

/** A stream that prints each JSON line it gets in the pretty form on stderr. */
function prettyStderr(): Writable {
  let rest = '';
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      const lines = (rest + chunk.toString('utf8')).split('\n');
      rest = lines.pop() ?? '';
      for (const l of lines) if (l) process.stderr.write(`${formatEvent(l)}\n`);
      cb();
    },
  });
}

/**
 * Where the coordinator's logger writes: the events log (JSON lines), and stderr too when
 * CORRAL_LOG_FORMAT is set.
 */
export function eventStream(eventsFile: string, env: NodeJS.ProcessEnv = process.env): DestinationStream {
  const file = pino.destination({ dest: eventsFile, sync: true });
  // A line that cannot be written (the disk is full) is lost, not the run: unheard, the stream's
  // 'error' event would kill the coordinator with a stack trace. The state file's own writes
  // report a full disk (one line, the state kept: see state-dir.ts noSpaceFailure).
  file.on('error', () => {});
  const format = logFormat(env);
  if (!format) return file;
  const level = logLevel(env);
  const streamLevel: Level = level === 'silent' ? 'fatal' : level;
  const stderr = format === 'json' ? pino.destination({ dest: 2, sync: true }) : prettyStderr();
  return pino.multistream([
    { level: streamLevel, stream: file },
    { level: streamLevel, stream: stderr },
  ]);
}
