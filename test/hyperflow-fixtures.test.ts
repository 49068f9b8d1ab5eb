/**
 * Workflows published with HyperFlow itself (test/fixtures/hyperflow/*, each with its SOURCE.md)
 * import and run unchanged, in DAG order, with stand-in executables that check their inputs exist
 * and write their outputs; one of them also runs on the cluster transport (SQS + S3 on fauxqs).
 */
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { runClusterWorker } from '../src/worker/cluster-main.js';
import { PEER_ENV, startPeer } from './cluster-peer.js';
import { ROOT, runCli, tempDir, writeFiles } from './helpers.js';

const FIXTURES = path.join(ROOT, 'test/fixtures/hyperflow');
/** Where Soykb52 keeps its reference data; the test puts that data below its own folder instead. */
const SOYKB_DATA = '/home/ubuntu/data/';

interface Raw {
  processes: Array<{
    name: string;
    config: { executor: { executable: string; args?: unknown[]; stdout?: string } };
    ins: Array<number | string>;
    outs: Array<number | string>;
  }>;
  signals: Array<{ name: string | number; data?: unknown }>;
  outs?: Array<number | string>;
}

/**
 * The stand-in for every executable: it finds its process by its command line (in the map the
 * test writes from the workflow as published), fails unless each of the process's inputs exists,
 * writes each of its outputs (its stdout file through stdout) and notes its start and end in a trace.
 * With STANDIN_STAGED set (a cluster worker), an input named by an absolute path must be at
 * .corral-root/<that path> in the working directory, where the worker stages it.
 */
const STANDIN = `#!/bin/sh
# (shell built-ins only, but for mkdir: a process costs a fork, not ten)
key="\${0##*/}"
for a in "$@"; do
  while :; do case "$a" in *.corral-root/*) a="\${a%%.corral-root/*}/\${a#*.corral-root/}" ;; *) break ;; esac; done
  key="$key $a"
done
found=
while IFS='	' read -r k id stdout ins outs; do
  if [ "$k" = "$key" ]; then found=1; break; fi
done < "$STANDIN_MAP"
[ -n "$found" ] || { echo "stand-in: no process runs $key" >&2; exit 90; }
echo "start $id $*" >> "$STANDIN_TRACE"
set -f
IFS='|'
for f in $ins; do
  [ "$f" = - ] && continue
  case "$f" in /*) [ -n "$STANDIN_STAGED" ] && f=".corral-root$f" ;; esac
  [ -f "$f" ] || { echo "stand-in: process $id: input $f is missing" >&2; exit 91; }
done
for o in $outs; do
  [ "$o" = - ] && continue
  if [ "$o" = "$stdout" ]; then echo "stdout of process $id"; continue; fi
  case "$o" in */*) mkdir -p "\${o%/*}" ;; esac
  echo "written by process $id" > "$o"
done
echo "end $id" >> "$STANDIN_TRACE"
`;

/** The fixture's workflow as published, and what each process reads and writes by signal name. */
function readFixture(name: string, dataDir?: string) {
  let text = readFileSync(path.join(FIXTURES, name, 'workflow.json'), 'utf8');
  // Soykb52's absolute input paths, moved below the test's folder (they stay absolute)
  if (dataDir) text = text.split(SOYKB_DATA).join(`${dataDir}/`);
  const wf = JSON.parse(text) as Raw;
  const sig = (r: number | string) => String(typeof r === 'number' ? wf.signals[r]!.name : r);
  const procs = wf.processes.map((p, id) => {
    const e = p.config.executor;
    return {
      id,
      key: [path.basename(e.executable), ...(e.args ?? []).map(String)].join(' '),
      executable: e.executable,
      stdout: e.stdout ?? '',
      ins: p.ins.map(sig),
      outs: p.outs.map(sig),
    };
  });
  const produced = new Map(procs.flatMap((p) => p.outs.map((o) => [o, p.id] as const)));
  const inputs = [...new Set(procs.flatMap((p) => p.ins).filter((f) => !produced.has(f)))];
  return { text, wf, procs, produced, inputs, outs: (wf.outs ?? []).map(sig) };
}

/** A folder holding the workflow, its inputs (each a file) and the stand-ins; the env that runs them. */
function prepare(dir: string, name: string, dataDir?: string) {
  const fx = readFixture(name, dataDir);
  const bin = path.join(dir, 'bin');
  mkdirSync(bin);
  const standin = path.join(bin, '.standin');
  writeFileSync(standin, STANDIN);
  chmodSync(standin, 0o755);
  for (const p of fx.procs) {
    // a bare name is found on PATH; a path (./make-movie.sh) is in the working directory
    const to = p.executable.includes('/')
      ? path.join(dir, p.executable)
      : path.join(bin, path.basename(p.executable));
    if (!existsSync(to)) {
      copyFileSync(standin, to);
      chmodSync(to, 0o755);
    }
  }
  const map = path.join(dir, 'standin.map');
  writeFileSync(
    map,
    // (no field is empty: a run of tabs would be read as one)
    fx.procs
      .map((p) => [p.key, p.id, p.stdout || '-', p.ins.join('|') || '-', p.outs.join('|') || '-'].join('\t'))
      .join('\n') + '\n',
  );
  writeFiles(dir, { 'workflow.json': fx.text });
  for (const f of fx.inputs) {
    const at = path.isAbsolute(f) ? f : path.join(dir, f);
    mkdirSync(path.dirname(at), { recursive: true });
    writeFileSync(at, `input ${f}\n`);
  }
  const trace = path.join(dir, 'trace.log');
  const env = { PATH: `${bin}:${process.env.PATH}`, STANDIN_MAP: map, STANDIN_TRACE: trace };
  return { ...fx, env, trace };
}

/** Every process ran once, each after every process whose outputs it reads had ended. */
function assertDagOrder(fx: ReturnType<typeof prepare>): void {
  const lines = readFileSync(fx.trace, 'utf8').trim().split('\n');
  const startAt = new Map<number, number>();
  const endAt = new Map<number, number>();
  for (const [k, l] of lines.entries()) {
    const [what, id] = l.split(' ');
    const m = what === 'start' ? startAt : endAt;
    assert.equal(m.has(Number(id)), false, `process ${id} ${what}ed twice`);
    m.set(Number(id), k);
  }
  assert.equal(startAt.size, fx.procs.length, 'every process started');
  assert.equal(endAt.size, fx.procs.length, 'every process ended');
  let edges = 0;
  for (const p of fx.procs)
    for (const f of p.ins) {
      const from = fx.produced.get(f);
      if (from === undefined) continue;
      edges++;
      assert.ok(
        endAt.get(from)! < startAt.get(p.id)!,
        `process ${p.id} started before process ${from} ended`,
      );
    }
  assert.ok(edges > 0);
}

for (const [name, vars, counts] of [
  ['parallel-sleep', [], { procs: 5, steps: { sleep1: 1 } }],
  ['md-parameter-study', [], { procs: 4, steps: { 'make-movie-0.6': 1 } }],
  ['montage143', ['--var', 'function=command'], { procs: 143, steps: { mDiffFit: 73, mJPEG: 1 } }],
  ['soykb52', [], { procs: 52, steps: { haplotype_caller: 20, alignment_to_reference: 1 } }],
] as const) {
  test(`published HyperFlow workflow ${name} imports unchanged and runs locally in DAG order`, async (t) => {
    const dir = tempDir(t);
    const fx = prepare(dir, name, name === 'soykb52' ? path.join(dir, 'ubuntu-data') : undefined);
    const r = await runCli(['run', 'workflow.json', ...vars, '--json'], {
      cwd: dir,
      env: fx.env,
      timeoutMs: 240_000,
    });
    assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 3000));
    const s = JSON.parse(r.stdout);
    assert.equal(s.counts.done, counts.procs);
    assert.equal(s.counts.total, counts.procs);
    assertDagOrder(fx);
    // every output of every process is there, in the working directory
    for (const p of fx.procs)
      for (const o of p.outs) assert.ok(existsSync(path.join(dir, o)), `${o} of process ${p.id}`);
    assert.ok(fx.outs.length > 0);
    for (const o of fx.outs) assert.ok(existsSync(path.join(dir, o)), `workflow output ${o}`);
    const st = JSON.parse((await runCli(['status', s.job, '--json'], { cwd: dir })).stdout);
    for (const [step, n] of Object.entries(counts.steps)) assert.equal(st.steps[step].done, n, step);
    if (name === 'soykb52') {
      // config.executor.stdout: the process's stdout is that file, an output like the others
      const bwa = fx.procs.find((p) => p.stdout)!;
      assert.equal(readFileSync(path.join(dir, bwa.stdout), 'utf8'), `stdout of process ${bwa.id}\n`);
      // absolute inputs are read where they are, never copied into the working directory
      assert.equal(existsSync(path.join(dir, '.corral-root')), false);
    }
  });
}

test('Soykb52 (absolute inputs, stdout) on the cluster transport: absolute inputs are uploaded once and staged at .corral-root/<path>', async (t) => {
  const dir = tempDir(t);
  const work = path.join(dir, 'work');
  mkdirSync(work);
  const fx = prepare(work, 'soykb52', path.join(dir, 'ubuntu-data'));
  const peer = await startPeer();
  t.after(() => peer.stop());
  const { queueUrl } = await peer.createQueues('csoy');
  await peer.createBucket('csoy-bucket');
  // in-process workers run the stand-ins: they see the test's PATH and map
  const saved = { ...process.env };
  Object.assign(process.env, fx.env, { STANDIN_STAGED: '1' });
  t.after(() => {
    for (const k of ['PATH', 'STANDIN_MAP', 'STANDIN_TRACE', 'STANDIN_STAGED']) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  });
  const ac = new AbortController();
  const workers = [0, 1].map((i) =>
    runClusterWorker(
      {
        queueUrl,
        bucket: 'csoy-bucket',
        region: 'us-east-1',
        endpointUrl: peer.endpoint,
        id: `w${i}`,
        cacheDir: path.join(dir, `w${i}`),
        idleExitMs: 60_000,
        spot: false,
        log: () => {},
      },
      ac.signal,
    ),
  );
  let r: Awaited<ReturnType<typeof runCli>>;
  try {
    r = await runCli(
      [
        'run',
        'workflow.json',
        '--cluster',
        'csoy',
        '--queue-url',
        queueUrl,
        '--bucket',
        'csoy-bucket',
        '--endpoint-url',
        peer.endpoint,
        '--json',
      ],
      { cwd: work, env: { ...PEER_ENV, CORRAL_CLUSTER_TICK_MS: '150' }, timeoutMs: 300_000 },
    );
  } finally {
    ac.abort();
    await Promise.all(workers);
  }
  assert.equal(r.code, 0, r.stderr + r.stdout.slice(0, 3000));
  assert.equal(JSON.parse(r.stdout).counts.done, 52);
  assertDagOrder(fx);
  // the command lines named the staged copies (the stand-in fails when one is missing)
  const bwaLine = readFileSync(fx.trace, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('start 0 '))!;
  assert.match(bwaLine, / \.corral-root\/\S*\/ubuntu-data\/Gmax_275_v2\.0\.fa /);
  // each absolute input is uploaded once, below the job's inputs at .corral-root/<its path>
  const listed = await peer.s3.send(new ListObjectsV2Command({ Bucket: 'csoy-bucket', Prefix: 'jobs/' }));
  const keys = (listed.Contents ?? []).map((c) => c.Key!);
  const absInputs = fx.inputs.filter((f) => path.isAbsolute(f));
  assert.equal(absInputs.length, 10);
  for (const f of absInputs)
    assert.equal(keys.filter((k) => k.endsWith(`/inputs/.corral-root${f}`)).length, 1, f);
  // the workflow's outputs (and the stdout file) come back to the working directory
  for (const o of fx.outs) assert.ok(existsSync(path.join(work, o)), o);
  const bwa = fx.procs.find((p) => p.stdout)!;
  assert.equal(readFileSync(path.join(work, bwa.stdout), 'utf8'), `stdout of process ${bwa.id}\n`);
});
