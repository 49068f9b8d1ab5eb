import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT, runCli, tempDir } from './helpers.js';

const SPEC = path.join(ROOT, 'examples/clusters/private-ec2.yaml');
const STACK = 'corral-private-ec2';

interface Template {
  AWSTemplateFormatVersion?: string;
  Resources: Record<string, { Type: string; Properties?: Record<string, unknown> }>;
}

test('corral plan --out DIR: the template as cdk synth writes it, its assets, plan.json and plan.txt', async (t) => {
  const cwd = tempDir(t);

  // --json: stdout stays the one JSON object, plan.json is that same JSON, where they went is on stderr
  const json = await runCli(['plan', SPEC, '--json', '--out', 'review/new'], { cwd });
  assert.equal(json.code, 0, json.stderr);
  const out = path.join(cwd, 'review/new');
  assert.deepEqual(readFileSync(path.join(out, 'plan.json'), 'utf8'), json.stdout);
  const report = JSON.parse(json.stdout) as {
    stackName: string;
    ok: boolean;
    workerArtifact: { sha256: string };
  };
  assert.equal(report.stackName, STACK);
  assert.ok(report.ok);
  assert.match(
    json.stderr,
    new RegExp(`wrote review/new/${STACK}\\.template\\.json, .*plan\\.json, .*plan\\.txt`),
  );

  const template = JSON.parse(readFileSync(path.join(out, `${STACK}.template.json`), 'utf8')) as Template;
  assert.ok(template.AWSTemplateFormatVersion !== undefined || template.Resources !== undefined);
  const hosts = Object.values(template.Resources).filter(
    (r) => r.Type === 'AWS::EC2::Instance' || r.Type === 'AWS::EC2::LaunchTemplate',
  );
  const userData = hosts
    .map(
      (r) =>
        r.Properties?.UserData ??
        (r.Properties?.LaunchTemplateData as Record<string, unknown> | undefined)?.UserData,
    )
    .filter((u) => u !== undefined);
  assert.ok(userData.length >= 3, `user data of the 3 instances: ${userData.length}`);

  // the cloud assembly is whole: its manifest, and every file asset the stack's asset manifest names
  assert.ok(existsSync(path.join(out, 'manifest.json')));
  const assets = JSON.parse(readFileSync(path.join(out, `${STACK}.assets.json`), 'utf8')) as {
    files?: Record<string, { source: { path: string } }>;
  };
  for (const [id, a] of Object.entries(assets.files ?? {}))
    assert.ok(existsSync(path.join(out, a.source.path)), `asset ${id}: ${a.source.path}`);

  // the worker artifact: a file asset whose bytes have the sha256 the plan reports and the
  // coordinator's user data pins (the other instances install no corral)
  const w = report.workerArtifact;
  const tgz = Object.values(assets.files ?? {})
    .map((a) => path.join(out, a.source.path))
    .find((f) => f.endsWith('.tgz'));
  assert.ok(tgz, 'the worker artifact is an asset of the stack');
  assert.equal(createHash('sha256').update(readFileSync(tgz)).digest('hex'), w.sha256);
  assert.equal(userData.filter((u) => JSON.stringify(u).includes(w.sha256)).length, 1);
  assert.ok(!JSON.stringify(template).includes('npm install'), 'no npm install on any host');

  // the text plan: on stdout as without --out, the same text in plan.txt, then where the files went
  const text = await runCli(['plan', SPEC, '--out', 'review/new'], { cwd });
  assert.equal(text.code, 0, text.stderr);
  const planTxt = readFileSync(path.join(out, 'plan.txt'), 'utf8');
  assert.match(planTxt, /^corral plan: cluster private-ec2 → stack corral-private-ec2/);
  assert.match(planTxt, /Plan OK\.\n$/);
  assert.ok(text.stdout.startsWith(planTxt), 'stdout starts with plan.txt');
  assert.match(
    text.stdout.slice(planTxt.length),
    /^\ncorral plan: wrote review\/new\/corral-private-ec2\.template\.json/,
  );
  assert.equal(text.stderr, '');

  // --out naming a regular file: exit 2, one line naming --out and the fix, no stack trace
  const file = path.join(cwd, 'not-a-folder');
  writeFileSync(file, 'x');
  const bad = await runCli(['plan', SPEC, '--out', file], { cwd });
  assert.equal(bad.code, 2, bad.stderr);
  assert.equal(bad.stderr.trimEnd().split('\n').length, 1, bad.stderr);
  assert.match(bad.stderr, /--out: .*not-a-folder exists and is not a folder \(fix: .+\)/);
  assert.doesNotMatch(bad.stderr, /\n\s+at /);
  assert.equal(bad.stdout, '');
  assert.equal(readFileSync(file, 'utf8'), 'x', 'the file is left alone');
});

test('corral plan --job: which pool each step of a job runs on, and an unknown pool is exit 2 before anything is synthesized (issue 20, item 3)', async (t) => {
  const dir = tempDir(t);
  writeFileSync(path.join(dir, 'in.txt'), 'a\nb\n');
  writeFileSync(
    path.join(dir, 'job.yaml'),
    `name: render-job
steps:
  - name: prep
    map: { lines: in.txt }
    command: 'echo {input}'
    outputs: prep/{index}
  - name: render
    map: { outputsOf: prep }
    pool: gpu
    command: 'cat {input}'
    outputs: render/{index}
  - name: pack
    reduce: render
    command: 'cat {inputs}'
    outputs: pack.txt
`,
  );
  const cluster = path.join(ROOT, 'examples/clusters/eks-style-no-peers.yaml');
  const r = await runCli(['plan', cluster, '--job', 'job.yaml', '--json'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).routes, { prep: 'cpu', render: 'gpu', pack: 'cpu' });
  const text = await runCli(['plan', cluster, '--job', 'job.yaml', '--pool', 'pack=gpu'], { cwd: dir });
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /routing of job render-job:\n {2}pool cpu: prep\n {2}pool gpu: render, pack\n/);
  writeFileSync(
    path.join(dir, 'bad.yaml'),
    readFileSync(path.join(dir, 'job.yaml'), 'utf8').replace('pool: gpu', 'pool: tpu'),
  );
  const out = path.join(dir, 'never');
  const bad = await runCli(['plan', cluster, '--job', 'bad.yaml', '--out', out], { cwd: dir });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(
    bad.stderr,
    /steps\[1\]\.pool: cluster \S+ has no pool tpu \(fix: name one of its pools: cpu, gpu\)/,
  );
  assert.ok(!existsSync(out), 'the --out folder was created for a job that cannot be routed');
});
