// The `s3://` inputs of a cluster run: lists, heads and reads the objects a map names, for the
// engine's expansion (its ObjectInputs port). Moved whole from src/engine/expand.ts.
import type { ListObjectsV2CommandOutput, S3Client } from '@aws-sdk/client-s3';
import { keyGlobRegExp, NEWLINE_WINDOW, parseS3Url } from '../../engine/expand.js';
import type { ObjectInputs } from '../../engine/ports.js';
import { UsageError } from '../../spec/errors.js';

/** The ObjectInputs port over an S3 client. */
export function s3Inputs(client: S3Client): ObjectInputs {
  return {
    match: (url, field) => matchObjects(client, url, field),
    chunkRanges: (o, chunkSize, align) => s3ChunkRanges(client, o, chunkSize, align),
  };
}

/** Objects of an `s3://bucket/key-or-glob` input with their sizes, in key order. */
async function matchObjects(
  client: S3Client,
  url: string,
  field: string,
): Promise<Array<{ bucket: string; key: string; size: number }>> {
  const { bucket, key: pattern } = parseS3Url(url);
  if (!bucket || !pattern)
    throw new UsageError(
      field,
      `"${url}" names no object`,
      'write it as s3://BUCKET/KEY or s3://BUCKET/PREFIX/*.csv',
    );
  const { HeadObjectCommand, ListObjectsV2Command } = await import('@aws-sdk/client-s3');
  const wild = pattern.search(/[*?]/);
  if (wild < 0) {
    try {
      const h = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: pattern }));
      return [{ bucket, key: pattern, size: h.ContentLength ?? 0 }];
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404 || status === 403)
        throw new UsageError(
          field,
          `${url} does not exist (or is not readable)`,
          'fix the URL or upload the object',
        );
      throw err;
    }
  }
  const re = keyGlobRegExp(pattern);
  const prefix = pattern.slice(0, wild);
  const out: Array<{ bucket: string; key: string; size: number }> = [];
  let token: string | undefined;
  do {
    let r: ListObjectsV2CommandOutput;
    try {
      r = await client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
      );
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404 || status === 403)
        throw new UsageError(
          field,
          `cannot list s3://${bucket}/${prefix} (${(err as Error).name})`,
          'fix the bucket name or grant the role s3:ListBucket on it',
        );
      throw err;
    }
    for (const o of r.Contents ?? [])
      if (o.Key !== undefined && !o.Key.endsWith('/') && re.test(o.Key))
        out.push({ bucket, key: o.Key, size: o.Size ?? 0 });
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  if (out.length === 0)
    throw new UsageError(field, `"${url}" matches no object`, 'fix the glob or upload the inputs');
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** Offset just past the first newline at or after `from` in an S3 object (ranged GETs), or its size. */
async function nextLineStartS3(
  client: S3Client,
  bucket: string,
  key: string,
  from: number,
  size: number,
): Promise<number> {
  const { GetObjectCommand } = await import('@aws-sdk/client-s3');
  let pos = from;
  while (pos < size) {
    const last = Math.min(size, pos + NEWLINE_WINDOW) - 1;
    const r = await client.send(
      new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${pos}-${last}` }),
    );
    const buf = Buffer.from(await r.Body!.transformToByteArray());
    if (buf.length === 0) break;
    const nl = buf.indexOf(10);
    if (nl >= 0) return pos + nl + 1;
    pos += buf.length;
  }
  return size;
}

/** Byte ranges `[start, end)` of an S3 object, like `chunkRanges` for a local file. */
export async function s3ChunkRanges(
  client: S3Client,
  o: { bucket: string; key: string; size: number },
  chunkSize: number,
  align: 'newline' | 'none',
): Promise<Array<[number, number]>> {
  const out: Array<[number, number]> = [];
  let start = 0;
  while (start < o.size) {
    let end = Math.min(o.size, start + chunkSize);
    if (align === 'newline' && end < o.size)
      end = await nextLineStartS3(client, o.bucket, o.key, end - 1, o.size);
    out.push([start, end]);
    start = end;
  }
  return out;
}
