import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { runCli, tempDir, writeFiles } from './helpers.js';

/** Each bad job: its YAML, and the field and words its one-line error must name. */
const CASES: Array<[string, string, RegExp]> = [
  [
    'unknown field',
    'name: x\ntasks:\n  map: { glob: "*.yaml" }\n  comand: "true"\n',
    /job\.yaml:4:3: tasks\.comand: unknown field "comand" \(fix: /,
  ],
  [
    'missing name',
    'tasks:\n  map: { glob: "*.yaml" }\n  command: "true"\n',
    /name: is required \(fix: add name/,
  ],
  [
    'bad size',
    'name: x\ntasks:\n  map: { chunks: job.yaml, chunkSize: 12zz }\n  command: "true"\n',
    /tasks\.map\.chunkSize: "12zz" is not a size/,
  ],
  [
    'two sources',
    'name: x\ntasks:\n  map: { glob: "*.yaml", lines: job.yaml }\n  command: "true"\n',
    /tasks\.map: has glob and lines/,
  ],
  [
    'no body',
    'name: x\ntasks:\n  map: { glob: "*.yaml" }\n',
    /tasks: needs exactly one of command or module/,
  ],
  [
    'unknown placeholder in outputs (a command may hold any brace)',
    'name: x\ntasks:\n  map: { glob: "*.yaml" }\n  command: "cat {input}"\noutputs: out/{inptu}.txt\n',
    /outputs: unknown placeholder \{inptu\}/,
  ],
  [
    'quoted placeholder',
    'name: x\ntasks:\n  map: { glob: "*.yaml" }\n  command: "cat \'{input}\'"\n',
    /tasks\.command: '\{input\}' is quoted/,
  ],
  [
    'path traversal',
    'name: x\ntasks:\n  map: { glob: "*.yaml" }\n  command: "true"\noutputs: ../../etc/{index}\n',
    /outputs: "\.\.\/\.\.\/etc\/\{index\}" leaves the job folder/,
  ],
  [
    'same output for all',
    'name: x\ntasks:\n  map: { glob: "*.yaml" }\n  command: "true"\noutputs: out/result.txt\n',
    /outputs: .* gives every task the same output/,
  ],
  [
    'glob matches nothing',
    'name: x\ntasks:\n  map: { glob: "*.nope" }\n  command: "true"\n',
    /tasks\.map\.glob: "\*\.nope" matches no file/,
  ],
  [
    'missing lines file',
    'name: x\ntasks:\n  map: { lines: nope.txt }\n  command: "true"\n',
    /tasks\.map\.lines: input .*nope\.txt does not exist/,
  ],
  [
    'missing module',
    'name: x\ntasks:\n  map: { glob: "*.yaml" }\n  module: ./nope.ts\n',
    /tasks\.module: .*nope\.ts does not exist/,
  ],
  [
    'bad duration',
    'name: x\ntasks:\n  map: { glob: "*.yaml" }\n  command: "true"\ntimeout: soon\n',
    /timeout: "soon" is not a duration/,
  ],
  [
    'bad name',
    'name: "a b"\ntasks:\n  map: { glob: "*.yaml" }\n  command: "true"\n',
    /name: must be 1-63 letters/,
  ],
  ['invalid YAML', 'name: x\ntasks: [\n', /invalid YAML/],
  ['not a mapping', '- just\n- a list\n', /a job spec must be a mapping/],
  ['binary junk', '\u0000\u0001\u0002binary', /is binary, not YAML/],
];

test('bad job specs exit 2 with a one-line error naming the field and the fix, and create nothing', async (t) => {
  const dir = tempDir(t);
  for (const [what, yaml, re] of CASES) {
    writeFiles(dir, { 'job.yaml': yaml });
    const r = await runCli(['run', 'job.yaml'], { cwd: dir });
    assert.equal(r.code, 2, `${what}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, re, what);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('corral: error: '));
    assert.equal(errors.length, 1, `${what}: not one error line:\n${r.stderr}`);
    assert.equal(
      r.stderr.split('\n').filter((l) => l && !l.startsWith('corral: ')).length,
      0,
      `${what}: stray output:\n${r.stderr}`,
    );
    assert.deepEqual(readdirSync(dir), ['job.yaml'], `${what}: something was created`);
  }
});

test('bad CLI input exits 2: unknown verb, bad flag value, missing file, unwritable state dir, unknown job', async (t) => {
  const dir = tempDir(t);
  writeFiles(dir, { 'job.yaml': 'name: x\ntasks:\n  map: { glob: "*.yaml" }\n  command: "true"\n' });
  const cases: Array<[string[], RegExp]> = [
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['run', 'job.yaml', '--concurrency', '0'], /--concurrency must be a whole number of at least 1/],
    [['run', 'nope.yaml'], /FILE: cannot read nope\.yaml: ENOENT/],
    [
      ['run', 'job.yaml', '--state-dir', '/proc/corral-test'],
      /--state-dir: \/proc\/corral-test is not writable/,
    ],
    [['status', 'nojob'], /JOB: no job named "nojob"/],
    [['run', 'job.yaml', '--var', 'novalue'], /--var: "novalue" is not NAME=VALUE/],
  ];
  for (const [args, re] of cases) {
    const r = await runCli(args, { cwd: dir });
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, re);
  }
  assert.deepEqual(readdirSync(dir), ['job.yaml']);
});
