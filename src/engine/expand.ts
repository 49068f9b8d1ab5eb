import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import fg from 'fast-glob';
import type { TaskPayload } from '../queue/queue.js';
import { UsageError } from '../spec/errors.js';
import type { LoadedJob, StepDef } from '../spec/job.js';
import { outputKey } from './template.js';

const NEWLINE_WINDOW = 64 * 1024;

function relPath(baseDir: string, abs: string): string {
  return path.relative(baseDir, abs).split(path.sep).join('/');
}

async function matchFiles(baseDir: string, pattern: string, field: string): Promise<string[]> {
  const isGlob = fg.isDynamicPattern(pattern);
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
  const found = await fg(pattern, {
    cwd: baseDir,
    absolute: true,
    onlyFiles: true,
    dot: false,
    followSymbolicLinks: true,
  });
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

/**
 * The tasks of a step whose inputs are files, lines or chunks, in order, without holding them all
 * in memory (line maps stream their file; glob and chunk maps hold the list of file names).
 */
export async function* expandFileMap(job: LoadedJob, step: StepDef): AsyncGenerator<TaskPayload> {
  const { baseDir } = job;
  const map = step.map;
  if (!map) return;
  const field = job.spec.tasks ? 'tasks.map' : `steps[${job.steps.indexOf(step)}].map`;
  const withOutput = (p: TaskPayload): TaskPayload =>
    step.outputs ? { ...p, o: outputKey(step.outputs, p, baseDir) } : p;
  let i = 0;
  if (map.glob !== undefined) {
    for (const f of await matchFiles(baseDir, map.glob, `${field}.glob`))
      yield withOutput({ i: i++, p: relPath(baseDir, f) });
  } else if (map.chunks !== undefined) {
    for (const f of await matchFiles(baseDir, map.chunks, `${field}.chunks`)) {
      const p = relPath(baseDir, f);
      for (const [s, e] of await chunkRanges(f, map.chunkSize, map.align))
        yield withOutput({ i: i++, p, s, e });
    }
  } else if (map.lines !== undefined) {
    const [file] = await matchFiles(baseDir, map.lines, `${field}.lines`);
    const rl = createInterface({ input: createReadStream(file!), crlfDelay: Number.POSITIVE_INFINITY });
    for await (const line of rl) {
      if (line.trim() === '') continue;
      yield withOutput({ i: i++, l: line });
    }
  }
}

/** The tasks of a map job (its one step). */
export function expandTasks(job: LoadedJob): AsyncGenerator<TaskPayload> {
  return expandFileMap(job, job.steps[0]!);
}
