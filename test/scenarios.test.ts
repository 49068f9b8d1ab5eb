/**
 * One scenario list, run on both transports: on this machine (`runJob`: worker processes claiming
 * from the job's ledger) and on a cluster (`runClusterJob` against SQS + S3 on fauxqs, with
 * in-process `corral worker`s). Each scenario states what must hold on both: the status, the
 * counts, how failures spread, the outputs, and how many times each command ran (every command
 * appends a line to a file outside the job folder, so a task that runs again shows).
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { RunSummary } from '../src/engine/coordinator.js';
import { runClusterJob } from '../src/transport/cluster/cluster-run.js';
import { runJob } from '../src/transport/local.js';
import { runClusterWorker } from '../src/worker/cluster-main.js';
import { loadJob } from '../src/workflow/load-job.js';
import { type Peer, startPeer } from './cluster-peer.js';
import { tempDir, writeFiles } from './helpers.js';

interface Scenario {
  readonly name: string;
  /** Files of the job folder; `RUNS` in them is replaced by the path of the runs file. */
  readonly files: Record<string, string>;
  readonly status: RunSummary['status'];
  readonly counts: { done: number; dead: number; skipped: number };
  readonly failedPaths?: string[];
  /** Output files (relative to the job folder) and their content at the end. */
  readonly outputs?: Record<string, string>;
  /** Lines of the runs file at the end, sorted: which commands ran, and how often. */
  readonly runs: string[];
  /** Run the job a second time with an empty state folder: nothing runs again, the outcome is the same. */
  readonly again?: boolean;
}

const CHAIN = `name: chain
steps:
  - name: up
    map: { glob: "in/*.txt" }
    command: 'echo up {input.stem} >> RUNS; tr a-z A-Z < {input}'
    outputs: out/up/{input.stem}.txt
  - name: len
    map: { outputsOf: up }
    command: 'echo len {index} >> RUNS; wc -c < {input} | tr -d " "'
    outputs: out/len/{index}.txt
  - name: total
    reduce: len
    command: 'echo total >> RUNS; cat {inputs} | awk "{s+=\\$1} END {print s}"'
    outputs: out/total.txt
  - name: report
    needs: [total]
    command: 'echo report >> RUNS; echo "total $(cat out/total.txt)"'
    outputs: out/report.txt
`;

const INPUTS = { 'in/a.txt': 'alpha\n', 'in/b.txt': 'beta\n', 'in/c.txt': 'gamma delta\n' };

const CHAIN_RESULT = {
  status: 'succeeded' as const,
  counts: { done: 8, dead: 0, skipped: 0 },
  outputs: { 'out/up/b.txt': 'BETA\n', 'out/total.txt': '23\n', 'out/report.txt': 'total 23\n' },
  runs: ['len 0', 'len 1', 'len 2', 'report', 'total', 'up a', 'up b', 'up c'],
};

const SCENARIOS: Scenario[] = [
  {
    name: 'a needs chain: map, map over its outputs, reduce, a step that needs it',
    files: { ...INPUTS, 'job.yaml': CHAIN },
    ...CHAIN_RESULT,
  },
  {
    name: 'resume with an empty state folder: nothing committed runs again',
    files: { ...INPUTS, 'job.yaml': CHAIN },
    ...CHAIN_RESULT,
    again: true,
  },
  {
    name: 'a failure path: a dead task skips its own dependents and the reduce, with the reason',
    files: {
      'xs.txt': 'a\nbad\nc\n',
      'job.yaml': `name: failpath
retries: { maxAttempts: 1 }
steps:
  - name: parse
    map: { lines: xs.txt }
    command: 'echo parse {input} >> RUNS; [ {input} != bad ] && echo {input}'
    outputs: parsed/{index}
  - name: enrich
    map: { outputsOf: parse }
    command: 'echo enrich {index} >> RUNS; cat {input}'
    outputs: enriched/{index}
  - name: report
    reduce: enrich
    command: 'echo report >> RUNS; cat {inputs}'
    outputs: report.txt
`,
    },
    status: 'failed',
    counts: { done: 4, dead: 1, skipped: 2 },
    failedPaths: ['parse/1 (line 2 "bad") failed → enrich/1 skipped → step report skipped'],
    outputs: { 'enriched/0': 'a\n', 'enriched/2': 'c\n' },
    runs: ['enrich 0', 'enrich 2', 'parse a', 'parse bad', 'parse c'],
  },
  {
    name: 'continueOnFailure: the reduce runs on what its step committed',
    files: {
      'xs.txt': 'a\nbad\nc\n',
      'job.yaml': `name: tolerant
retries: { maxAttempts: 1 }
steps:
  - name: parse
    map: { lines: xs.txt }
    command: 'echo parse {input} >> RUNS; [ {input} != bad ] && echo {input}'
    outputs: parsed/{index}
    continueOnFailure: true
  - name: report
    reduce: parse
    command: 'echo report >> RUNS; cat {inputs} 2>/dev/null; true'
    outputs: report.txt
`,
    },
    status: 'failed',
    counts: { done: 3, dead: 1, skipped: 0 },
    outputs: { 'report.txt': 'a\nc\n' },
    runs: ['parse a', 'parse bad', 'parse c', 'report'],
  },
  {
    name: 'retries: a task that fails once succeeds on its second attempt',
    files: {
      'xs.txt': 'steady\nflaky\n',
      'job.yaml': `name: retry
retries: { maxAttempts: 3, backoff: { initial: 10ms } }
tasks:
  map: { lines: xs.txt }
  command: 'echo {input} >> RUNS; if [ {input} = flaky ] && [ $(grep -c flaky RUNS) -lt 2 ]; then exit 3; fi; echo {input}'
outputs: out/{index}.txt
`,
    },
    status: 'succeeded',
    counts: { done: 2, dead: 0, skipped: 0 },
    outputs: { 'out/0.txt': 'steady\n', 'out/1.txt': 'flaky\n' },
    runs: ['flaky', 'flaky', 'steady'],
  },
  {
    name: 'a map job whose task fails every attempt ends failed with its dead letter',
    files: {
      'xs.txt': 'a\nbad\nc\n',
      'job.yaml': `name: mapfail
retries: { maxAttempts: 2, backoff: { initial: 10ms } }
tasks:
  map: { lines: xs.txt }
  command: 'echo {input} >> RUNS; [ {input} != bad ] && echo {input}'
outputs: out/{index}.txt
`,
    },
    status: 'failed',
    counts: { done: 2, dead: 1, skipped: 0 },
    outputs: { 'out/0.txt': 'a\n', 'out/2.txt': 'c\n' },
    runs: ['a', 'bad', 'bad', 'c'],
  },
  {
    name: 'a map job resumed with an empty state folder: nothing committed runs again',
    files: {
      'xs.txt': 'a\nb\nc\n',
      'job.yaml': `name: mapagain
tasks:
  map: { lines: xs.txt }
  command: 'echo {input} >> RUNS; echo {input}{input}'
outputs: out/{index}.txt
`,
    },
    status: 'succeeded',
    counts: { done: 3, dead: 0, skipped: 0 },
    outputs: { 'out/0.txt': 'aa\n', 'out/1.txt': 'bb\n', 'out/2.txt': 'cc\n' },
    runs: ['a', 'b', 'c'],
    again: true,
  },
];

let peer: Peer;
before(async () => {
  peer = await startPeer();
});
after(async () => {
  await peer.stop();
});

/** The queues of each cluster made on the peer so far (a second run of a scenario uses its first's). */
const clusters = new Map<string, { queueUrl: string; dlqUrl: string }>();

type Transport = (
  dir: string,
  stateDir: string,
  name: string,
  job: ReturnType<typeof loadJob>,
) => Promise<RunSummary>;

const TRANSPORTS: Record<string, Transport> = {
  local: (_dir, stateDir, _name, job) => runJob(job, { stateDir, concurrency: 2, tickMs: 100 }),
  cluster: async (dir, stateDir, name, job) => {
    let queues = clusters.get(name);
    if (!queues) {
      queues = await peer.createQueues(name);
      await peer.createBucket(`${name}-bucket`);
      clusters.set(name, queues);
    }
    const bucket = `${name}-bucket`;
    const target = {
      name,
      queueUrl: queues.queueUrl,
      deadLetterQueueUrl: queues.dlqUrl,
      bucket,
      region: 'us-east-1',
    };
    const ac = new AbortController();
    const workers = [0, 1].map((i) =>
      runClusterWorker(
        {
          ...target,
          endpointUrl: peer.endpoint,
          id: `w${i}`,
          cacheDir: path.join(dir, '..', `cache-${path.basename(stateDir)}-${i}`),
          idleExitMs: 60_000,
          spot: false,
          log: () => {},
        },
        ac.signal,
      ),
    );
    try {
      return await runClusterJob(job, target, { stateDir, endpointUrl: peer.endpoint, tickMs: 150 });
    } finally {
      ac.abort();
      await Promise.all(workers);
    }
  },
};

let serial = 0;
for (const [transport, run] of Object.entries(TRANSPORTS)) {
  for (const sc of SCENARIOS) {
    test(`${transport}: ${sc.name}`, async (t) => {
      const root = tempDir(t);
      const dir = path.join(root, 'job');
      const runsFile = path.join(root, 'runs.txt');
      writeFiles(
        dir,
        Object.fromEntries(Object.entries(sc.files).map(([f, c]) => [f, c.replaceAll('RUNS', runsFile)])),
      );
      // every run of a job on the peer gets a cluster of its own
      const name = `sc${++serial}`;
      const check = (summary: RunSummary, when: string) => {
        assert.equal(summary.status, sc.status, `${when}: ${JSON.stringify(summary)}`);
        const { done, dead, skipped } = summary.counts;
        assert.deepEqual({ done, dead, skipped }, sc.counts, when);
        if (sc.failedPaths) assert.deepEqual(summary.failedPaths, sc.failedPaths, when);
        for (const [f, content] of Object.entries(sc.outputs ?? {}))
          assert.equal(readFileSync(path.join(dir, f), 'utf8'), content, `${when}: ${f}`);
        const runs = existsSync(runsFile) ? readFileSync(runsFile, 'utf8').trim().split('\n').sort() : [];
        assert.deepEqual(runs, sc.runs, `${when}: commands run`);
      };
      check(
        await run(dir, path.join(root, 'state1'), name, loadJob(path.join(dir, 'job.yaml'))),
        'first run',
      );
      if (sc.again)
        check(
          await run(dir, path.join(root, 'state2'), name, loadJob(path.join(dir, 'job.yaml'))),
          'with an empty state folder',
        );
    });
  }
}
