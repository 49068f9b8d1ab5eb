import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  accessSync,
  constants,
  existsSync,
  promises as fsp,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  unlinkSync,
} from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { STAGING_DIR } from '../../spec/limits.js';
import type { CommitResult, Store } from '../store.js';

/** Options of the folder store. */
export interface FsStoreOptions {
  /** Flush each output to disk before it is committed, so a committed output survives a power loss. @default true */
  readonly fsync?: boolean;
  /** Sub-folder of the staging folder for this job's attempts, so one job can clear its leftovers. @default '' */
  readonly scope?: string;
}

/** Folder inside the store root where attempts stage their outputs. */
export { STAGING_DIR };

/**
 * The embedded Store adapter: outputs are files below a root folder. An attempt writes to
 * `<root>/.corral-staging/…`; commit is `link(2)` to the final path, which fails if the path
 * exists, so the first commit wins atomically and no reader ever sees a partial output.
 * An output folder on another filesystem (a symlink or a mount below the root) cannot take a link
 * from the staging folder (EXDEV): there the output is copied beside its final path under a
 * hidden `.corral-staging.…` name, flushed, and linked from that copy, with the same guarantees.
 */
export class FsStore implements Store {
  readonly location: string;
  private readonly fsync: boolean;
  private readonly stagingRoot: string;
  /** Output folders a link from the staging folder could not reach (EXDEV): commits copy there. */
  private readonly crossDevice = new Set<string>();
  /** Output folders made (or found) already: a commit there needs no mkdir. */
  private readonly made = new Set<string>();
  /** Hashes of recent output keys: a staged name is needed several times per output. */
  private readonly hashes = new Map<string, string>();
  /** Whether the staging folder was made by this store (cleared by `cleanStaging`). */
  private staging = false;
  /** Whether `sync -f` (syncfs(2)) flushes a group of staged files; false after it failed once. */
  private syncfs = process.platform === 'linux';
  /** Folder of the finished outputs staged in this boot (see `finish`); undefined without a boot id. */
  private readonly finishedRoot: string | undefined;
  /** Whether `finishedRoot` was made (and other boots' folders removed) by this store. */
  private finishedMade = false;

  constructor(
    readonly root: string,
    opts: FsStoreOptions = {},
  ) {
    this.location = root;
    this.fsync = opts.fsync ?? true;
    this.stagingRoot = path.join(root, STAGING_DIR, opts.scope ?? '');
    this.finishedRoot = BOOT_ID && path.join(this.stagingRoot, `${FINISHED}${BOOT_ID}`);
  }

  /** Absolute path of a committed output. */
  pathOf(key: string): string {
    const p = path.resolve(this.root, key);
    const rel = path.relative(this.root, p);
    if (rel.startsWith('..') || path.isAbsolute(rel))
      throw new Error(`output ${key} is outside the store root`);
    return p;
  }

  /** Name of an attempt's staged output: unique per output and attempt, ending in the output's name. */
  private stagingName(key: string, attemptId: string): string {
    let h = this.hashes.get(key);
    if (h === undefined) {
      h = createHash('sha1').update(key).digest('hex').slice(0, 16);
      if (this.hashes.size >= 4096) this.hashes.clear();
      this.hashes.set(key, h);
    }
    return `${h}.${attemptId}`;
  }

  /**
   * All attempts stage their outputs as files in one folder (no folder per attempt: a mkdir and
   * an rmdir per output cost as much as the write), each named by a hash of its output key and
   * the attempt, ending in the output's own name (so that its extension is kept).
   */
  private stagingPath(key: string, attemptId: string): string {
    return path.join(this.stagingRoot, `${this.stagingName(key, attemptId)}-${path.basename(key)}`);
  }

  async stage(key: string, attemptId: string): Promise<string> {
    if (!this.staging) {
      await fsp.mkdir(this.stagingRoot, { recursive: true });
      this.staging = true;
    }
    return this.stagingPath(key, attemptId);
  }

  /** Where `finish` moves an attempt's staged output: the same name in this boot's folder. */
  private finishedPath(key: string, attemptId: string): string {
    return path.join(this.finishedRoot!, `${this.stagingName(key, attemptId)}-${path.basename(key)}`);
  }

  /**
   * Marks an attempt's staged output finished (its task succeeded; the output is complete), to
   * be committed with a group later: a rename into a folder named after this machine's boot id
   * (/proc/sys/kernel/random/boot_id), a few microseconds, no flush. If the worker dies before
   * the commit, `adopt` commits it instead of the task running again, but only in the same boot:
   * after a power loss the page cache that held it is gone, so a file of another boot is never
   * trusted (its folder is removed). False when it cannot be marked (no boot id, or no staged
   * file): commit it as usual. Synchronous: it runs in the worker between two tasks.
   */
  finish(key: string, attemptId: string): boolean {
    if (this.finishedRoot === undefined) return false;
    const from = this.stagingPath(key, attemptId);
    for (let tries = 0; tries < 2; tries++) {
      if (!this.finishedMade || tries > 0) this.makeFinishedRoot();
      try {
        renameSync(from, this.finishedPath(key, attemptId));
        return true;
      } catch (err) {
        // no staged file (the task wrote none): told by the commit; else the folder went: make it again
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !existsSync(from)) return false;
      }
    }
    return false;
  }

  /** Makes this boot's folder of finished outputs, and removes those of other boots (never trusted). */
  private makeFinishedRoot(): void {
    mkdirSync(this.finishedRoot!, { recursive: true });
    this.finishedMade = true;
    const mine = path.basename(this.finishedRoot!);
    for (const d of readdirSync(this.stagingRoot))
      if (d.startsWith(FINISHED) && d !== mine)
        rmSync(path.join(this.stagingRoot, d), { recursive: true, force: true });
  }

  /**
   * Commits the output an attempt marked finished (`finish`) but did not commit: its worker died
   * in between. Only one marked in this boot is taken: it is flushed to disk (fdatasync), then
   * linked as `commit` does. Undefined when there is none.
   */
  async adopt(key: string, attemptId: string): Promise<CommitResult | undefined> {
    if (this.finishedRoot === undefined) return undefined;
    const p = this.finishedPath(key, attemptId);
    try {
      if (this.fsync) await flushFile(p, true);
      else await fsp.access(p);
    } catch {
      return undefined;
    }
    const c = await this.commit(key, attemptId, { synced: true, finished: true });
    if (c === 'committed' && this.fsync) await flushFile(path.dirname(this.pathOf(key))).catch(() => {});
    return c;
  }

  /**
   * The plain case of a commit, synchronously: a link (which fails if the output exists) and an
   * unlink of the staged name, microseconds each, where each call through libuv's thread pool
   * cost the worker's event loop a round trip. False where a commit takes more (an output there
   * already, another file system, an error): `commit` does it then.
   */
  private linkSync(staged: string, key: string): boolean {
    const final = this.pathOf(key);
    const dir = path.dirname(final);
    if (this.crossDevice.has(dir)) return false;
    try {
      if (!this.made.has(dir)) {
        mkdirSync(dir, { recursive: true });
        if (this.made.size >= 10_000) this.made.clear();
        this.made.add(dir);
      }
      linkSync(staged, final);
    } catch {
      return false;
    }
    try {
      unlinkSync(staged);
    } catch {
      // left for cleanStaging: the output is committed
    }
    return true;
  }

  /**
   * Commits a group of staged outputs at once (group commit): every staged file is flushed to
   * disk first (one syncfs(2) for the group where Linux has it, else an fdatasync of each file,
   * several at a time), then each is linked to its output path as `commit` does (the first commit
   * wins; a staged file is never visible at the output path before it is on disk), then each
   * output folder touched is flushed once, so the links are on disk when this returns. Results
   * are in the order of `items`; a commit that failed is its Error. An item `finished` was
   * marked by `finish`.
   */
  async commitAll(
    items: ReadonlyArray<{ readonly key: string; readonly attemptId: string; readonly finished?: boolean }>,
  ): Promise<Array<CommitResult | Error>> {
    const source = (x: (typeof items)[number]) =>
      x.finished ? this.finishedPath(x.key, x.attemptId) : this.stagingPath(x.key, x.attemptId);
    const failed = this.fsync ? await this.flushFiles(items.map(source)) : new Map<string, Error>();
    const out: Array<CommitResult | Error> = [];
    const dirs = new Set<string>();
    const one = async (x: (typeof items)[number], k: number) => {
      const from = source(x);
      const err = failed.get(from);
      if (err) {
        // not on disk: never linked
        await unlinkStaged(from).catch(() => {});
        out[k] = err;
        return;
      }
      if (x.finished && this.linkSync(from, x.key)) {
        dirs.add(path.dirname(this.pathOf(x.key)));
        out[k] = 'committed';
        return;
      }
      try {
        const c = await this.commit(x.key, x.attemptId, { synced: true, finished: x.finished });
        if (c === 'committed') dirs.add(path.dirname(this.pathOf(x.key)));
        out[k] = c;
      } catch (err) {
        out[k] = err as Error;
      }
    };
    // several links at once (the file system calls run in libuv's threads)
    let next = 0;
    const lane = async () => {
      while (next < items.length) {
        const k = next++;
        await one(items[k]!, k);
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, items.length) }, lane));
    if (this.fsync) await Promise.all([...dirs].map((d) => flushFile(d).catch(() => {})));
    return out;
  }

  /**
   * Flushes files to disk: one syncfs(2) of their filesystem (`sync -f`), else each file's data.
   * Returns the files that could not be flushed (a missing file is not an error: its commit says so).
   */
  private async flushFiles(files: string[]): Promise<Map<string, Error>> {
    const failed = new Map<string, Error>();
    if (files.length === 0) return failed;
    if (this.syncfs && files.length > 2) {
      if (await syncFs(this.stagingRoot)) return failed;
      this.syncfs = false; // no coreutils sync, or one without -f: flush file by file from now on
    }
    let next = 0;
    const worker = async () => {
      while (next < files.length) {
        const f = files[next++]!;
        await flushFile(f, true).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') failed.set(f, err);
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(16, files.length) }, worker));
    return failed;
  }

  async commit(
    key: string,
    attemptId: string,
    opts: { synced?: boolean; finished?: boolean } = {},
  ): Promise<CommitResult> {
    const staged = opts.finished ? this.finishedPath(key, attemptId) : this.stagingPath(key, attemptId);
    const final = this.pathOf(key);
    const dir = path.dirname(final);
    if (this.crossDevice.has(dir)) return this.commitByCopy(key, attemptId, staged, final);
    if (this.fsync && !opts.synced) {
      let fh: fsp.FileHandle;
      try {
        fh = await fsp.open(staged, 'r');
      } catch {
        return 'missing';
      }
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    if (!this.made.has(dir)) {
      await fsp.mkdir(dir, { recursive: true });
      if (this.made.size >= 10_000) this.made.clear();
      this.made.add(dir);
    }
    try {
      await fsp.link(staged, final).catch(async (err) => {
        // the output folder was removed since it was made: make it again
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        this.made.delete(dir);
        await fsp.mkdir(dir, { recursive: true });
        await fsp.link(staged, final);
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return this.refused(staged, final);
      if (code === 'EXDEV') {
        if (this.crossDevice.size >= 10_000) this.crossDevice.clear();
        this.crossDevice.add(dir);
        return this.commitByCopy(key, attemptId, staged, final);
      }
      if (code === 'ENOENT') {
        try {
          await fsp.access(staged);
        } catch {
          return 'missing';
        }
      }
      throw err;
    }
    await unlinkStaged(staged);
    return 'committed';
  }

  /**
   * Commit to a folder on another filesystem: a copy on the output's filesystem under a hidden
   * name of this attempt (never taken for an output: `list` skips it), flushed, then linked to
   * the final path, which still fails if the output exists, so the first commit wins.
   */
  private async commitByCopy(
    key: string,
    attemptId: string,
    staged: string,
    final: string,
  ): Promise<CommitResult> {
    const dir = path.dirname(final);
    const copy = path.join(dir, `${STAGING_DIR}.${this.stagingName(key, attemptId)}`);
    await fsp.mkdir(dir, { recursive: true });
    try {
      await fsp.copyFile(staged, copy, constants.COPYFILE_EXCL);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        try {
          await fsp.access(staged);
        } catch {
          return 'missing';
        }
      }
      await fsp.rm(copy, { force: true });
      throw err;
    }
    try {
      if (this.fsync) {
        const fh = await fsp.open(copy, 'r');
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      }
      await fsp.link(copy, final);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      return this.refused(staged, final);
    } finally {
      await fsp.rm(copy, { force: true });
    }
    await unlinkStaged(staged);
    return 'committed';
  }

  /**
   * Replaces a committed output with the attempt's (a redo): the staged file is flushed and
   * renamed over the output, so a reader sees the old output or the new one, never none nor a
   * part. Across filesystems it is copied beside the output under a hidden name first.
   */
  async replace(key: string, attemptId: string): Promise<'committed' | 'missing'> {
    const staged = this.stagingPath(key, attemptId);
    const final = this.pathOf(key);
    const dir = path.dirname(final);
    await fsp.mkdir(dir, { recursive: true });
    let from = staged;
    if (this.crossDevice.has(dir) || !(await sameDevice(staged, dir))) {
      from = path.join(dir, `${STAGING_DIR}.${this.stagingName(key, attemptId)}`);
      try {
        await fsp.copyFile(staged, from);
      } catch (err) {
        await fsp.rm(from, { force: true });
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
        throw err;
      }
    }
    try {
      if (this.fsync) {
        let fh: fsp.FileHandle;
        try {
          fh = await fsp.open(from, 'r');
        } catch {
          return 'missing';
        }
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      }
      try {
        await fsp.rename(from, final);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
        throw err;
      }
    } finally {
      if (from !== staged) await fsp.rm(from, { force: true });
      await this.discard(key, attemptId);
    }
    return 'committed';
  }

  /**
   * A commit refused because a file is at the output path: `duplicate` when it holds the same
   * bytes as this attempt's output, `conflict` when it differs (an earlier attempt of a task that
   * does not write the same bytes twice, or another writer: see CommitResult). Either way the
   * file there stays as it is and this attempt's output is dropped.
   */
  private async refused(staged: string, final: string): Promise<CommitResult> {
    const same = await sameContent(staged, final).catch(() => false);
    await unlinkStaged(staged);
    return same ? 'duplicate' : 'conflict';
  }

  async discard(key: string, attemptId: string): Promise<void> {
    await unlinkStaged(this.stagingPath(key, attemptId));
  }

  /**
   * Removes this store's staging (attempts of workers that were killed leave theirs behind), and
   * the staging folder itself if no other job uses it. Call it when no attempt of the scope runs.
   */
  cleanStaging(): void {
    this.staging = false;
    rmSync(this.stagingRoot, { recursive: true, force: true });
    try {
      rmdirSync(path.join(this.root, STAGING_DIR));
    } catch {
      // another job's attempts are there, or it is gone already
    }
  }

  async exists(key: string): Promise<boolean> {
    // synchronous: a worker asks before each task, and a round trip through libuv's thread pool
    // cost more than the call
    return existsSync(this.pathOf(key));
  }

  async *list(prefix = ''): AsyncIterable<string> {
    const base = this.pathOf(prefix || '.');
    // folders by device and inode: a symlinked folder (e.g. out/ on another disk) is walked once
    const seen = new Set<string>();
    const walk = async function* (dir: string, rel: string): AsyncIterable<string> {
      let entries: import('node:fs').Dirent[];
      try {
        const st = await fsp.stat(dir);
        if (seen.has(`${st.dev}:${st.ino}`)) return;
        seen.add(`${st.dev}:${st.ino}`);
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
        // the staging folder, and the copies of commits to another filesystem (see commitByCopy)
        if (e.name === STAGING_DIR || e.name.startsWith(`${STAGING_DIR}.`)) continue;
        const r = rel ? `${rel}/${e.name}` : e.name;
        const p = path.join(dir, e.name);
        const isDir =
          e.isDirectory() ||
          (e.isSymbolicLink() && (await fsp.stat(p).catch(() => undefined))?.isDirectory());
        if (isDir) yield* walk(p, r);
        else yield r;
      }
    };
    const relBase = path.relative(this.root, base).split(path.sep).join('/');
    yield* walk(base, relBase === '.' ? '' : relBase);
  }
}

/**
 * syscall(2) numbers of syncfs, by Node's `process.arch` (Linux): x86-64's own table, and the
 * generic one of arm64 and riscv64. Elsewhere the flush runs `sync -f`.
 */
const SYNCFS_NR: Readonly<Record<string, number>> = { x64: 306, arm64: 267, riscv64: 267 };

/**
 * How a worker calls syncfs(2), which Node has no call for: a program kept for the life of the
 * process that flushes the file system of each folder written on its stdin and answers 0 (done)
 * or 1 (failed). Where perl is (perl-base is Essential on Debian), perl calls syncfs itself
 * (`syscall`): one write and one read on a pipe per group. Otherwise a shell runs `sync -f DIR`,
 * a fork and exec of coreutils' sync per group: in a run of 5,000 tasks with outputs those ~600
 * process starts were ~30 % of the run's CPU (BENCHMARKS.md, row 9). A `sync` first in PATH that
 * is not the system's (/bin or /usr/bin) is someone's wrapper (a site's own flush, a test that
 * slows the flush down): it is run as before.
 */
function syncerCommand(): [string, string[]] {
  const shell: [string, string[]] = [
    '/bin/sh',
    ['-c', 'while IFS= read -r d; do sync -f "$d"; echo $?; done'],
  ];
  const nr = SYNCFS_NR[process.arch];
  const perl = ['/usr/bin/perl', '/bin/perl'].find((p) => existsSync(p));
  if (nr === undefined || perl === undefined || !systemSync()) return shell;
  return [
    perl,
    [
      '-e',
      `$| = 1; while (defined(my $d = <STDIN>)) { chomp $d; my $r = 1; if (open(my $fh, '<', $d)) { $r = syscall(${nr}, fileno($fh)) == 0 ? 0 : 1; close($fh); } print "$r\n"; }`,
    ],
  ];
}

/** Whether the first `sync` in PATH is the system's (or there is none): not a wrapper to honour. */
function systemSync(): boolean {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const p = path.join(dir, 'sync');
    try {
      accessSync(p, constants.X_OK);
    } catch {
      continue;
    }
    try {
      const real = realpathSync(p);
      return real === '/usr/bin/sync' || real === '/bin/sync';
    } catch {
      return false;
    }
  }
  return true;
}

/** The syncfs caller of this process (see `syncerCommand`); undefined until first needed. */
let syncer: { child: ChildProcess; waiting: Array<(ok: boolean) => void> } | undefined;

/** Flushes the file system holding `dir` to disk (syncfs); false if that could not be done. */
function syncFs(dir: string): Promise<boolean> {
  if (dir.includes('\n')) return Promise.resolve(false);
  if (!syncer) {
    const [file, args] = syncerCommand();
    const child = spawn(file, args, {
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    const s = { child, waiting: [] as Array<(ok: boolean) => void> };
    const fail = () => {
      if (syncer === s) syncer = undefined;
      for (const w of s.waiting.splice(0)) w(false);
    };
    child.on('error', fail);
    child.on('exit', fail);
    child.stdin!.on('error', fail);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      s.waiting.shift()?.(line.trim() === '0');
      if (s.waiting.length === 0) idle(s, true);
    });
    syncer = s;
  }
  const s = syncer;
  idle(s, false);
  return new Promise((resolve) => {
    s.waiting.push(resolve);
    s.child.stdin!.write(`${dir}\n`);
  });
}

/** Lets the process exit while the syncfs caller waits for work (or not, while it works). */
function idle(s: { child: ChildProcess }, yes: boolean): void {
  const handles = [s.child, s.child.stdin, s.child.stdout] as Array<{ ref(): void; unref(): void } | null>;
  for (const h of handles) yes ? h?.unref() : h?.ref();
}

/** Prefix of the folder of the finished outputs of one boot, in a store's staging folder (see `FsStore.finish`). */
const FINISHED = 'finished-';

/** This machine's boot id (Linux), read once; undefined elsewhere (outputs are then never marked finished). */
const BOOT_ID = ((): string | undefined => {
  try {
    const id = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return /^[0-9a-f-]{16,64}$/i.test(id) ? id : undefined;
  } catch {
    return undefined;
  }
})();

/** Removes a staged output (a file, or the folder a task made there). */
async function unlinkStaged(p: string): Promise<void> {
  try {
    await fsp.unlink(p); // one call (fs.rm lstats first): this runs once per output
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    // a task may have made a folder at its output path
    if (code === 'EISDIR' || code === 'EPERM') await fsp.rm(p, { recursive: true, force: true });
    else throw err;
  }
}

/** Flushes a file (its data only with `dataOnly`) or a folder to disk. */
async function flushFile(p: string, dataOnly = false): Promise<void> {
  const fh = await fsp.open(p, 'r');
  try {
    await (dataOnly ? fh.datasync() : fh.sync());
  } finally {
    await fh.close();
  }
}

/** Whether two files hold the same bytes (read in blocks, stopping at the first difference). */
async function sameContent(a: string, b: string): Promise<boolean> {
  const [fa, fb] = await Promise.all([fsp.open(a, 'r'), fsp.open(b, 'r')]);
  try {
    const [sa, sb] = await Promise.all([fa.stat(), fb.stat()]);
    if (sa.size !== sb.size) return false;
    const ba = Buffer.allocUnsafe(1 << 16);
    const bb = Buffer.allocUnsafe(1 << 16);
    for (let pos = 0; pos < sa.size; ) {
      const [ra, rb] = await Promise.all([fa.read(ba, 0, ba.length, pos), fb.read(bb, 0, bb.length, pos)]);
      if (ra.bytesRead === 0 || ra.bytesRead !== rb.bytesRead) return false;
      if (!ba.subarray(0, ra.bytesRead).equals(bb.subarray(0, rb.bytesRead))) return false;
      pos += ra.bytesRead;
    }
    return true;
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

/** Whether a file (a staged output) is on the filesystem of a folder, so that a rename can move it there. */
async function sameDevice(file: string, dir: string): Promise<boolean> {
  try {
    const [a, b] = await Promise.all([fsp.stat(file), fsp.stat(dir)]);
    return a.dev === b.dev;
  } catch {
    return true; // a missing staged file is told by the rename
  }
}
