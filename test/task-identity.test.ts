import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, tempDir, writeFiles } from './helpers.js';

/** A workflow of a line map (one line fails), a glob map and a chunk map, run to its end. */
async function ranJob(t: { after: (fn: () => void) => void }): Promise<string> {
  const dir = tempDir(t);
  writeFiles(dir, {
    // a blank line: the line numbers are the file's, not the tasks' indexes
    'xs.txt': 'a\n\nbad\nc\n',
    'data/a.txt': 'one\n',
    'data/b.txt': 'two\n',
    'big.txt': `${'x'.repeat(99)}\n`.repeat(3),
    'job.yaml': `name: ident
retries: { maxAttempts: 2, backoff: { initial: 10ms } }
steps:
  - name: parse
    map: { lines: xs.txt }
    command: '[ {input} != bad ] || exit 3; echo {input}'
    outputs: parsed/{index}
  - name: files
    map: { glob: "data/*.txt" }
    command: 'wc -c < {input}'
    outputs: out/{input.stem}.n
  - name: cut
    map: { chunks: big.txt, chunkSize: 100 }
    command: 'tail -c +$(({chunk.start} + 1)) {input} | head -c {chunk.length} | wc -c'
    outputs: cut/{index}
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr);
  // the failure summary names the task by its input, line number included
  assert.match(r.stdout, /task parse\/1 \(line 3 "bad"\): exited with code 3 after 2 attempt\(s\)/);
  return dir;
}

test('every place a task is named shows its input: run summary, status, tasks (filters, --json), logs by input, report (issue 22, item 1)', async (t) => {
  const dir = await ranJob(t);
  const status = await runCli(['status', 'ident'], { cwd: dir });
  assert.match(status.stdout, /task parse\/1 \(line 3 "bad"\): exited with code 3/);
  const st = JSON.parse((await runCli(['status', 'ident', '--json'], { cwd: dir })).stdout);
  assert.equal(st.deadLetters[0].input, 'line 3 "bad"');

  const table = await runCli(['tasks', 'ident'], { cwd: dir });
  assert.equal(table.code, 0, table.stderr);
  const lines = table.stdout.trim().split('\n');
  assert.match(lines[0]!, /^TASK\s+STEP\s+STATE\s+TRIES\s+INPUT → OUTPUT$/);
  assert.equal(lines.length, 1 + 3 + 2 + 3);
  assert.match(table.stdout, /parse\/0\s+parse\s+done\s+1\s+line 1 "a" → parsed\/0/);
  assert.match(
    table.stdout,
    /parse\/1\s+parse\s+dead\s+2\s+line 3 "bad" → parsed\/1\s+\(exited with code 3\)/,
  );
  assert.match(table.stdout, /parse\/2\s+parse\s+done\s+1\s+line 4 "c" → parsed\/2/);
  assert.match(table.stdout, /files\/1\s+files\s+done\s+1\s+data\/b\.txt → out\/b\.n/);
  assert.match(table.stdout, /cut\/1\s+cut\s+done\s+1\s+big\.txt bytes 100-200 → cut\/1/);

  const dead = JSON.parse(
    (await runCli(['tasks', 'ident', '--state', 'dead', '--json'], { cwd: dir })).stdout,
  );
  assert.deepEqual(
    dead.map((d: { key: string; input: string; failures: number }) => [d.key, d.input, d.failures]),
    [['parse/1', 'line 3 "bad"', 2]],
  );
  const failed = JSON.parse(
    (await runCli(['tasks', 'ident', '--state', 'failed', '--json'], { cwd: dir })).stdout,
  );
  assert.deepEqual(
    failed.map((d: { key: string }) => d.key),
    ['parse/1'],
  );
  const files = JSON.parse(
    (await runCli(['tasks', 'ident', '--step', 'files', '--json'], { cwd: dir })).stdout,
  );
  assert.deepEqual(
    files.map((d: { key: string; state: string; input: string }) => [d.key, d.state, d.input]),
    [
      ['files/0', 'done', 'data/a.txt'],
      ['files/1', 'done', 'data/b.txt'],
    ],
  );
  const none = await runCli(['tasks', 'ident', '--state', 'running'], { cwd: dir });
  assert.equal(none.stdout, 'no tasks running\n');

  // corral logs takes what users see: the key, the label as printed, or the input alone
  const byKey = await runCli(['logs', 'ident', 'parse/1'], { cwd: dir });
  assert.match(byKey.stdout, /^--- \S+ task parse\/1 \(line 3 "bad"\) attempt 1\/2 on /);
  for (const said of ['parse/1 (line 3 "bad")', 'bad']) {
    const r = await runCli(['logs', 'ident', said], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, byKey.stdout, said);
  }
  const byFile = await runCli(['logs', 'ident', 'data/b.txt'], { cwd: dir });
  assert.equal(byFile.code, 0, byFile.stderr);
  assert.match(byFile.stdout, /^task files\/1 \(done, 1 attempt\(s\)\) wrote no log output/);
  const unknown = await runCli(['logs', 'ident', 'nothing-like-it'], { cwd: dir });
  assert.equal(unknown.code, 2);
  assert.match(
    unknown.stderr,
    /^corral: error: TASK: job ident has no task "nothing-like-it" \(fix: pass a task key or input as listed by corral tasks ident\)\n$/,
  );

  const report = await runCli(['report', 'ident', '-o', 'r.html'], { cwd: dir });
  assert.equal(report.code, 0, report.stderr);
  assert.match(readFileSync(path.join(dir, 'r.html'), 'utf8'), /task parse\/1 \(line 3 &#34;bad&#34;\)/);
});

test("corral joblog (and tasks --joblog) writes GNU parallel's --joblog: one TSV line per attempt (issue 22, item 1)", async (t) => {
  const dir = await ranJob(t);
  const r = await runCli(['joblog', 'ident'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  const [head, ...rows] = r.stdout.trimEnd().split('\n');
  assert.equal(head, 'Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand');
  // 3 + 1 retry of parse, 2 files, 3 chunks
  assert.equal(rows.length, 9, r.stdout);
  const cells = rows.map((l) => l.split('\t'));
  for (const c of cells) {
    assert.equal(c.length, 9, c.join('|'));
    assert.match(c[1]!, /^w\S+@\S+$/);
    assert.match(c[2]!, /^\d{10}\.\d{3}$/);
    assert.ok(Math.abs(Number(c[2]) * 1000 - Date.now()) < 10 * 60_000, c[2]);
    assert.match(c[3]!, /^\d+\.\d{3}$/);
  }
  // in the order they started
  const starts = cells.map((c) => Number(c[2]));
  assert.deepEqual(
    starts,
    [...starts].sort((a, b) => a - b),
  );
  const bad = cells.filter((c) => c[8] === '[ bad != bad ] || exit 3; echo bad');
  assert.equal(bad.length, 2, r.stdout);
  for (const c of bad) assert.deepEqual([c[6], c[7]], ['3', '0']);
  assert.equal(new Set(bad.map((c) => c[0])).size, 1);
  assert.equal(cells.filter((c) => c[6] === '0').length, 7);
  assert.ok(cells.some((c) => c[8] === `wc -c < ${path.join(dir, 'data/a.txt')}`));
  assert.ok(cells.some((c) => c[8]!.startsWith('tail -c +$((100 + 1)) ')));

  const viaTasks = await runCli(['tasks', 'ident', '--joblog', '--state', 'dead'], { cwd: dir });
  assert.equal(viaTasks.code, 0, viaTasks.stderr);
  assert.deepEqual(
    viaTasks.stdout.trimEnd().split('\n').slice(1),
    rows.filter((l) => l.endsWith('echo bad')),
  );
});
