import { isUtf8 } from 'node:buffer';
import { createReadStream, readdir, readdirSync } from 'node:fs';
import path from 'node:path';

/**
 * File names that are not UTF-8. Node decodes a name as UTF-8, so such a name reaches a glob's
 * results with U+FFFD in place of its bytes: a path that names no file (its task fails at run
 * time), and a folder so named cannot be read (its files are silently left out). Planning refuses
 * them, naming the file with its bytes escaped.
 */

/** The replacement character that a name's undecodable bytes become. */
const MANGLED = '\uFFFD';

/** A name's bytes for a message and a shell: UTF-8 as is, other bytes (and controls) as `\xNN`, as bash's `$'…'` reads them. */
export function escapeName(raw: Buffer): string {
  let out = '';
  for (let i = 0; i < raw.length; ) {
    const b = raw[i]!;
    const n = b >= 0xf0 && b <= 0xf4 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 && b < 0xe0 ? 2 : 1;
    if (n > 1 && b >= 0x80 && isUtf8(raw.subarray(i, i + n))) {
      out += raw.subarray(i, i + n).toString('utf8');
      i += n;
      continue;
    }
    if (b === 0x5c || b === 0x27) out += `\\${String.fromCharCode(b)}`;
    else if (b >= 0x20 && b < 0x7f) out += String.fromCharCode(b);
    else out += `\\x${b.toString(16).padStart(2, '0')}`;
    i++;
  }
  return out;
}

/**
 * The entry of folder `dir` that is not UTF-8 and reads as `name` once decoded, or undefined
 * (`name` holds a real U+FFFD, or the entry is gone).
 */
function undecodable(dir: string, name: string): Buffer | undefined {
  let raw: Buffer[];
  try {
    raw = readdirSync(dir, { encoding: 'buffer' });
  } catch {
    return undefined;
  }
  return raw.find((b) => !isUtf8(b) && b.toString('utf8') === name);
}

/**
 * Watches a glob's walk for folders whose names are not UTF-8 (fast-glob's `fs` option): their
 * decoded names do not exist, and the walk skips them without a word.
 */
export function watchWalk(): {
  fs: { readdir: (...args: unknown[]) => void };
  suspects: string[];
} {
  const suspects: string[] = [];
  const watched = (...args: unknown[]): void => {
    const p = args[0] as string;
    const cb = args.at(-1) as (err: NodeJS.ErrnoException | null, v?: unknown) => void;
    const done = (err: NodeJS.ErrnoException | null, v?: unknown) => {
      if (err?.code === 'ENOENT' && p.includes(MANGLED)) suspects.push(p);
      cb(err, v);
    };
    if (args.length > 2) readdir(p, args[1] as { withFileTypes: true }, done);
    else readdir(p, done);
  };
  return { fs: { readdir: watched }, suspects };
}

/**
 * The first of `paths` (absolute, as a glob found them, or folders it could not read) whose name
 * is not UTF-8, as `baseDir`-relative text with its bytes escaped; undefined when all are UTF-8.
 */
export function firstUndecodable(baseDir: string, paths: Iterable<string>): string | undefined {
  for (const p of paths) {
    if (!p.includes(MANGLED)) continue;
    const raw = undecodable(path.dirname(p), path.basename(p));
    if (!raw) continue;
    const dir = path.relative(baseDir, path.dirname(p)).split(path.sep).join('/');
    return (dir ? `${dir}/` : '') + escapeName(raw);
  }
  return undefined;
}

/**
 * The first line of a file that is not UTF-8 (1-based, counted by line feeds) with its start
 * escaped, or undefined. One pass checks whole lines at a time (a line feed is never inside a
 * UTF-8 sequence); only a file with such a line is read again, line by line, to number it.
 */
export async function firstUndecodableLine(file: string): Promise<{ n: number; text: string } | undefined> {
  let carry: Buffer | undefined;
  let ok = true;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    const buf = carry ? Buffer.concat([carry, chunk]) : chunk;
    const last = buf.lastIndexOf(10);
    if (last >= 0 && !isUtf8(buf.subarray(0, last + 1))) {
      ok = false;
      break;
    }
    carry = last >= 0 ? buf.subarray(last + 1) : buf;
  }
  if (ok && (!carry || isUtf8(carry))) return undefined;
  let n = 0;
  let rest: Buffer = Buffer.alloc(0);
  const check = (line: Buffer) => {
    n++;
    return isUtf8(line) ? undefined : { n, text: escapeName(line.subarray(0, 60)) };
  };
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    let buf = rest.length ? Buffer.concat([rest, chunk]) : chunk;
    for (let at = buf.indexOf(10); at >= 0; at = buf.indexOf(10)) {
      const bad = check(buf.subarray(0, at));
      if (bad) return bad;
      buf = buf.subarray(at + 1);
    }
    rest = buf;
  }
  return rest.length ? check(rest) : undefined;
}
