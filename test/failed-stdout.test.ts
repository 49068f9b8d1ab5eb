import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, tempDir, writeFiles } from './helpers.js';

test("a failed attempt's stdout, when stdout is the output, is kept in the task's log: its last 64 KiB (issue 22, item 2)", async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'ids.txt': 'small\nbig\n',
    // small prints two lines and fails; big prints 200,000 numbered lines (> 64 KiB), then fails
    'job.yaml': `name: keepout
retries: { maxAttempts: 2, backoff: { initial: 10ms } }
tasks:
  map: { lines: ids.txt }
  command: 'if [ {input} = small ]; then echo "partial {input}"; echo "row 2"; echo "stderr {input}" >&2; exit 4; fi; seq 1 200000; exit 5'
outputs: out/{input.name}.txt
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr);
  // nothing was committed as an output
  assert.ok(!existsSync(path.join(dir, 'out/small.txt')));
  assert.ok(!existsSync(path.join(dir, 'out/big.txt')));

  const small = (await runCli(['logs', 'keepout', '0'], { cwd: dir })).stdout;
  const attempts = small.split(/^--- /m).filter(Boolean);
  assert.equal(attempts.length, 2, small);
  for (const a of attempts) {
    assert.match(
      a,
      /\nstderr small\ncorral: stdout of the failed attempt:\npartial small\nrow 2\ncorral: attempt failed: exited with code 4\n$/,
    );
  }

  const big = (await runCli(['logs', 'keepout', '1'], { cwd: dir })).stdout;
  const bigAttempts = big.split(/^--- /m).filter(Boolean);
  assert.equal(bigAttempts.length, 2);
  const total = Array.from({ length: 200000 }, (_, i) => `${i + 1}\n`).join('').length;
  for (const a of bigAttempts) {
    const m =
      /corral: stdout of the failed attempt \(its last 65536 of (\d+) bytes\):\n([\s\S]*)corral: attempt failed: exited with code 5\n$/.exec(
        a,
      );
    assert.ok(m, a.slice(0, 300));
    assert.equal(Number(m[1]), total);
    const kept = m[2]!;
    // the end of what it printed: 64 KiB (the first line kept may be cut), ending with the last line
    assert.equal(Buffer.byteLength(kept), 65536);
    assert.ok(kept.endsWith('199999\n200000\n'));
    assert.ok(!kept.includes('\n1\n'));
  }
});
