import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { escapeName } from '../src/engine/file-names.js';
import { runCli, tempDir, writeFiles } from './helpers.js';

/** A path below `dir` from raw bytes (names that are not UTF-8 cannot be written as strings). */
function rawPath(dir: string, ...parts: Buffer[]): Buffer {
  return Buffer.concat([
    Buffer.from(`${dir}/`),
    ...parts.flatMap((p, i) => (i ? [Buffer.from('/'), p] : [p])),
  ]);
}
const latin1 = (s: string) => Buffer.from(s, 'latin1');

/** Every name below `dir` (as bytes, escaped), to see that a refused run changed nothing. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: Buffer, rel: string) => {
    for (const e of readdirSync(d, { encoding: 'buffer', withFileTypes: true })) {
      const r = `${rel}/${escapeName(e.name)}`;
      out.push(r);
      if (e.isDirectory()) walk(Buffer.concat([d, Buffer.from('/'), e.name]), r);
    }
  };
  walk(Buffer.from(dir), '');
  return out.sort();
}

function job(name: string, map: string, outputs = `out/{index}.txt`): string {
  return `name: ${name}\ntasks:\n  map: ${map}\n  command: "cat {input}"\noutputs: "${outputs}"\n`;
}

test('a glob that reaches a file or folder whose name is not UTF-8 is refused at plan, naming it; nothing is created', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, { 'in/ok.txt': 'ok\n', 'in/other.csv': 'x\n' });
  writeFileSync(rawPath(dir, Buffer.from('in'), latin1('café.txt')), 'latin-1 name\n');
  mkdirSync(rawPath(dir, latin1('dé')));
  writeFileSync(rawPath(dir, latin1('dé'), Buffer.from('x.txt')), 'in a latin-1 folder\n');
  writeFileSync(rawPath(dir, latin1('lé.lst')), 'in/ok.txt\n');
  const cases: Array<[string, string, RegExp]> = [
    [
      'glob',
      job('g', '{ glob: "in/*.txt" }'),
      /tasks\.map\.glob: "in\/\*\.txt" reaches in\/caf\\xe9\.txt, whose name is not UTF-8/,
    ],
    // a folder so named was left out without a word: its files never ran
    [
      'folder',
      job('f', '{ glob: "*/x.txt" }'),
      /tasks\.map\.glob: "\*\/x\.txt" reaches d\\xe9, whose name is not UTF-8/,
    ],
    [
      'chunks',
      job('c', '{ chunks: "in/*.txt" }', 'out/{index}.bin'),
      /tasks\.map\.chunks: .* reaches in\/caf\\xe9\.txt/,
    ],
    ['lines', job('l', '{ lines: "l*.lst" }'), /tasks\.map\.lines: "l\*\.lst" reaches l\\xe9\.lst/],
  ];
  const before = tree(dir);
  for (const [what, spec, message] of cases) {
    writeFileSync(path.join(dir, 'job.yaml'), spec);
    const r = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 60_000 });
    assert.equal(r.code, 2, `${what}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, message, what);
    assert.match(
      r.stderr,
      /\(fix: rename it to UTF-8, e\.g\. mv \$'.*' NEW-NAME, or narrow the glob\)/,
      what,
    );
    assert.equal(r.stderr.split('\n').filter((l) => l.startsWith('corral: error: ')).length, 1, what);
    assert.doesNotMatch(r.stderr, /\n\s+at |internal error/, what);
    assert.deepEqual(tree(dir), [...before, '/job.yaml'].sort(), `${what}: the folder changed`);
  }
  // a glob that does not reach those names runs; so does a name that holds a real U+FFFD
  writeFiles(dir, { 'in/real\uFFFD.csv': 'replacement character\n' });
  writeFileSync(path.join(dir, 'job.yaml'), job('ok', '{ glob: "in/*.csv" }', 'out/{input.stem}.txt'));
  const ok = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.deepEqual(readdirSync(path.join(dir, 'out')).sort(), ['other.txt', 'real_.txt']);
});

test('a lines file with a line that is not UTF-8 is refused at plan with its line number; nothing is created', async (t) => {
  const dir = tempDir(t);
  const lines = Array.from({ length: 3000 }, (_, i) => Buffer.from(`line ${i + 1}\n`));
  lines[2046] = latin1('café 2047\n');
  writeFileSync(path.join(dir, 'names.txt'), Buffer.concat(lines));
  writeFileSync(
    path.join(dir, 'job.yaml'),
    job('l', '{ lines: names.txt }').replace('cat {input}', 'echo {input}'),
  );
  const before = tree(dir);
  const r = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(r.code, 2, r.stdout + r.stderr);
  assert.match(
    r.stderr,
    /corral: error: tasks\.map\.lines: line 2047 of names\.txt is not UTF-8 text \("caf\\xe9 2047"\) \(fix: convert the file to UTF-8/,
  );
  assert.deepEqual(tree(dir), before, 'the folder changed');
  // UTF-8 lines, a real U+FFFD among them, run as they are
  writeFileSync(path.join(dir, 'names.txt'), 'café\nreal \uFFFD\n');
  const ok = await runCli(['run', 'job.yaml'], { cwd: dir, timeoutMs: 60_000 });
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.equal(readFileSync(path.join(dir, 'out/1.txt'), 'utf8'), 'real \uFFFD\n');
});

test("escapeName keeps UTF-8 and escapes other bytes as bash $'…' reads them", () => {
  assert.equal(escapeName(Buffer.from('café-ok.txt')), 'café-ok.txt');
  assert.equal(escapeName(latin1('café.txt')), 'caf\\xe9.txt');
  assert.equal(
    escapeName(Buffer.from([0x61, 0xff, 0x0a, 0x27, 0x5c, 0xe2, 0x82])),
    "a\\xff\\x0a\\'\\\\\\xe2\\x82",
  );
});
