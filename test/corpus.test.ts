import assert from 'node:assert/strict';
import { copyFileSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { runCli, tempDir } from './helpers.js';

/**
 * The bad-input corpus: every file in test/corpus/ (plus generated huge files) is one case, run
 * through the built CLI in a fresh folder; test/corpus/expected.json maps it to the regex its
 * error must match. Job YAML (`job-*`) and HyperFlow JSON (`hf-*`) go to `corral run`, cluster
 * YAML (`cluster-*`) to `corral plan`, and `*.args` hold CLI arguments, one per line (run next to
 * test/corpus/support/job.yaml; `args-corrupt-state-*` with a state file of job x that is not a
 * database, `args-newer-state-*` with one of a newer format). Every case exits 2 with exactly one `corral: error:` line,
 * changes nothing in its folder (no state dir, no outputs), and never loads the CDK (test/fixtures/cdk-probe.cjs).
 */
const DIR = path.join(import.meta.dirname, 'corpus');
const SUPPORT = path.join(DIR, 'support');
const expected = JSON.parse(readFileSync(path.join(DIR, 'expected.json'), 'utf8')) as Record<string, string>;
const files = readdirSync(DIR).filter((f) => f !== 'expected.json' && f !== 'support');

/** A file over the 4 MiB spec limit, made at run time rather than committed. */
function huge(kind: 'job' | 'cluster'): string {
  const head =
    kind === 'job'
      ? 'name: x\ntasks:\n  map: { glob: "*.yaml" }\n  command: "true"\n  env:\n'
      : 'name: demo\nregion: us-east-1\nnetwork:\n  azs: [us-east-1a]\ntags:\n';
  const line = (i: number) => `    k${i}: "${'v'.repeat(100)}"\n`;
  return head + Array.from({ length: 45_000 }, (_, i) => line(i)).join('');
}

/** Every path below `dir` with its size and mtime: what "unchanged" compares (names as bytes: some are not UTF-8). */
function snapshot(dir: string, rel = Buffer.alloc(0)): string[] {
  const out: string[] = [];
  const at = (r: Buffer) => Buffer.concat([Buffer.from(`${dir}/`), r]);
  for (const name of readdirSync(at(rel), { encoding: 'buffer' })) {
    const r = rel.length ? Buffer.concat([rel, Buffer.from('/'), name]) : name;
    const s = lstatSync(at(r));
    out.push(`${r.toString('latin1')} ${s.isDirectory() ? 'dir' : s.size} ${s.mtimeMs}`);
    if (s.isDirectory()) out.push(...snapshot(dir, r));
  }
  return out.sort();
}

/** Cases with files a repository should not hold (names that are not UTF-8), made at run time. */
const made: Record<string, (dir: string) => void> = {
  'job-glob-name-not-utf8.yaml': (dir) => {
    writeFileSync(
      path.join(dir, 'job-glob-name-not-utf8.yaml'),
      'name: x\ntasks:\n  map: { glob: "*.csv" }\n  command: "cat {input}"\n',
    );
    writeFileSync(Buffer.from(`${dir}/caf\xe9.csv`, 'latin1'), 'a,b\n');
  },
  'job-glob-folder-not-utf8.yaml': (dir) => {
    writeFileSync(
      path.join(dir, 'job-glob-folder-not-utf8.yaml'),
      'name: x\ntasks:\n  map: { chunks: "*/*.csv" }\n  command: "wc -l"\n',
    );
    mkdirSync(Buffer.from(`${dir}/d\xe9`, 'latin1'));
    writeFileSync(Buffer.from(`${dir}/d\xe9/a.csv`, 'latin1'), 'a,b\n');
  },
  'job-lines-not-utf8.yaml': (dir) => {
    writeFileSync(
      path.join(dir, 'job-lines-not-utf8.yaml'),
      'name: x\ntasks:\n  map: { lines: names.txt }\n  command: "echo {input}"\n',
    );
    writeFileSync(path.join(dir, 'names.txt'), Buffer.from('ok\nna\xefve\n', 'latin1'));
  },
};

interface Case {
  name: string;
  setup: (dir: string) => void;
  args: string[];
}

function caseOf(name: string): Case {
  const file = name.replace(/^generated:/, '');
  const setup = (dir: string) => {
    if (made[file]) made[file](dir);
    else if (name.startsWith('generated:'))
      writeFileSync(path.join(dir, file), huge(file.startsWith('job') ? 'job' : 'cluster'));
    else copyFileSync(path.join(DIR, file), path.join(dir, file));
    if (file.endsWith('.args') || file.startsWith('hf-')) {
      for (const s of readdirSync(SUPPORT)) copyFileSync(path.join(SUPPORT, s), path.join(dir, s));
    }
    if (file.startsWith('args-corrupt-state-')) {
      // the support job `x` has a state file that is not a database
      mkdirSync(path.join(dir, '.corral/jobs/x'), { recursive: true });
      writeFileSync(path.join(dir, '.corral/jobs/x/state.db'), 'garbage '.repeat(2000));
    }
    if (file.startsWith('args-newer-state-')) {
      // the support job `x` has a state file of a format newer than this corral's
      mkdirSync(path.join(dir, '.corral/jobs/x'), { recursive: true });
      const db = new Database(path.join(dir, '.corral/jobs/x/state.db'));
      db.pragma('user_version = 99');
      db.close();
    }
  };
  if (file.endsWith('.args')) {
    const args = readFileSync(path.join(DIR, file), 'utf8').split('\n').filter(Boolean);
    return { name, setup, args };
  }
  return { name, setup, args: [file.startsWith('cluster-') ? 'plan' : 'run', file] };
}

test('the corpus has at least 40 cases, each with its expected message', () => {
  const names = [...files, ...Object.keys(expected).filter((k) => k.startsWith('generated:'))];
  assert.ok(names.length >= 40, `${names.length} cases`);
  assert.deepEqual(
    names.filter((n) => !(n in expected)),
    [],
    'cases without an expected message',
  );
  assert.deepEqual(
    Object.keys(expected).filter((k) => !k.startsWith('generated:') && !files.includes(k)),
    [],
    'expected messages without a case',
  );
});

test('every bad input exits 2 with one error line naming the field, and creates nothing', async (t) => {
  const env = { ...process.env };
  delete env.CORRAL_STATE_DIR;
  delete env.CORRAL_LOG_FORMAT;
  // and says so before it loads the CDK (a second of start-up a refused input should not wait for)
  env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --require ${path.join(import.meta.dirname, 'fixtures/cdk-probe.cjs')}`;
  const cases = Object.keys(expected).map(caseOf);
  const failures: string[] = [];
  const runOne = async (c: Case) => {
    const dir = tempDir(t, 'corral-corpus-');
    c.setup(dir);
    const before = snapshot(dir);
    const r = await runCli(c.args, { cwd: dir, env, timeoutMs: 60_000 });
    const problems: string[] = [];
    if (r.code !== 2) problems.push(`exit ${r.code} (signal ${r.signal})`);
    if (!new RegExp(expected[c.name]!).test(r.stderr))
      problems.push(`message does not match /${expected[c.name]}/`);
    const errorLines = r.stderr.split('\n').filter((l) => l.startsWith('corral: error: '));
    if (errorLines.length !== 1) problems.push(`${errorLines.length} error lines`);
    if (/\n\s+at /.test(r.stderr) || r.stderr.includes('internal error')) problems.push('a stack trace');
    if (r.stderr.includes('cdk-probe: aws-cdk-lib was loaded')) problems.push('the CDK was loaded first');
    const after = snapshot(dir);
    if (after.join('\n') !== before.join('\n')) {
      problems.push(`the folder changed: ${after.filter((x) => !before.includes(x)).join(', ')}`);
    }
    if (problems.length)
      failures.push(`${c.name}: ${problems.join('; ')}\n  stderr: ${r.stderr.slice(0, 500)}`);
  };
  // four at a time: each case is one short CLI process
  const queue = [...cases];
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let c = queue.shift(); c; c = queue.shift()) await runOne(c);
    }),
  );
  assert.deepEqual(failures, []);
});
