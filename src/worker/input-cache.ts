import { createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';

/** Options of the input cache. */
export interface InputCacheOptions {
  readonly client: S3Client;
  /** Folder of the cache, shared by every worker process on the host. */
  readonly dir: string;
  /** Largest total size of cached files; the least recently used go first. @default 10 GiB */
  readonly maxBytes?: number;
}

/**
 * A host-wide cache of task inputs downloaded from S3: `<dir>/<bucket>/<key>`. A whole object is
 * downloaded once (to a temp name, then renamed, so concurrent workers never see a partial file);
 * a byte range `[start, end)` is written at its offset into a sparse file, and remembered by a
 * marker file, so chunk tasks fetch only their own bytes. Past `maxBytes` the least recently used
 * files are removed.
 */
export class InputCache {
  constructor(private readonly o: InputCacheOptions) {}

  /** Local path of an object in the cache (it may not be there yet). */
  pathOf(bucket: string, key: string): string {
    return path.join(this.o.dir, bucket, ...key.split('/'));
  }

  /**
   * Makes an object, or a byte range of it, available locally; returns the file's path: `file`
   * (inside the cache folder) when given, else the object's own place in the cache.
   */
  async fetch(
    bucket: string,
    key: string,
    range?: { start: number; end: number },
    file = this.pathOf(bucket, key),
  ): Promise<string> {
    const mark = range ? `${file}.corral-ranges/${range.start}-${range.end}` : undefined;
    const have = await exists(mark ?? file);
    if (have) {
      const now = new Date();
      await fsp.utimes(file, now, now).catch(() => {});
      return file;
    }
    await fsp.mkdir(path.dirname(file), { recursive: true });
    if (!range) {
      const r = await this.o.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      const tmp = `${file}.${process.pid}.part`;
      await pipeline(r.Body as Readable, createWriteStream(tmp));
      await fsp.rename(tmp, file);
    } else if (range.end > range.start) {
      const r = await this.o.client.send(
        new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${range.start}-${range.end - 1}` }),
      );
      const fh = await fsp.open(file, 'a+').then(async (h) => {
        await h.close();
        return fsp.open(file, 'r+');
      });
      try {
        let pos = range.start;
        for await (const chunk of r.Body as Readable) {
          await fh.write(chunk as Buffer, 0, (chunk as Buffer).length, pos);
          pos += (chunk as Buffer).length;
        }
      } finally {
        await fh.close();
      }
      await fsp.mkdir(path.dirname(mark!), { recursive: true });
      await fsp.writeFile(mark!, '');
    } else {
      await fsp.appendFile(file, '');
    }
    await this.evict();
    return file;
  }

  /** Removes least recently used files until the cache fits `maxBytes`. */
  async evict(): Promise<void> {
    const max = this.o.maxBytes ?? 10 * 1024 ** 3;
    const files: Array<{ p: string; size: number; at: number }> = [];
    const walk = async (d: string) => {
      for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) {
          if (!e.name.endsWith('.corral-ranges')) await walk(p);
        } else if (!e.name.endsWith('.part')) {
          const st = await fsp.stat(p).catch(() => undefined);
          if (st) files.push({ p, size: st.blocks * 512, at: st.mtimeMs });
        }
      }
    };
    await walk(this.o.dir);
    let total = files.reduce((a, f) => a + f.size, 0);
    for (const f of files.sort((a, b) => a.at - b.at)) {
      if (total <= max) break;
      await fsp.rm(f.p, { force: true });
      await fsp.rm(`${f.p}.corral-ranges`, { recursive: true, force: true });
      total -= f.size;
    }
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.access(p);
    return true;
  } catch {
    return false;
  }
}
