/**
 * A pool with an image: `corral worker --image` runs each command with `docker run`. No Docker
 * engine here, so `docker` is the shim in test/fixtures/docker-shim (first on PATH): it records
 * its argv and runs the container's command on the host as docker would start it (only the `-e`
 * environment, stdin only with -i, paths outside the `-v` mounts redirected into a private root
 * that --rm removes). A real coordinator (`corral run --cluster`) and a real worker run against
 * fauxqs on 127.0.0.1; the test checks the recorded argv and what the bucket committed.
 * Containers are on docker's bridge network (no instance credentials reach them on a pool host,
 * whose IMDS hop limit is 1) and get `--gpus all` on a GPU pool (CORRAL_GPUS).
 */
import assert from 'node:assert/strict';
import { cpSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { dockerArgv, dockerCommand, dockerExec } from '../src/worker/docker-command.js';
import { PEER_ENV, type Peer, startPeer } from './cluster-peer.js';
import { ROOT, runCli, startCli, tempDir, writeFiles } from './helpers.js';

const SHIM = path.join(ROOT, 'test', 'fixtures', 'docker-shim');
const IMAGE = 'registry.example.com/lab/tools:1.4';
const SECRET = 'tok-9f3c-never-on-a-command-line';
/** Static keys in the worker's environment (fauxqs ignores them): they must never reach a container. */
const KEYS = {
  AWS_ACCESS_KEY_ID: 'AKIAWORKERSTATICKEY7',
  AWS_SECRET_ACCESS_KEY: 'worker-static-secret-5d1e',
};

let peer: Peer;
before(async () => {
  peer = await startPeer();
});
after(async () => {
  await peer.stop();
});

async function keys(bucket: string, prefix: string): Promise<string[]> {
  const r = await peer.s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  return (r.Contents ?? []).map((c) => c.Key!.slice(prefix.length)).sort();
}

/** Runs one job with a coordinator and one imaged worker; returns the shim's records. */
async function runImaged(
  t: { after: (fn: () => void) => void },
  name: string,
  files: Record<string, string>,
  file = 'job.yaml',
  prepare: (dir: string) => void = () => {},
  workerEnv: NodeJS.ProcessEnv = {},
) {
  const dir = tempDir(t);
  writeFiles(dir, files);
  prepare(dir);
  const { queueUrl, dlqUrl } = await peer.createQueues(name);
  const bucket = `${name}-bucket`;
  await peer.createBucket(bucket);
  const where = [
    '--queue-url',
    queueUrl,
    '--dlq-url',
    dlqUrl,
    '--bucket',
    bucket,
    '--endpoint-url',
    peer.endpoint,
  ];
  const cache = path.join(dir, 'worker');
  const log = path.join(dir, 'docker-argv.jsonl');
  const env = {
    ...PEER_ENV,
    ...KEYS,
    CORRAL_CLUSTER_TICK_MS: '200',
    PATH: `${SHIM}:${process.env.PATH}`,
    DOCKER_SHIM_LOG: log,
    DOCKER_SHIM_NODE: process.execPath,
  };
  const worker = startCli(
    ['worker', ...where, '--cache-dir', cache, '--idle-exit', '30', '--no-spot', '--image', IMAGE],
    { cwd: dir, env: { ...env, ...workerEnv } },
  );
  t.after(() => {
    if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGKILL');
  });
  const run = await runCli(['run', file, '--cluster', name, ...where], {
    cwd: dir,
    env,
    timeoutMs: 60_000,
  });
  worker.kill('SIGTERM');
  const w = await worker.result;
  const calls = readFileSync(log, 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { argv: string[] }).argv);
  return { dir, bucket, cache, run, worker: w, calls };
}

/** The values of a repeated option (`-v`, `-e`) in an argv. */
function valuesOf(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag && i + 1 < argv.length ? [argv[i + 1]!] : []));
}

/** What every docker argv must hold, whatever the task. */
function assertSafe(argv: string[], cache: string) {
  assert.equal(argv[0], 'run');
  assert.ok(argv.includes('--rm'), 'the container is removed when the task ends');
  assert.deepEqual(
    valuesOf(argv, '--network'),
    ['bridge'],
    "bridge network: on a pool host (IMDS hop limit 1) the instance role's credentials do not reach the container",
  );
  const imageAt = argv.indexOf(IMAGE);
  assert.ok(imageAt > 0, `image ${IMAGE} in ${argv}`);
  assert.deepEqual(argv.slice(imageAt + 1, imageAt + 3), ['/bin/sh', '-c']);
  const options = argv.slice(1, imageAt);
  for (const m of valuesOf(options, '-v')) {
    const [src, dst] = m.split(':');
    assert.equal(src, dst, `same-path mount ${m}`);
    assert.ok(src!.startsWith(`${cache}/`), `only the worker's own folders are mounted: ${m}`);
  }
  const workdir = valuesOf(options, '-w')[0]!;
  assert.ok(
    valuesOf(options, '-v').some((m) => workdir.startsWith(`${m.split(':')[0]}/`)),
    `the working folder ${workdir} is inside a mount`,
  );
  for (const e of valuesOf(options, '-e')) {
    assert.match(e, /^[A-Z_][A-Z0-9_]*$/, `-e passes names only, never NAME=value: ${e}`);
    assert.ok(!/^AWS_/.test(e), `no AWS credentials or settings passed as variables: ${e}`);
  }
  const all = argv.join('\n');
  for (const secret of [SECRET, KEYS.AWS_SECRET_ACCESS_KEY, KEYS.AWS_ACCESS_KEY_ID])
    assert.ok(!all.includes(secret), `a secret on the docker command line: ${secret}`);
  assert.ok(
    !options.includes('--gpus') || valuesOf(options, '--gpus').join() === 'all',
    'only the pool GPUs',
  );
  for (const forbidden of ['--privileged', '-p', '--publish', '--env-file', '--cap-add'])
    assert.ok(!options.includes(forbidden), forbidden);
}

test('an imaged pool: each task runs in docker run with the image, the input cache mounted, no secrets or keys on the command line; outputs committed', async (t) => {
  const r = await runImaged(t, 'dock', {
    'job.yaml': `name: dock
tasks:
  map: { glob: "in/*.txt" }
  command: >-
    tr a-z A-Z < {input};
    echo "cwd=$(pwd) input={input.name}";
    echo "aws=\${AWS_ACCESS_KEY_ID:-none}/\${AWS_SECRET_ACCESS_KEY:-none}/\${AWS_SESSION_TOKEN:-none}";
    echo "token=\${API_TOKEN:+set}"
  env: { API_TOKEN: "${SECRET}" }
outputs: out/{input.stem}.txt
`,
    'in/a.txt': 'alpha\n',
    'in/b.txt': 'bravo\n',
    'in/c.txt': 'charlie\n',
  });
  assert.equal(r.run.code, 0, `${r.run.stdout}\n${r.run.stderr}\n${r.worker.stderr}`);
  assert.equal(r.worker.code, 0, r.worker.stderr);
  const inputsDir = path.join(r.cache, 'inputs', r.bucket, 'jobs', 'dock', 'inputs');
  assert.equal(r.calls.length, 3, 'one docker run per task');
  for (const argv of r.calls) {
    assertSafe(argv, r.cache);
    assert.deepEqual(argv.slice(0, argv.indexOf(IMAGE)), [
      'run',
      '--rm',
      '-i',
      '--network',
      'bridge',
      '--init',
      '-v',
      `${r.cache}/inputs:${r.cache}/inputs`,
      '-w',
      inputsDir,
      '-e',
      'API_TOKEN',
      '-e',
      'CORRAL_INPUT',
      '-e',
      'CORRAL_INPUT_NAME',
    ]);
    // placeholders are read from the -e variables inside the container, never spliced in
    assert.equal(
      argv.at(-1),
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the shell command as written in job.yaml
      'tr a-z A-Z < "$CORRAL_INPUT"; echo "cwd=$(pwd) input="$CORRAL_INPUT_NAME""; echo "aws=${AWS_ACCESS_KEY_ID:-none}/${AWS_SECRET_ACCESS_KEY:-none}/${AWS_SESSION_TOKEN:-none}"; echo "token=${API_TOKEN:+set}"',
    );
  }
  // committed in the bucket (and downloaded by the coordinator), from inside the "container"
  assert.deepEqual(await keys(r.bucket, 'jobs/dock/committed/'), ['out/a.txt', 'out/b.txt', 'out/c.txt']);
  for (const [stem, up] of [
    ['a', 'ALPHA'],
    ['b', 'BRAVO'],
    ['c', 'CHARLIE'],
  ]) {
    // the step's own variable reaches the container (by name: its value is on no command line)
    const expected = `${up}\ncwd=${inputsDir} input=${stem}.txt\naws=none/none/none\ntoken=set\n`;
    assert.equal(readFileSync(path.join(r.dir, 'out', `${stem}.txt`), 'utf8'), expected);
  }
  // the worker itself had static keys (for fauxqs); the container saw none of them
  assert.ok(!readFileSync(path.join(r.dir, 'out', 'a.txt'), 'utf8').includes(KEYS.AWS_SECRET_ACCESS_KEY));
});

test('a command that writes {output}: the attempt folder is mounted too, so the file lands in the worker staging and is committed', async (t) => {
  const r = await runImaged(t, 'dockout', {
    'job.yaml': `name: dockout
tasks:
  map: { glob: "in/*.txt" }
  command: 'tr a-z A-Z < {input} > {output}'
outputs: out/{input.stem}.up
`,
    'in/x.txt': 'x-ray\n',
    'in/y.txt': 'yankee\n',
  });
  assert.equal(r.run.code, 0, `${r.run.stdout}\n${r.run.stderr}\n${r.worker.stderr}`);
  assert.equal(r.calls.length, 2);
  for (const argv of r.calls) {
    assertSafe(argv, r.cache);
    const mounts = valuesOf(argv, '-v');
    assert.equal(mounts.length, 2, String(mounts));
    assert.match(mounts[1]!, new RegExp(`^${r.cache}/staging/[0-9a-f]{16}\\.1-[^/:]+:${r.cache}/staging/`));
    assert.deepEqual(valuesOf(argv, '-e'), ['CORRAL_INPUT', 'CORRAL_OUTPUT']);
  }
  assert.deepEqual(await keys(r.bucket, 'jobs/dockout/committed/'), ['out/x.up', 'out/y.up']);
  assert.equal(readFileSync(path.join(r.dir, 'out', 'x.up'), 'utf8'), 'X-RAY\n');
  assert.equal(readFileSync(path.join(r.dir, 'out', 'y.up'), 'utf8'), 'YANKEE\n');
});

test('a workflow on an imaged pool: the reduce gets its {inputs} as arguments of sh -c in the container', async (t) => {
  const r = await runImaged(t, 'dockwf', {
    'job.yaml': `name: dockwf
steps:
  - name: up
    map: { glob: "in/*.txt" }
    command: 'tr a-z A-Z < {input}'
    outputs: out/up/{input.stem}.txt
  - name: all
    reduce: up
    command: 'for f in {inputs}; do printf "%s=%s" "$(basename "$f")" "$(cat "$f")"; echo; done | sort'
    outputs: out/all.txt
`,
    'in/a b.txt': 'alpha\n',
    'in/c.txt': 'charlie\n',
  });
  assert.equal(r.run.code, 0, `${r.run.stdout}\n${r.run.stderr}\n${r.worker.stderr}`);
  assert.equal(r.calls.length, 3);
  for (const argv of r.calls) assertSafe(argv, r.cache);
  const script = (a: string[]) => a[a.indexOf('-c') + 1] ?? '';
  const reduce = r.calls.find((a) => script(a).startsWith('for f in'));
  assert.ok(reduce, JSON.stringify(r.calls));
  assert.equal(
    script(reduce),
    'for f in "$@"; do printf "%s=%s" "$(basename "$f")" "$(cat "$f")"; echo; done | sort',
  );
  const inputsDir = valuesOf(reduce, '-w')[0]!;
  // $0 of sh -c, then each committed output of step up, staged into the mounted job folder
  const after = reduce.slice(reduce.indexOf('-c') + 2);
  assert.equal(after[0], 'sh');
  assert.deepEqual(after.slice(1).sort(), [`${inputsDir}/out/up/a_b.txt`, `${inputsDir}/out/up/c.txt`]);
  assert.equal(readFileSync(path.join(r.dir, 'out', 'all.txt'), 'utf8'), 'a_b.txt=ALPHA\nc.txt=CHARLIE\n');
});

test('dockerArgv: {inputs} of a reduce become "$@" with the paths as arguments; step env by name only', () => {
  const argv = dockerArgv('cat {inputs} | wc -l > {output}', {
    image: IMAGE,
    mounts: ['/var/lib/corral/cache/inputs'],
    workdir: '/var/lib/corral/cache/inputs/b/jobs/j/inputs',
    env: ['API_TOKEN', 'not a name'],
  });
  assert.deepEqual(valuesOf(argv, '-e'), ['API_TOKEN', 'CORRAL_OUTPUT']);
  // …the agent renders {inputs} in the host command line as one quoted word per path
  assert.deepEqual(argv.slice(-6), [
    IMAGE,
    '/bin/sh',
    '-c',
    'cat "$@" | wc -l > "$CORRAL_OUTPUT"',
    'sh',
    '{inputs}',
  ]);
});

test("dockerArgv: shell braces stay as written in the image's sh -c; {{ and }} are literal braces", () => {
  const argv = dockerArgv("awk '{print}' {input} && echo '{{input}}'", {
    image: IMAGE,
    mounts: [],
    workdir: '/w',
  });
  assert.deepEqual(valuesOf(argv, '-e'), ['CORRAL_INPUT']);
  assert.equal(argv.at(-1), `awk '{print}' "$CORRAL_INPUT" && echo '{input}'`);
});

test('a GPU pool (CORRAL_GPUS=all, as its bootstrap writes): every docker run gets --gpus all, the rest as on any pool', async (t) => {
  const r = await runImaged(
    t,
    'dockgpu',
    {
      'job.yaml': `name: dockgpu
tasks:
  map: { glob: "in/*.txt" }
  command: 'tr a-z A-Z < {input}'
outputs: out/{input.stem}.txt
`,
      'in/g.txt': 'golf\n',
      'in/h.txt': 'hotel\n',
    },
    'job.yaml',
    () => {},
    { CORRAL_GPUS: 'all' },
  );
  assert.equal(r.run.code, 0, `${r.run.stdout}\n${r.run.stderr}\n${r.worker.stderr}`);
  assert.equal(r.calls.length, 2);
  for (const argv of r.calls) {
    assertSafe(argv, r.cache);
    const options = argv.slice(1, argv.indexOf(IMAGE));
    assert.deepEqual(valuesOf(options, '--gpus'), ['all']);
    assert.deepEqual(options.slice(0, 7), ['--rm', '-i', '--network', 'bridge', '--init', '--gpus', 'all']);
  }
  assert.equal(readFileSync(path.join(r.dir, 'out', 'g.txt'), 'utf8'), 'GOLF\n');
  assert.equal(readFileSync(path.join(r.dir, 'out', 'h.txt'), 'utf8'), 'HOTEL\n');
});

test('--gpus in every form of a containerized task (command, exec, host line), and only when asked', () => {
  const o = { image: IMAGE, mounts: ['/c'], workdir: '/c/w' };
  const gpu = { ...o, gpus: 'device=0,1' };
  for (const argv of [dockerArgv('true', gpu), dockerExec(['mProject', 'a.fits'], gpu)]) {
    const at = argv.indexOf('--gpus');
    assert.ok(at > 0 && at < argv.indexOf(IMAGE), String(argv));
    assert.equal(argv[at + 1], 'device=0,1');
  }
  assert.match(dockerCommand('true', gpu), / '--gpus' 'device=0,1' /);
  for (const argv of [dockerArgv('true', o), dockerExec(['x'], o), dockerArgv('true', { ...o, gpus: '' })])
    assert.ok(!argv.includes('--gpus'), String(argv));
});

test('a HyperFlow workflow on an imaged pool: each process runs its executable in the image, without a shell of ours', async (t) => {
  const wf = path.join(ROOT, 'examples/hyperflow');
  const r = await runImaged(t, 'mosaic', {}, 'workflow.json', (dir) => {
    for (const f of ['workflow.json', 'tiles'])
      cpSync(path.join(wf, f), path.join(dir, f), { recursive: true });
  });
  assert.equal(r.run.code, 0, `${r.run.stdout}\n${r.run.stderr}\n${r.worker.stderr}`);
  const processes = (
    JSON.parse(readFileSync(path.join(wf, 'workflow.json'), 'utf8')) as {
      processes: Array<{ config: { executor: { executable: string; args: string[] } } }>;
    }
  ).processes;
  assert.equal(r.calls.length, processes.length, 'one docker run per process');
  const seen = r.calls.map((argv) => {
    const at = argv.indexOf(IMAGE);
    assert.ok(at > 0, `image in ${argv}`);
    assert.deepEqual(argv.slice(0, 2), ['run', '--rm']);
    assert.deepEqual(valuesOf(argv.slice(0, at), '--network'), ['bridge']);
    assert.ok(!argv.slice(0, at).some((a) => /^AWS_/.test(a)), 'no AWS variables');
    return JSON.stringify(argv.slice(at + 1));
  });
  // exactly the processes' own argv, each once, after the image
  assert.deepEqual(
    seen.sort(),
    processes.map((p) => JSON.stringify([p.config.executor.executable, ...p.config.executor.args])).sort(),
  );
  // the same mosaic as a run on this machine without an image
  const local = tempDir(t);
  for (const f of ['workflow.json', 'tiles'])
    cpSync(path.join(wf, f), path.join(local, f), { recursive: true });
  const plain = await runCli(['run', 'workflow.json', '--state-dir', path.join(local, '.corral')], {
    cwd: local,
  });
  assert.equal(plain.code, 0, plain.stderr);
  assert.equal(
    readFileSync(path.join(r.dir, 'mosaic.txt'), 'utf8'),
    readFileSync(path.join(local, 'mosaic.txt'), 'utf8'),
  );
});
