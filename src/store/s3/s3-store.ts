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

  private stagingPath(key: string, attemptId: string): string {
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
      if (size <= SMALL_OUTPUT_BYTES) {
        // One PutObject, without asking first whether a result exists: a late duplicate then
        // costs an upload and a delete, where the question would cost a request on every commit.
        await this.o.client.send(
          new PutObjectCommand({ Bucket: this.o.bucket, Key: object, Body: await fsp.readFile(staged) }),
        );
      } else {
        if (await this.exists(key)) return 'duplicate';
        await new (storageSdk().Upload)({
          client: this.o.client,
          params: { Bucket: this.o.bucket, Key: object, Body: createReadStream(staged) },
          partSize: Math.max(5 * 1024 * 1024, this.o.partSize ?? 8 * 1024 * 1024),
          queueSize: 4,
        }).done();
      }
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
    try {
      await this.o.client.send(new HeadObjectCommand({ Bucket: this.o.bucket, Key: this.markerKey(key) }));
      return true;
    } catch (err) {
      if (isStatus(err, 404, 403)) return false;
      throw err;
    }
  }

  /** The commit marker of an output, if committed. */
  async marker(key: string): Promise<CommitMarker | undefined> {
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

  async *list(prefix = ''): AsyncIterable<string> {
    for await (const k of this.keysBelow(`${S3_LAYOUT.committed}${prefix}`)) yield `${prefix}${k}`;
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
