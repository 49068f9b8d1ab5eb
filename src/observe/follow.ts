/**
 * `corral logs -f`: prints a log file's lines as they are written, for as long as the job runs.
 */
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';

/** Options of `followFile`. */
export interface FollowOptions {
  /** Called with each complete line (without its newline). */
  readonly onLine: (line: string) => void;
  /** Whether to keep waiting for more lines (the job still runs). */
  readonly running: () => boolean;
  /** Milliseconds between looks at the file. @default 200 */
  readonly intervalMs?: number;
  /** Stops following (Ctrl-C). */
  readonly signal?: AbortSignal;
}

/**
 * Prints every line of `file` (which may not exist yet), then the lines appended to it while
 * `running()` holds; once it no longer does, the rest of the file is printed and the call ends.
 */
export async function followFile(file: string, opts: FollowOptions): Promise<void> {
  let offset = 0;
  let partial = '';
  const buf = Buffer.alloc(64 * 1024);
  const drain = () => {
    if (!existsSync(file)) return;
    const size = statSync(file).size;
    if (size < offset) offset = 0; // the file was truncated or replaced
    if (size === offset) return;
    const fd = openSync(file, 'r');
    try {
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, offset);
        if (n <= 0) break;
        offset += n;
        const lines = (partial + buf.subarray(0, n).toString('utf8')).split('\n');
        partial = lines.pop() ?? '';
        for (const l of lines) opts.onLine(l);
      }
    } finally {
      closeSync(fd);
    }
  };
  drain();
  while (opts.running() && !opts.signal?.aborted) {
    // one listener per wait, removed when the wait ends: left behind, they piled up on the
    // signal (a MaxListenersExceededWarning after 2 s of following)
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        opts.signal?.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, opts.intervalMs ?? 200);
      opts.signal?.addEventListener('abort', done, { once: true });
    });
    drain();
  }
  drain();
  if (partial) opts.onLine(partial);
}
