import { existsSync, readFileSync } from 'node:fs';

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Whether a process with this pid exists (EPERM: it exists, but is someone else's). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  return !zombie(pid);
}

/**
 * Whether a process has exited but was never reaped. A worker whose coordinator was killed is
 * reparented to pid 1, which in a container may never reap it: it still answers kill(pid, 0), and
 * taken as alive its leases were left to expire and charged to their tasks.
 */
function zombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const state = stat[stat.lastIndexOf(')') + 2];
    return state === 'Z' || state === 'X';
  } catch (err) {
    // gone since kill(pid, 0) answered, or no /proc (not Linux: kill's answer stands)
    return (err as NodeJS.ErrnoException).code === 'ENOENT' && existsSync('/proc/self/stat');
  }
}
