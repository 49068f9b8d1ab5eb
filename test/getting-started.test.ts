/**
 * Issue 22, item 8: getting started as README tells it. The library quick start runs as written
 * on Node 20 (a plain .mjs, with corral installed in node_modules), its module task too; what
 * `corral init` prints uses the `npx corral` form; README's snippets are the example files;
 * the examples' outputs are git-ignored.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { ROOT, runCli, tempDir, writeFiles } from './helpers.js';

/** A project folder where `corral` is installed as npm would (node_modules/corral → this package). */
function project(t: { after: (fn: () => void) => void }): string {
  const dir = tempDir(t);
  mkdirSync(path.join(dir, 'node_modules'));
  symlinkSync(ROOT, path.join(dir, 'node_modules/corral'), 'dir');
  return dir;
}

test('the library quick start runs as written on Node 20: node quickstart.mjs', async (t) => {
  const dir = project(t);
  cpSync(path.join(ROOT, 'examples/library/quickstart.mjs'), path.join(dir, 'quickstart.mjs'));
  writeFiles(dir, { 'in/a.txt': 'alpha\n', 'in/b.txt': 'bravo\n', 'in/c.txt': 'charlie\n' });
  const r = spawnSync(process.execPath, ['quickstart.mjs'], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /^succeeded \{[^}]*done: 3,[^}]*\}\n$/);
  assert.equal(readFileSync(path.join(dir, 'out/b.txt'), 'utf8'), 'BRAVO\n');
});

test("the module task example runs: its return value is the output, read with Node's own stream consumers", async (t) => {
  const dir = project(t);
  cpSync(path.join(ROOT, 'examples/library/bytes.ts'), path.join(dir, 'bytes.ts'));
  writeFiles(dir, {
    'in/a.txt': 'alpha\n',
    'in/b.txt': 'bravo!\n',
    'job.yaml': `name: bytes
tasks:
  map: { glob: "in/*.txt" }
  module: ./bytes.ts
  stdin: input
outputs: out/{input.stem}.json
`,
  });
  const r = await runCli(['run', 'job.yaml', '--quiet'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr + r.stdout);
  assert.deepEqual(JSON.parse(readFileSync(path.join(dir, 'out/b.json'), 'utf8')), { index: 1, bytes: 7 });
});

test('corral init prints the npx corral form, as README does', async (t) => {
  const dir = tempDir(t);
  const r = await runCli(['init', 'proj'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /^next: npx corral run proj\/job\.yaml {2}· {2}npx corral plan proj\/cluster\.yaml$/m,
  );
  const job = readFileSync(path.join(dir, 'proj/job.yaml'), 'utf8');
  assert.match(job, /Run: npx corral run job\.yaml/);
  // no bare `corral VERB` left for a user to type
  for (const text of [r.stdout, job, readFileSync(path.join(dir, 'proj/cluster.yaml'), 'utf8')])
    assert.doesNotMatch(text, /(^|[^x] )corral (run|plan|up|init)\b/m, text);
});

test("the examples' outputs and state are git-ignored", () => {
  const ignored = [
    'examples/checksums/out/chunk-0.json',
    'examples/wordcount/out/top.txt',
    'examples/library/out/a.txt',
    'examples/library/in/a.txt',
    'examples/library/.corral/jobs/upper/state.db',
    'examples/hyperflow/.corral/jobs/x/state.db',
    'examples/wordcount/report.html',
    '.corral/jobs/checksums/state.db',
  ];
  const out = execFileSync('git', ['check-ignore', '--no-index', ...ignored], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  assert.deepEqual(out.trim().split('\n'), ignored);
  // and what the examples are made of is not
  const kept = spawnSync(
    'git',
    ['check-ignore', '--no-index', 'examples/library/quickstart.mjs', 'examples/wordcount/job.yaml'],
    { cwd: ROOT, encoding: 'utf8' },
  );
  assert.equal(kept.stdout, '');
});
/** README's fenced blocks of a language, with the heading they sit under. */
function readmeBlocks(lang: RegExp): Array<{ heading: string; body: string }> {
  const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const out: Array<{ heading: string; body: string }> = [];
  let heading = '';
  const lines = readme.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    if (/^#+ /.test(l)) heading = l.replace(/^#+ /, '');
    const m = /^```(\w*)$/.exec(l);
    if (!m || m[1] === '') continue;
    const end = lines.indexOf('```', i + 1);
    if (lang.test(m[1]!)) out.push({ heading, body: lines.slice(i + 1, end).join('\n') });
    i = end;
  }
  return out;
}

test("README's wordcount snippet is examples/wordcount/job.yaml", () => {
  const block = readmeBlocks(/^ya?ml$/).find((b) => /^name: wordcount$/m.test(b.body));
  assert.ok(block, 'README has no wordcount job');
  assert.deepEqual(
    parse(block.body),
    parse(readFileSync(path.join(ROOT, 'examples/wordcount/job.yaml'), 'utf8')),
  );
});

test("README's library quick start is examples/library (the .mjs and the module task)", () => {
  const blocks = readmeBlocks(/^(js|mjs|javascript|ts|typescript)$/).filter((b) =>
    /library/i.test(b.heading),
  );
  const norm = (s: string) => s.trim().replace(/\s+$/gm, '');
  const file = (f: string) => norm(readFileSync(path.join(ROOT, 'examples/library', f), 'utf8'));
  const bodies = blocks.map((b) => norm(b.body));
  assert.ok(
    bodies.includes(file('quickstart.mjs')),
    `README's library quick start is not examples/library/quickstart.mjs:\n${bodies.join('\n---\n')}`,
  );
  assert.ok(
    bodies.includes(file('bytes.ts')),
    `README's module task is not examples/library/bytes.ts:\n${bodies.join('\n---\n')}`,
  );
  assert.ok(!bodies.some((b) => /\breadAll\(/.test(b)), 'README uses readAll, which corral does not export');
});
