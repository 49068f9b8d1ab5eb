/**
 * The local Compute adapter on its own, with real worker processes: a worker that cannot start
 * (here: its job file is missing) is not started again and again; after a few quick deaths in a
 * row the adapter gives up and says why, so that the run ends instead of spinning. And
 * `corral run` prestarts its workers from a glance at its command line, for that run only.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import type { WorkerEvent } from '../src/compute/compute.js';
import { discardPrestarted, LocalCompute } from '../src/compute/local/local-compute.js';
import { tempDir, waitFor } from './helpers.js';

test('workers that keep dying at start are given up on, with the reason', async (t) => {
  const dir = tempDir(t);
  for (const d of ['logs', 'workers', 'store']) mkdirSync(path.join(dir, d));
  const events: WorkerEvent[] = [];
  const compute = new LocalCompute({
    jobJson: path.join(dir, 'missing-job.json'),
    db: path.join(dir, 'state.db'),
    logsDir: path.join(dir, 'logs'),
    storeRoot: path.join(dir, 'store'),
    workersDir: path.join(dir, 'workers'),
    idPrefix: 'wtest',
    onEvent: (e) => events.push(e),
  });
  t.after(() => compute.abort());
  await compute.scaleTo(1);
  await waitFor(() => compute.failure !== undefined, 60_000);
  assert.match(
    compute.failure!,
    /5 worker processes in a row exited within 3s of starting \(last: exit 70\)/,
  );
  assert.equal(events.filter((e) => e.type === 'lost').length, 5);
  // and none is started after that
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(compute.running(), 0);
  assert.equal(events.filter((e) => e.type === 'started').length, 5);
});

/** Pids of this process's children that run a local worker (from /proc). */
function workerChildren(): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const state = stat.slice(stat.lastIndexOf(')') + 2)[0];
      if (
        ppid === process.pid &&
        state !== 'Z' &&
        readFileSync(`/proc/${d}/cmdline`, 'utf8').includes('local-main')
      )
        out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

test('corral run FILE prestarts its workers before the command line loads, and only for that run', async (t) => {
  const { startEarly, takeEarly, VALUED } = await import('../src/cli/early-start.js');
  const dir = tempDir(t);
  const job = path.join(dir, 'job.yaml');
  writeFileSync(
    job,
    'name: early\ntasks:\n  map:\n    lines: lines.txt\n  command: "true"\nconcurrency: 1\n',
  );
  const alive = (w: { child: { exitCode: number | null; signalCode: string | null } }) =>
    w.child.exitCode === null && w.child.signalCode === null;

  // the FILE and --concurrency as commander will parse them: the run takes the workers
  startEarly(['node', 'corral', 'run', '--state-dir', 'x', job, '-c', '1']);
  const taken = takeEarly(job, 1);
  assert.ok(taken, 'workers were prestarted');
  assert.equal(taken.length, 1);
  assert.equal(taken[0]!.commandsOnly, true);
  await taken[0]!.ready;
  assert.ok(alive(taken[0]!));
  // a commands-only worker: started without NODE_EXTRA_CA_CERTS, and with V8 optimizing later
  const cmdline = readFileSync(`/proc/${taken[0]!.child.pid}/cmdline`, 'utf8').split('\0');
  assert.ok(cmdline.includes('--interrupt-budget=1081344'), cmdline.join(' '));
  discardPrestarted(taken);
  assert.equal(takeEarly(job, 1), undefined, 'taken once');

  // commander parsed something else (another concurrency): the prestarted workers are stopped
  startEarly(['node', 'corral', 'run', job]);
  const started = workerChildren();
  assert.equal(started.length, 1);
  assert.equal(takeEarly(job, 3), undefined);
  await waitFor(() => !started.some((pid) => workerChildren().includes(pid)), 10_000);

  // every option of `corral run` that takes a value (but -c and --cluster, read apart) is known
  // to the glance, or its value would be taken for the FILE
  const { buildProgram } = await import('../src/cli/program.js');
  const program = await buildProgram(['node', 'corral', 'run']);
  const run = program.commands.find((c) => c.name() === 'run')!;
  const valued = [...program.options, ...run.options]
    .filter((o) => (o.required || o.optional) && o.long !== '--concurrency' && o.long !== '--cluster')
    .map((o) => o.long!);
  assert.ok(valued.length >= 6, valued.join(' '));
  assert.deepEqual(
    valued.filter((o) => !VALUED.has(o)),
    [],
    'options with a value that startEarly does not know',
  );

  // on a cluster, asking for help, or an unreadable file: nothing starts
  for (const argv of [
    ['run', job, '--cluster', 'c'],
    ['run', '--help'],
    ['run', path.join(dir, 'nope.yaml')],
    ['status', job],
  ]) {
    startEarly(['node', 'corral', ...argv]);
    assert.deepEqual(takeEarly(job, undefined) ?? [], [], argv.join(' '));
  }
});
