import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createS3Client } from '../src/aws/clients.js';
import { S3Store } from '../src/store/s3/s3-store.js';
import { type Peer, startPeer } from './cluster-peer.js';
import { tempDir } from './helpers.js';

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

let peer: Peer;
let n = 0;
before(async () => {
  peer = await startPeer();
});
after(async () => {
  await peer.stop();
});

async function store(t: { after: (fn: () => void) => void }) {
  const bucket = `b${n++}`;
  await peer.createBucket(bucket);
  const dir = tempDir(t);
  const client = createS3Client({ region: 'us-east-1', endpointUrl: peer.endpoint });
  return {
    s: new S3Store({
      client,
      bucket,
      prefix: 'jobs/j/',
      stagingDir: path.join(dir, 'staging'),
      partSize: 5 * 1024 * 1024,
    }),
    dir,
  };
}

test('commit-once: of two attempts of a task, the first commit wins and a late duplicate never replaces it', async (t) => {
  const { s, dir } = await store(t);
  writeFileSync(await s.stage('out/1.txt', '1-wa'), 'from a\n');
  writeFileSync(await s.stage('out/1.txt', '2-wb'), 'from b\n');
  assert.equal(await s.exists('out/1.txt'), false);
  assert.equal(await s.commit('out/1.txt', '1-wa'), 'committed');
  assert.equal(await s.commit('out/1.txt', '2-wb'), 'duplicate');
  assert.equal(await s.exists('out/1.txt'), true);
  assert.ok(await s.download('out/1.txt', path.join(dir, 'got')));
  assert.equal(readFileSync(path.join(dir, 'got'), 'utf8'), 'from a\n');
  assert.equal(await s.commit('out/2.txt', '1-wa'), 'missing', 'nothing staged');
  assert.deepEqual(await collect(s.list()), ['out/1.txt']);
});

test('commit-once under a race: 8 attempts commit the same output at once, exactly one wins', async (t) => {
  const { s, dir } = await store(t);
  const ids = Array.from({ length: 8 }, (_, i) => `1-w${i}`);
  for (const id of ids) writeFileSync(await s.stage('race', id), id);
  const results = await Promise.all(ids.map((id) => s.commit('race', id)));
  assert.equal(results.filter((r) => r === 'committed').length, 1, results.join(','));
  assert.equal(results.filter((r) => r === 'duplicate').length, 7);
  const winner = ids[results.indexOf('committed')]!;
  await s.download('race', path.join(dir, 'race'));
  assert.equal(readFileSync(path.join(dir, 'race'), 'utf8'), winner);
  // a small output is inside its marker: no attempt uploads, so none of the losers' is left
  assert.deepEqual(await collect(s.keysBelow('attempts/')), []);
  assert.equal((await s.marker('race'))?.attempt, winner);
});

test('a small output is its commit marker (one PUT); one over 64 KiB has an attempt object the marker names, and a late duplicate deletes its upload', async (t) => {
  const { s, dir } = await store(t);
  const puts = peer.requests.get('s3:PUT') ?? 0;
  writeFileSync(await s.stage('small.txt', '1-wa'), 'tiny\n');
  assert.equal(await s.commit('small.txt', '1-wa'), 'committed');
  assert.equal((peer.requests.get('s3:PUT') ?? 0) - puts, 1, 'one PutObject commits a small output');
  assert.equal(Buffer.from((await s.marker('small.txt'))?.data ?? '', 'base64').toString(), 'tiny\n');
  const big = Buffer.alloc(64 * 1024 + 1, 'x');
  writeFileSync(await s.stage('big.txt', '1-wa'), big);
  writeFileSync(await s.stage('big.txt', '2-wb'), Buffer.alloc(big.length, 'y'));
  assert.equal(await s.commit('big.txt', '1-wa'), 'committed');
  assert.equal(await s.commit('big.txt', '2-wb'), 'duplicate');
  const m = await s.marker('big.txt');
  assert.equal(m?.data, undefined);
  assert.ok(m?.object?.endsWith('attempts/big.txt/1-wa'), m?.object ?? 'no object');
  assert.deepEqual(await collect(s.keysBelow('attempts/')), ['big.txt/1-wa']);
  assert.ok(await s.download('big.txt', path.join(dir, 'big')));
  assert.deepEqual(readFileSync(path.join(dir, 'big')), big);
  assert.ok(await s.download('small.txt', path.join(dir, 'small')));
  assert.equal(readFileSync(path.join(dir, 'small'), 'utf8'), 'tiny\n');
});

test('a large output goes up in parts (multipart) and downloads intact', async (t) => {
  const { s, dir } = await store(t);
  const big = Buffer.alloc(11 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
  writeFileSync(await s.stage('big.bin', '1-w'), big);
  const posts = peer.requests.get('s3:POST') ?? 0;
  assert.equal(await s.commit('big.bin', '1-w'), 'committed');
  assert.ok((peer.requests.get('s3:POST') ?? 0) - posts >= 2, 'create + complete multipart upload');
  await s.download('big.bin', path.join(dir, 'big'));
  assert.ok(readFileSync(path.join(dir, 'big')).equals(big));
});

test('tasks without output commit an empty marker once; failures are recorded and listed', async (t) => {
  const { s } = await store(t);
  assert.equal(await s.commitEmpty('.tasks/3', '1-w'), true);
  assert.equal(await s.commitEmpty('.tasks/3', '2-w'), false);
  await s.putFailure({ key: '4', error: 'exited with code 1', attempts: 3, at: new Date().toISOString() });
  assert.deepEqual(
    (await s.failures()).map((f) => [f.key, f.attempts]),
    [['4', 3]],
  );
});

test('bundles: one conditional PUT commits a bundle of results (small inline, large as an attempt object), a later attempt of the bundle leaves nothing, and a reader lists and downloads them, 20 bundles after the last few are no longer held whole', async (t) => {
  const { s, dir } = await store(t);
  const big = 'B'.repeat(70 * 1024);
  const stageAll = async (b: number, attempt: string) => {
    const items = [];
    for (let i = 0; i < 3; i++) {
      const key = `out/${b}-${i}.txt`;
      writeFileSync(await s.stage(key, attempt), i === 2 && b === 0 ? big : `${b}-${i} ${attempt}\n`);
      items.push({ task: `${b}-${i}`, key, attemptId: attempt, output: true });
    }
    return [...items, { task: `${b}-none`, key: `.tasks/${b}-none`, attemptId: attempt, output: false }];
  };
  for (let b = 0; b < 20; b++)
    assert.equal(await s.commitBundle(`b${b}`, await stageAll(b, '1-wa')), 'committed');
  // a second attempt of bundle 0 loses whole and deletes its upload
  assert.equal(await s.commitBundle('b0', await stageAll(0, '2-wb')), 'duplicate');
  assert.deepEqual(peer.objectKeys(s.bucket, 'jobs/j/attempts/'), ['out/0-2.txt/1-wa']);
  assert.equal(await s.bundleCommitted('b0'), true);
  assert.equal(await s.bundleCommitted('b99'), false);
  // a fresh reader (a coordinator started again): every result listed, each downloaded whole
  const reader = new S3Store({
    client: createS3Client({ region: 'us-east-1', endpointUrl: peer.endpoint }),
    bucket: s.bucket,
    prefix: 'jobs/j/',
    stagingDir: path.join(dir, 'staging2'),
  });
  const keys = await collect(reader.list());
  assert.equal(keys.length, 20 * 4);
  assert.ok(keys.includes('.tasks/7-none'));
  for (let b = 0; b < 20; b++) {
    for (let i = 0; i < 3; i++) {
      const dest = path.join(dir, 'got', `${b}-${i}`);
      assert.ok(await reader.download(`out/${b}-${i}.txt`, dest));
      assert.equal(readFileSync(dest, 'utf8'), i === 2 && b === 0 ? big : `${b}-${i} 1-wa\n`, `${b}-${i}`);
    }
  }
  assert.equal((await reader.marker('out/3-1.txt'))?.attempt, '1-wa');
  assert.equal(await reader.exists('out/19-0.txt'), true);
});
