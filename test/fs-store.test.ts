import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  accessSync,
  constants,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chunkRanges } from '../src/engine/expand.js';
import { outputKey, render, shellQuote } from '../src/engine/template.js';
import { FsStore, STAGING_DIR } from '../src/store/fs/fs-store.js';
import { ROOT, runCli, tempDir, writeFiles } from './helpers.js';

test('fs store: the first commit wins, a later attempt never replaces it, staged files are never visible', async (t) => {
  const root = tempDir(t);
  const store = new FsStore(root);
  const a = await store.stage('out/x.txt', '1-w1');
  const b = await store.stage('out/x.txt', '2-w2');
  writeFileSync(a, 'first');
  writeFileSync(b, 'second');
  assert.equal(await store.exists('out/x.txt'), false);
  assert.equal(await store.commit('out/x.txt', '1-w1'), 'committed');
  // a later attempt's different bytes are refused as a conflict, the same bytes as a duplicate
  assert.equal(await store.commit('out/x.txt', '2-w2'), 'conflict');
  assert.equal(readFileSync(path.join(root, 'out/x.txt'), 'utf8'), 'first');
  writeFileSync(await store.stage('out/x.txt', '3-w3'), 'first');
  assert.equal(await store.commit('out/x.txt', '3-w3'), 'duplicate');
  assert.equal(await store.commit('out/y.txt', '1-w1'), 'missing');
  const listed = [];
  for await (const k of store.list()) listed.push(k);
  assert.deepEqual(listed, ['out/x.txt']);
  store.cleanStaging();
  assert.equal(existsSync(path.join(root, STAGING_DIR)), false);
  assert.throws(() => store.pathOf('../escape'), /outside the store root/);
});

test('chunk ranges cover the file exactly; aligned ones start after a newline', async (t) => {
  const dir = tempDir(t);
  const f = path.join(dir, 'data.txt');
  const lines = Array.from({ length: 500 }, (_, i) => `line ${i} ${'x'.repeat(i % 37)}`);
  writeFileSync(f, `${lines.join('\n')}\n`);
  const data = readFileSync(f);
  for (const align of ['newline', 'none'] as const) {
    const ranges = await chunkRanges(f, 1000, align);
    assert.equal(ranges[0]![0], 0);
    assert.equal(ranges.at(-1)![1], data.length);
    for (let i = 1; i < ranges.length; i++) {
      assert.equal(ranges[i]![0], ranges[i - 1]![1], 'gap or overlap');
      if (align === 'newline')
        assert.equal(data[ranges[i]![0] - 1], 10, 'chunk does not start after a newline');
      else assert.equal(ranges[i]![0], i * 1000);
    }
  }
  assert.deepEqual(readdirSync(dir), ['data.txt']);
});

test('templates quote every substituted value for the shell; output keys are path-safe', () => {
  assert.equal(shellQuote('plain-name_1.txt'), 'plain-name_1.txt');
  assert.equal(shellQuote("it's $(rm -rf /); `x`"), `'it'\\''s $(rm -rf /); \`x\`'`);
  assert.equal(render('cat {input} > {output}', { input: 'a b', output: 'o' }, shellQuote), "cat 'a b' > o");
  assert.equal(render('wc {inputs}', { inputs: 'a\nb c' }, shellQuote), "wc a 'b c'");
  assert.equal(
    outputKey('out/{input.stem}-{index}.txt', { i: 3, p: 'in/../x y.csv' }, '/base'),
    'out/x_y-3.txt',
  );
  assert.equal(
    outputKey('out/{input.name}', { i: 0, l: '../../etc/passwd' }, '/base'),
    'out/___.._etc_passwd',
  );
});

/**
 * Runs `fn` with a fresh folder on another filesystem than the temp folder (where tempDir puts the
 * job): /dev/shm when it is a tmpfs of its own, else (no such folder here) this test runs again in
 * a child inside a user and mount namespace with a tmpfs mounted for it (CORRAL_TEST_SECOND_FS).
 */
async function onSecondFs(
  t: { name: string; after: (fn: () => void) => void },
  fn: (other: string) => Promise<void>,
): Promise<void> {
  const given = process.env.CORRAL_TEST_SECOND_FS;
  if (given) return fn(given);
  const tmpDev = statSync(os.tmpdir()).dev;
  let shm: string | undefined;
  try {
    accessSync('/dev/shm', constants.W_OK);
    if (statSync('/dev/shm').dev !== tmpDev) shm = '/dev/shm';
  } catch {
    // no /dev/shm here
  }
  if (shm) {
    const other = mkdtempSync(path.join(shm, 'corral-test-'));
    t.after(() => rmSync(other, { recursive: true, force: true }));
    return fn(other);
  }
  const mnt = path.join(tempDir(t), 'fs2');
  const env: NodeJS.ProcessEnv = { ...process.env, CORRAL_TEST_SECOND_FS: mnt };
  delete env.NODE_TEST_CONTEXT; // the child reports to its stdout, not to this runner
  const r = spawnSync(
    'unshare',
    [
      '-rm',
      'sh',
      '-c',
      'mkdir -p "$0" && mount -t tmpfs tmpfs "$0" && exec "$@"',
      mnt,
      process.execPath,
      '--import',
      'tsx',
      '--test',
      '--test-reporter=tap',
      `--test-name-pattern=^${t.name.replace(/[^\w ]/g, '.')}$`,
      fileURLToPath(import.meta.url),
    ],
    { cwd: ROOT, env, encoding: 'utf8', timeout: 120_000 },
  );
  assert.equal(r.status, 0, `the test in a namespace with a tmpfs failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /# pass 1\b/);
}

test('fs store: a commit into a folder on another filesystem is atomic and first-wins too', async (t) => {
  await onSecondFs(t, async (other) => {
    const root = tempDir(t);
    assert.notEqual(statSync(other).dev, statSync(root).dev, 'not another filesystem');
    symlinkSync(other, path.join(root, 'out'));
    const store = new FsStore(root, { scope: 'j' });
    const a = await store.stage('out/sub/x.txt', '1-w1');
    const b = await store.stage('out/sub/x.txt', '2-w2');
    writeFileSync(a, 'first');
    writeFileSync(b, 'second');
    assert.equal(await store.commit('out/sub/x.txt', '1-w1'), 'committed');
    assert.equal(await store.commit('out/sub/x.txt', '2-w2'), 'conflict');
    assert.equal(readFileSync(path.join(other, 'sub/x.txt'), 'utf8'), 'first');
    assert.equal(await store.commit('out/sub/y.txt', '3-w1'), 'missing');
    // a copy of a killed commit (a hidden name beside the output) is never taken for an output
    writeFileSync(path.join(other, 'sub', `${STAGING_DIR}.0123.4-w3`), 'partial');
    const listed = [];
    for await (const k of store.list()) listed.push(k);
    assert.deepEqual(listed, ['out/sub/x.txt']);
    assert.equal(await store.exists('out/sub/x.txt'), true);
    store.cleanStaging();
    assert.equal(existsSync(path.join(root, STAGING_DIR)), false);
    assert.deepEqual(readdirSync(path.join(other, 'sub')).sort(), [`${STAGING_DIR}.0123.4-w3`, 'x.txt']);
  });
});

test('run: outputs in a symlinked folder on another filesystem are committed (no EXDEV) and resume as done', async (t) => {
  await onSecondFs(t, async (other) => {
    const dir = tempDir(t);
    symlinkSync(other, path.join(dir, 'out'));
    writeFiles(dir, {
      'in/a.txt': 'alpha\n',
      'in/b.txt': 'beta\n',
      'in/c.txt': 'gamma\n',
      'job.yaml': [
        'name: xdev',
        'concurrency: 2',
        'tasks:',
        '  map: { glob: "in/*.txt" }',
        '  command: "tr a-z A-Z < {input}"',
        'outputs: "out/{input.stem}.txt"',
        '',
      ].join('\n'),
    });
    const r = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(readdirSync(other).sort(), ['a.txt', 'b.txt', 'c.txt']);
    assert.equal(readFileSync(path.join(other, 'b.txt'), 'utf8'), 'BETA\n');
    assert.equal(existsSync(path.join(dir, STAGING_DIR)), false);
    const again = await runCli(['run', 'job.yaml', '--json'], { cwd: dir, timeoutMs: 60_000 });
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.deepEqual(readdirSync(other).sort(), ['a.txt', 'b.txt', 'c.txt']);
  });
});

test('an output path that another writer fills while the task runs fails the task, naming the path; it never counts as done', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, {
    'in/a.txt': 'a\n',
    'in/b.txt': 'b\n',
    // a.txt's output is written from outside (as a second task whose path differs only by case
    // would on a case-insensitive file system) while the task runs, with other bytes; b.txt's
    // with the same bytes as the task's result, which is harmless
    'job.yaml': `name: clash
tasks:
  map: { glob: 'in/*.txt' }
  command: 'mkdir -p out; if [ {input.name} = a.txt ]; then echo outside > out/{input.name}; else cat {input} > out/{input.name}; fi; cat {input}'
outputs: out/{input.name}
`,
  });
  const r = await runCli(['run', 'job.yaml'], { cwd: dir });
  assert.equal(r.code, 1, r.stderr + r.stdout);
  assert.match(r.stdout, /job clash failed: 1\/2 tasks done, 1 failed/);
  assert.match(
    r.stdout,
    /task 0 \(in\/a\.txt\): its output out\/a\.txt was written by something else while the task ran .* after 1 attempt\(s\)/,
  );
  assert.equal(readFileSync(path.join(dir, 'out/a.txt'), 'utf8'), 'outside\n', 'the file there was replaced');
  assert.equal(readFileSync(path.join(dir, 'out/b.txt'), 'utf8'), 'b\n');
});
