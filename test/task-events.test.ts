/** Issue 22, item 6: `corral logs JOB -f` without a listener leak, and per-task events in the event log. */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, startCli, tempDir, waitFor, writeFiles } from './helpers.js';

test('logs -f: no MaxListenersExceededWarning, and each task started, finished, retried or failed with its key, at the default level', {
  timeout: 90_000,
}, async (t) => {
  const dir = tempDir(t);
  const n = 16;
  writeFiles(dir, {
    'items.txt': `${Array.from({ length: n }, (_, i) => `i${i}`).join('\n')}\n`,
    // i3 fails once then succeeds (a retry); i5 always fails (a dead letter); the rest succeed
    'job.yaml': `name: tevents
tasks:
  map: { lines: items.txt }
  command: |
    sleep 0.25
    if [ {input} = i3 ] && [ ! -e once ]; then touch once; echo flaky >&2; exit 4; fi
    if [ {input} = i5 ]; then echo broken >&2; exit 5; fi
    echo {input}
retries: { maxAttempts: 2, backoff: { initial: 10ms } }
concurrency: 2
`,
  });
  const run = startCli(['run', 'job.yaml', '--quiet'], { cwd: dir });
  t.after(() => {
    run.kill('SIGKILL');
  });
  await waitFor(() => existsSync(path.join(dir, '.corral/jobs/tevents/coordinator.pid')), 20_000);
  // the run takes ~2.5 s: well over the 11 waits of 200 ms that made node warn
  const follow = await runCli(['logs', 'tevents', '-f'], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(follow.code, 0, follow.stderr);
  assert.doesNotMatch(follow.stderr, /MaxListenersExceededWarning|memory leak/);
  assert.equal(follow.stderr, '');
  assert.equal((await run.result).code, 1);
  const lines = follow.stdout.split('\n');
  const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
  const planned = at(/INFO {2}planned/);
  const finished = at(/job failed/);
  assert.ok(planned >= 0 && finished > planned, follow.stdout);
  for (let i = 0; i < n; i++) {
    const started = at(new RegExp(`INFO {2}task ${i} started`));
    assert.ok(
      started > planned && started < finished,
      `no start of task ${i} between planned and the end:\n${follow.stdout}`,
    );
  }
  for (const i of [0, 1, 2, 3, 4, 6, 15]) {
    assert.ok(
      at(new RegExp(`INFO {2}task ${i} finished in \\d+\\.\\ds`)) > at(new RegExp(`task ${i} started`)),
      `task ${i} finished:\n${follow.stdout}`,
    );
  }
  assert.ok(at(/WARN {2}task 3 failed \(attempt 1 of 2\), retried: /) > planned, follow.stdout);
  assert.ok(at(/INFO {2}task 3 started \(attempt 2 of 2\)/) > planned, follow.stdout);
  assert.ok(at(/ERROR task 5 failed after 2 attempt\(s\): /) > planned, follow.stdout);
  // the same lines, as JSON, carry the key and the event
  const raw = (await runCli(['logs', 'tevents', '--raw'], { cwd: dir })).stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { event?: string; task?: string; level: number });
  const of = (event: string) => raw.filter((e) => e.event === event).map((e) => e.task);
  assert.equal(of('task-finished').length, n - 1);
  assert.deepEqual(of('task-retried').sort(), ['3', '5']);
  assert.deepEqual(of('task-failed'), ['5']);
  assert.equal(new Set(of('task-started')).size, n);
});
