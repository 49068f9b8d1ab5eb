import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { s3Sdk, storageSdk } from '../../aws/sdk.js';
import { S3_LAYOUT } from '../../protocol/keys.js';
import type { Store } from '../store.js';

const { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand } =
  s3Sdk;

/** Options of the S3 store. */
export interface S3StoreOptions {
  readonly client: S3Client;
  /** The bucket (stack output BucketName). */
  readonly bucket: string;
  /**
   * Key prefix of this store inside the bucket, e.g. `jobs/my-job/`.
   * @default '' (the bucket's root)
   */
  readonly prefix?: string;
  /** Local folder where attempts stage their outputs before upload. */
  readonly stagingDir: string;
  /**
   * Part size of multipart uploads; objects larger than one part go up in parts.
   * @default 8 MiB
   */
  readonly partSize?: number;
}

/** Outputs up to this size are uploaded with one PutObject from memory; larger ones stream in parts. */
const SMALL_OUTPUT_BYTES = 1024 * 1024;
/**
 * Outputs up to this size are written inside their commit marker (`data`, base64): one conditional
 * PutObject commits them and one GetObject reads them, where an attempt object costs a PUT and a
 * GET more per task (bench row 10). Larger outputs keep an object each.
 */
export const INLINE_OUTPUT_BYTES = 64 * 1024;

/** Bundle markers kept whole in memory (each at most 50 outputs of 64 KiB). */
const RECENT_BUNDLES = 16;

/** What a commit marker says. */
export interface CommitMarker {
  /** The attempt whose output this is. */
  readonly attempt: string;
  /** Key of the output object in the bucket, or null when the marker holds the output (`data`) or there is none. */
  readonly object: string | null;
  readonly size: number;
  readonly committedAt: string;
  /** The output itself, base64, when it is at most INLINE_OUTPUT_BYTES. @default - absent (the output is `object`, or empty) */
  readonly data?: string;
}

/** The bytes of an output its marker holds (inline, or none), or undefined when they are in `object`. */
export function inlineBytes(m: CommitMarker): Buffer | undefined {
  if (m.data !== undefined) return Buffer.from(m.data, 'base64');
  return m.object === null ? Buffer.alloc(0) : undefined;
}

/**
 * What a bundle's commit marker says (`bundles/<id>`): the result of each of its tasks that
 * succeeded in the attempt that committed it, by task key. A task of the bundle not named failed
 * its last attempt (its failure marker says so).
 */
export interface BundleMarker {
  readonly committedAt: string;
  /** Per task key: its completion key (its output, else its done-marker's key) and result. */
  readonly tasks: Readonly<Record<string, CommitMarker & { readonly key: string }>>;
}

/** A task of a bundle to commit: its key, its completion key, its attempt and whether it staged an output. */
export interface BundleItem {
  readonly task: string;
  readonly key: string;
  readonly attemptId: string;
  readonly output: boolean;
}

/** A task that failed its last attempt, as recorded in the bucket. */
export interface FailureMarker {
  readonly key: string;
  readonly error: string;
  readonly attempts: number;
  readonly at: string;
}

function isStatus(err: unknown, ...codes: number[]): boolean {
  const status = (err as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
  return status !== undefined && codes.includes(status);
}

/**
 * The Store port on Amazon S3. An attempt stages its output in a local file; `commit` writes the
 * commit marker `committed/<key>` with a conditional write (`If-None-Match: *`), which S3 accepts
 * for exactly one writer: the first commit wins, a late duplicate gets 412, so a result becomes
 * visible once and is never replaced. A small output (≤ INLINE_OUTPUT_BYTES) is inside its marker;
 * a larger one is uploaded first to an attempt-scoped key (`attempts/<key>/<attempt>`, multipart
 * when large), which the marker names, and a late duplicate deletes its upload. `exists` and `list` read the
 * markers. A peer that ignores conditional writes breaks the guarantee (fauxqs 1.9.2 needs the
 * pre-handler of test/cluster-peer.ts).
 */
export class S3Store implements Store {
  readonly location: string;
  private readonly prefix: string;
  /**
   * The results of the bundles read so far, by completion key, without their bytes (a bundle's
   * marker never changes): the bundle's id, the task's key in it and the result's marker.
   */
  private readonly bundled = new Map<
    string,
    { readonly bundle: string; readonly task: string; readonly marker: CommitMarker }
  >();
  /** The last bundle markers read, whole (their outputs are downloaded right after): at most RECENT_BUNDLES. */
  private readonly recent = new Map<string, BundleMarker>();
  /** Bundle markers read so far. */
  private readonly bundlesRead = new Set<string>();

  constructor(private readonly o: S3StoreOptions) {
    this.prefix = o.prefix ?? '';
    this.location = `s3://${o.bucket}/${this.prefix}`;
  }

  get bucket(): string {
    return this.o.bucket;
  }

  /** Bucket key of a name inside this store. */
  keyOf(name: string): string {
    return `${this.prefix}${name}`;
  }

  private markerKey(key: string): string {
    return this.keyOf(`${S3_LAYOUT.committed}${key}`);
  }

  private attemptKey(key: string, attemptId: string): string {
    return this.keyOf(`${S3_LAYOUT.attempts}${key}/${attemptId}`);
  }

  /** The local file where attempt `attemptId` of the task with output `key` stages its output. */
  stagingPath(key: string, attemptId: string): string {
    const h = createHash('sha1').update(`${this.location}${key}`).digest('hex').slice(0, 16);
    return path.join(
      this.o.stagingDir,
      `${h}.${attemptId.replace(/[^A-Za-z0-9._-]/g, '_')}`,
      path.posix.basename(key) || 'output',
    );
  }

  async stage(key: string, attemptId: string): Promise<string> {
    const p = this.stagingPath(key, attemptId);
    await fsp.mkdir(path.dirname(p), { recursive: true });
    return p;
  }

  async commit(key: string, attemptId: string): Promise<'committed' | 'duplicate' | 'missing'> {
    const staged = this.stagingPath(key, attemptId);
    let size: number;
    try {
      size = (await fsp.stat(staged)).size;
    } catch {
      return 'missing';
    }
    try {
      if (size <= INLINE_OUTPUT_BYTES) {
        // the marker is the output: one conditional PutObject, nothing to delete when it loses
        const inline: CommitMarker = {
          attempt: attemptId,
          object: null,
          size,
          committedAt: new Date().toISOString(),
          data: (await fsp.readFile(staged)).toString('base64'),
        };
        return (await this.putOnce(this.markerKey(key), JSON.stringify(inline))) ? 'committed' : 'duplicate';
      }
      const object = this.attemptKey(key, attemptId);
      if (size > SMALL_OUTPUT_BYTES && (await this.exists(key))) return 'duplicate';
      await this.upload(object, staged, size);
      const marker: CommitMarker = {
        attempt: attemptId,
        object,
        size,
        committedAt: new Date().toISOString(),
      };
      if (await this.putOnce(this.markerKey(key), JSON.stringify(marker))) return 'committed';
      await this.o.client.send(new DeleteObjectCommand({ Bucket: this.o.bucket, Key: object }));
      return 'duplicate';
    } finally {
      await this.discard(key, attemptId);
    }
  }

  /**
   * Commits a bundle's results with one conditional PutObject of its marker (`bundles/<id>`): the
   * first attempt of the bundle to commit wins for all its tasks; a later one gets 'duplicate' and
   * leaves nothing (outputs over INLINE_OUTPUT_BYTES were uploaded first: deleted again).
   */
  async commitBundle(id: string, items: readonly BundleItem[]): Promise<'committed' | 'duplicate'> {
    const uploaded: string[] = [];
    try {
      const tasks: Record<string, CommitMarker & { key: string }> = {};
      const committedAt = new Date().toISOString();
      for (const it of items) {
        if (!it.output) {
          tasks[it.task] = { key: it.key, attempt: it.attemptId, object: null, size: 0, committedAt };
          continue;
        }
        const staged = this.stagingPath(it.key, it.attemptId);
        const size = (await fsp.stat(staged)).size;
        if (size <= INLINE_OUTPUT_BYTES) {
          const data = (await fsp.readFile(staged)).toString('base64');
          tasks[it.task] = { key: it.key, attempt: it.attemptId, object: null, size, committedAt, data };
          continue;
        }
        const object = this.attemptKey(it.key, it.attemptId);
        await this.upload(object, staged, size);
        uploaded.push(object);
        tasks[it.task] = { key: it.key, attempt: it.attemptId, object, size, committedAt };
      }
      const marker: BundleMarker = { committedAt, tasks };
      if (await this.putOnce(this.keyOf(`${S3_LAYOUT.bundles}${id}`), JSON.stringify(marker)))
        return 'committed';
      for (const object of uploaded)
        await this.o.client.send(new DeleteObjectCommand({ Bucket: this.o.bucket, Key: object }));
      return 'duplicate';
    } finally {
      for (const it of items) if (it.output) await this.discard(it.key, it.attemptId);
    }
  }

  /** Whether a bundle's marker exists (its results are committed). */
  async bundleCommitted(id: string): Promise<boolean> {
    return this.headExists(this.keyOf(`${S3_LAYOUT.bundles}${id}`));
  }

  /** Reads the bundle markers not read yet (one LIST, one GET per new marker) into the index of results. */
  async readBundles(): Promise<void> {
    const fresh: string[] = [];
    for await (const id of this.keysBelow(S3_LAYOUT.bundles)) if (!this.bundlesRead.has(id)) fresh.push(id);
    await Promise.all(
      fresh.map(async (id) => {
        const b = await this.bundle(id);
        if (!b) return;
        for (const [task, { data: _bytes, ...m }] of Object.entries(b.tasks))
          this.bundled.set(m.key, { bundle: id, task, marker: m });
        this.bundlesRead.add(id);
      }),
    );
  }

  /** A bundle's marker: one of the last read, else read now; undefined when there is none. */
  private async bundle(id: string): Promise<BundleMarker | undefined> {
    let b = this.recent.get(id);
    if (!b) {
      const text = await this.getText(`${S3_LAYOUT.bundles}${id}`);
      if (text === undefined) return undefined;
      b = JSON.parse(text) as BundleMarker;
    }
    this.recent.delete(id);
    this.recent.set(id, b);
    if (this.recent.size > RECENT_BUNDLES) this.recent.delete(this.recent.keys().next().value!);
    return b;
  }

  /** Commits a task without output file (an empty marker); false when one was committed already. */
  async commitEmpty(key: string, attemptId: string): Promise<boolean> {
    const marker: CommitMarker = {
      attempt: attemptId,
      object: null,
      size: 0,
      committedAt: new Date().toISOString(),
    };
    return this.putOnce(this.markerKey(key), JSON.stringify(marker));
  }

  /**
   * Uploads a staged file to `object`: one PutObject from memory when small (without asking first
   * whether a result exists: a late duplicate then costs an upload and a delete, where the
   * question would cost a request on every commit), else in parts.
   */
  private async upload(object: string, staged: string, size: number): Promise<void> {
    if (size <= SMALL_OUTPUT_BYTES) {
      await this.o.client.send(
        new PutObjectCommand({ Bucket: this.o.bucket, Key: object, Body: await fsp.readFile(staged) }),
      );
      return;
    }
    await new (storageSdk().Upload)({
      client: this.o.client,
      params: { Bucket: this.o.bucket, Key: object, Body: createReadStream(staged) },
      partSize: Math.max(5 * 1024 * 1024, this.o.partSize ?? 8 * 1024 * 1024),
      queueSize: 4,
    }).done();
  }

  /** Writes an object unless it exists (If-None-Match: *); false when it existed. */
  private async putOnce(key: string, body: string): Promise<boolean> {
    try {
      await this.o.client.send(
        new PutObjectCommand({
          Bucket: this.o.bucket,
          Key: key,
          Body: body,
          IfNoneMatch: '*',
          ContentType: 'application/json',
        }),
      );
      return true;
    } catch (err) {
      // 412: another writer won; 409: a concurrent conditional write is in progress (it wins).
      if (isStatus(err, 412, 409)) return false;
      throw err;
    }
  }

  async discard(key: string, attemptId: string): Promise<void> {
    await fsp.rm(path.dirname(this.stagingPath(key, attemptId)), { recursive: true, force: true });
  }

  async exists(key: string): Promise<boolean> {
    return this.bundled.has(key) || this.headExists(this.markerKey(key));
  }

  private async headExists(objectKey: string): Promise<boolean> {
    try {
      await this.o.client.send(new HeadObjectCommand({ Bucket: this.o.bucket, Key: objectKey }));
      return true;
    } catch (err) {
      if (isStatus(err, 404, 403)) return false;
      throw err;
    }
  }

  /** The commit marker of an output, if committed (its own, or its entry in a bundle read by `list`). */
  async marker(key: string): Promise<CommitMarker | undefined> {
    const inBundle = this.bundled.get(key);
    if (inBundle) {
      const { marker } = inBundle;
      // its bytes are in the bundle's marker (kept whole only for the last few read)
      if (marker.object !== null || marker.size === 0) return marker;
      return (await this.bundle(inBundle.bundle))?.tasks[inBundle.task] ?? marker;
    }
    try {
      const r = await this.o.client.send(
        new GetObjectCommand({ Bucket: this.o.bucket, Key: this.markerKey(key) }),
      );
      return JSON.parse(await r.Body!.transformToString()) as CommitMarker;
    } catch (err) {
      if (isStatus(err, 404)) return undefined;
      throw err;
    }
  }

  /** Downloads a committed output to a local file; false when it is not committed. */
  async download(key: string, dest: string): Promise<boolean> {
    const m = await this.marker(key);
    if (!m) return false;
    await fsp.mkdir(path.dirname(dest), { recursive: true });
    const inline = inlineBytes(m);
    // staged beside nothing the user lists: a dot-file in the destination folder, renamed when whole
    const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.corral-part`);
    try {
      if (inline) await fsp.writeFile(tmp, inline);
      else {
        const r = await this.o.client.send(new GetObjectCommand({ Bucket: this.o.bucket, Key: m.object! }));
        await pipeline(r.Body as Readable, createWriteStream(tmp));
      }
      await fsp.rename(tmp, dest);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    }
    return true;
  }

  /** Keys (relative to `sub`) of every object below a sub-prefix of this store, in pages. */
  async *keysBelow(sub: string): AsyncIterable<string> {
    const full = this.keyOf(sub);
    let token: string | undefined;
    do {
      const r = await this.o.client.send(
        new ListObjectsV2Command({ Bucket: this.o.bucket, Prefix: full, ContinuationToken: token }),
      );
      for (const c of r.Contents ?? []) if (c.Key) yield c.Key.slice(full.length);
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  }

  /** Committed keys below a prefix: their own markers' and, read again each call, the bundles'. */
  async *list(prefix = ''): AsyncIterable<string> {
    for await (const k of this.keysBelow(`${S3_LAYOUT.committed}${prefix}`)) yield `${prefix}${k}`;
    await this.readBundles();
    for (const k of this.bundled.keys()) if (k.startsWith(prefix)) yield k;
  }

  /** Records that a task failed its last attempt (read by the coordinator as "dead"). */
  async putFailure(f: FailureMarker): Promise<void> {
    await this.o.client.send(
      new PutObjectCommand({
        Bucket: this.o.bucket,
        Key: this.keyOf(`${S3_LAYOUT.failed}${f.key}`),
        Body: JSON.stringify(f),
        ContentType: 'application/json',
      }),
    );
  }

  /** The failures recorded in the bucket. */
  async failures(): Promise<FailureMarker[]> {
    const out: FailureMarker[] = [];
    for await (const k of this.keysBelow(S3_LAYOUT.failed)) {
      const r = await this.o.client.send(
        new GetObjectCommand({ Bucket: this.o.bucket, Key: this.keyOf(`${S3_LAYOUT.failed}${k}`) }),
      );
      out.push(JSON.parse(await r.Body!.transformToString()) as FailureMarker);
    }
    return out;
  }

  /** Writes a small object below this store (job spec, task logs). */
  async putText(name: string, body: string | Buffer): Promise<void> {
    await this.o.client.send(
      new PutObjectCommand({ Bucket: this.o.bucket, Key: this.keyOf(name), Body: body }),
    );
  }

  /** Reads a small object below this store; undefined when it does not exist. */
  async getText(name: string): Promise<string | undefined> {
    try {
      const r = await this.o.client.send(
        new GetObjectCommand({ Bucket: this.o.bucket, Key: this.keyOf(name) }),
      );
      return await r.Body!.transformToString();
    } catch (err) {
      if (isStatus(err, 404)) return undefined;
      throw err;
    }
  }
}
