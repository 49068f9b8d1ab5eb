import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
// The S3 SDK and fast-glob load only when an input needs them: importing them cost every
// `corral run` of a local job ~115 ms and ~14 ms of CPU before its first task.
import type { TaskPayload } from '../queue/queue.js';
import { UsageError } from '../spec/errors.js';
import type { LoadedJob, StepDef } from '../spec/job.js';
import { firstUndecodable, firstUndecodableLine, watchWalk } from './file-names.js';
import type { ObjectInputs } from './ports.js';
import { outputKey } from './template.js';

export const NEWLINE_WINDOW = 64 * 1024;

function relPath(baseDir: string, abs: string): string {
  return path.relative(baseDir, abs).split(path.sep).join('/');
}

/** Characters without which a path cannot be a glob (fast-glob decides when one is there). */
const GLOB_CHARS = /[*?[\]{}()!+@]/;

async function matchFiles(baseDir: string, pattern: string, field: string): Promise<string[]> {
  const fg = GLOB_CHARS.test(pattern) ? (await import('fast-glob')).default : undefined;
  const isGlob = fg?.isDynamicPattern(pattern) ?? false;
  if (!isGlob) {
    const abs = path.resolve(baseDir, pattern);
    try {
      const st = await fsp.stat(abs);
      if (!st.isFile())
        throw new UsageError(field, `${pattern} is not a file`, 'point it at a file or a glob of files');
    } catch (err) {
      if (err instanceof UsageError) throw err;
      throw new UsageError(
        field,
        `input ${abs} does not exist`,
        'create the input or fix the path (relative to the job file)',
      );
    }
    return [abs];
  }
  const walk = watchWalk();
  const found = await fg!(pattern, {
    cwd: baseDir,
    absolute: true,
    onlyFiles: true,
    dot: false,
    followSymbolicLinks: true,
    fs: walk.fs as object,
  });
  const bad = firstUndecodable(baseDir, [...walk.suspects, ...found]);
  if (bad !== undefined)
    throw new UsageError(
      field,
      `"${pattern}" reaches ${bad}, whose name is not UTF-8 (corral cannot pass it to a task)`,
      `rename it to UTF-8, e.g. mv $'${bad}' NEW-NAME, or narrow the glob`,
    );
  if (found.length === 0) {
    throw new UsageError(
      field,
      `"${pattern}" matches no file in ${baseDir}`,
      'fix the glob or add the input files',
    );
  }
  return found.sort();
}

/** Finds the offset just past the first newline at or after `from`, or the file size. */
async function nextLineStart(fh: fsp.FileHandle, from: number, size: number): Promise<number> {
  const buf = Buffer.allocUnsafe(NEWLINE_WINDOW);
  let pos = from;
  while (pos < size) {
    const { bytesRead } = await fh.read(buf, 0, NEWLINE_WINDOW, pos);
    if (bytesRead === 0) break;
    const nl = buf.subarray(0, bytesRead).indexOf(10);
    if (nl >= 0) return pos + nl + 1;
    pos += bytesRead;
  }
  return size;
}

/** Byte ranges `[start, end)` of a file, optionally with boundaries moved past the next newline. */
export async function chunkRanges(
  file: string,
  chunkSize: number,
  align: 'newline' | 'none',
): Promise<Array<[number, number]>> {
  const fh = await fsp.open(file, 'r');
  try {
    const { size } = await fh.stat();
    const out: Array<[number, number]> = [];
    let start = 0;
    while (start < size) {
      let end = Math.min(size, start + chunkSize);
      if (align === 'newline' && end < size) end = await nextLineStart(fh, end - 1, size);
      out.push([start, end]);
      start = end;
    }
    return out;
  } finally {
    await fh.close();
  }
}

/** True for an `s3://bucket/key` input. */
export function isS3Url(v: string): boolean {
  return v.startsWith('s3://');
}

/** Bucket and key of an `s3://bucket/key` URL. */
export function parseS3Url(url: string): { bucket: string; key: string } {
  const rest = url.slice('s3://'.length);
  const slash = rest.indexOf('/');
  return slash < 0 ? { bucket: rest, key: '' } : { bucket: rest.slice(0, slash), key: rest.slice(slash + 1) };
}

/** A key glob as a RegExp: `*` and `?` within a path segment, `**` across segments. */
export function keyGlobRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*' && glob[i + 1] === '*') {
      i++;
      if (glob[i + 1] === '/') {
        i++;
        re += '(?:.*/)?';
      } else re += '.*';
    } else if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** Options of `expandFileMap`. */
export interface ExpandOptions {
  /** Lists and reads `s3://` inputs; without it (a local run) such inputs are refused. @default - none */
  readonly s3?: ObjectInputs;
  /**
   * Records each local input file's size and mtime in its tasks: a chunk task checks them before
   * it runs, and a re-run finds the inputs that changed since their outputs were made (glob
   * maps). Only where workers read the very file that was planned (a local run), not a copy.
   * @default false
   */
  readonly stamp?: boolean;
}

/**
 * The tasks of a step whose inputs are files, lines or chunks, in order, without holding them all
 * in memory (line maps stream their file; glob and chunk maps hold the list of file names).
 * `s3://` globs and chunks (cluster runs only) give payloads whose `p` is the object's URL.
 */
export async function* expandFileMap(
  job: LoadedJob,
  step: StepDef,
  opts: ExpandOptions = {},
): AsyncGenerator<TaskPayload> {
  const { baseDir } = job;
  const map = step.map;
  if (!map) return;
  const field = job.spec.tasks ? 'tasks.map' : `steps[${job.steps.indexOf(step)}].map`;
  const withOutput = (p: TaskPayload): TaskPayload =>
    step.outputs ? { ...p, o: outputKey(step.outputs, p, baseDir) } : p;
  let i = 0;
  for (const k of ['glob', 'chunks', 'lines'] as const) {
    const v = map[k];
    if (v === undefined || !isS3Url(v)) continue;
    if (k === 'lines')
      throw new UsageError(
        `${field}.lines`,
        's3:// is not supported for lines',
        'download the file and use a local path',
      );
    if (!opts.s3)
      throw new UsageError(
        `${field}.${k}`,
        `${v} is in S3; s3:// inputs run only on a cluster`,
        'run it with --cluster NAME',
      );
    const objects = await opts.s3.match(v, `${field}.${k}`);
    for (const o of objects) {
      const p = `s3://${o.bucket}/${o.key}`;
      if (k === 'glob') yield withOutput({ i: i++, p });
      else
        for (const [s, e] of await opts.s3.chunkRanges(o, map.chunkSize, map.align))
          yield withOutput({ i: i++, p, s, e });
    }
    return;
  }
  if (map.glob !== undefined) {
    for (const f of await matchFiles(baseDir, map.glob, `${field}.glob`)) {
      const st = opts.stamp ? await fsp.stat(f) : undefined;
      yield withOutput({ i: i++, p: relPath(baseDir, f), ...(st ? { z: st.size, m: st.mtimeMs } : {}) });
    }
  } else if (map.chunks !== undefined) {
    for (const f of await matchFiles(baseDir, map.chunks, `${field}.chunks`)) {
      const p = relPath(baseDir, f);
      // stated before the ranges are read: a change meanwhile shows as a difference too
      const st = opts.stamp ? await fsp.stat(f) : undefined;
      const stamp = st ? { z: st.size, m: st.mtimeMs } : {};
      for (const [s, e] of await chunkRanges(f, map.chunkSize, map.align))
        yield withOutput({ i: i++, p, s, e, ...stamp });
    }
  } else if (map.lines !== undefined) {
    const [file] = await matchFiles(baseDir, map.lines, `${field}.lines`);
    // bytes that are not UTF-8 would reach a task as U+FFFD, another line than the file's
    const bad = await firstUndecodableLine(file!);
    if (bad)
      throw new UsageError(
        `${field}.lines`,
        `line ${bad.n} of ${relPath(baseDir, file!)} is not UTF-8 text ("${bad.text}")`,
        'convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8',
      );
    const rl = createInterface({ input: createReadStream(file!), crlfDelay: Number.POSITIVE_INFINITY });
    let n = 0;
    for await (const line of rl) {
      n++;
      if (line.trim() === '') continue;
      yield withOutput({ i: i++, l: line, n });
    }
  }
}

/**
 * How many tasks a local `lines` map gives, counted up to `limit` (the count stops past it),
 * without planning them: the file's lines, blank ones too (so it may count a few more).
 */
export async function countLinesUpTo(job: LoadedJob, lines: string, limit: number): Promise<number> {
  const [file] = await matchFiles(job.baseDir, lines, 'map.lines');
  let n = 0;
  let last = 10;
  for await (const chunk of createReadStream(file!) as AsyncIterable<Buffer>) {
    for (let at = chunk.indexOf(10); at >= 0; at = chunk.indexOf(10, at + 1)) n++;
    last = chunk[chunk.length - 1] ?? last;
    if (n > limit) return n;
  }
  return last === 10 ? n : n + 1;
}

/** The tasks of a map job (its one step). */
export function expandTasks(job: LoadedJob, opts: ExpandOptions = {}): AsyncGenerator<TaskPayload> {
  return expandFileMap(job, job.steps[0]!, opts);
}
