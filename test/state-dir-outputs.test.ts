import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { runCli, tempDir, writeFiles } from './helpers.js';

test("a state dir that would hold a step's outputs is refused at load; nothing is created", async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/a.txt': 'a\n',
    'job.yaml': [
      'name: s',
      'steps:',
      '  - name: copy',
      '    map: { glob: "in/*.txt" }',
      '    command: "cat {input}"',
      '    outputs: "results/copies/{input.stem}.txt"',
      '',
    ].join('\n'),
  });
  const env = { ...process.env };
  delete env.CORRAL_STATE_DIR;
  for (const [args, extra, field] of [
    [['--state-dir', 'results'], {}, '--state-dir'],
    [['--state-dir', '.'], {}, '--state-dir'],
    [[], { CORRAL_STATE_DIR: 'results/copies' }, 'CORRAL_STATE_DIR'],
  ] as const) {
    const r = await runCli(['run', 'job.yaml', ...args], {
      cwd: dir,
      env: { ...env, ...extra },
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `corral: error: ${field}: .* would hold the outputs of steps\\[0\\] \\("results/copies/\\{input\\.stem\\}\\.txt"\\); .*\\(fix: pass a state dir outside the outputs' folder`,
      ),
    );
    assert.deepEqual(readdirSync(dir).sort(), ['in', 'job.yaml'], `${args.join(' ')}: the folder changed`);
  }
  // beside the outputs (the default .corral, or any folder outside them) it runs
  const ok = await runCli(['run', 'job.yaml', '--state-dir', 'state'], { cwd: dir, env, timeoutMs: 60_000 });
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.ok(existsSync(path.join(dir, 'results/copies/a.txt')));
});
