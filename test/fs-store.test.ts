import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { chunkRanges } from '../src/engine/expand.js';
import { outputKey, render, shellQuote } from '../src/engine/template.js';
import { FsStore, STAGING_DIR } from '../src/store/fs/fs-store.js';
import { tempDir } from './helpers.js';

test('fs store: the first commit wins, a later attempt never replaces it, staged files are never visible', async (t) => {
  const root = tempDir(t);
  const store = new FsStore(root);
  const a = await store.stage('out/x.txt', '1-w1');
  const b = await store.stage('out/x.txt', '2-w2');
  writeFileSync(a, 'first');
  writeFileSync(b, 'second');
  assert.equal(await store.exists('out/x.txt'), false);
  assert.equal(await store.commit('out/x.txt', '1-w1'), 'committed');
  assert.equal(await store.commit('out/x.txt', '2-w2'), 'duplicate');
  assert.equal(readFileSync(path.join(root, 'out/x.txt'), 'utf8'), 'first');
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
