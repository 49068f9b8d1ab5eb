import { createHash } from 'node:crypto';
import { promises as fsp, rmdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { STAGING_DIR } from '../../spec/limits.js';
import type { Store } from '../store.js';

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
 */
export class FsStore implements Store {
  readonly location: string;
  private readonly fsync: boolean;
  private readonly stagingRoot: string;

  constructor(
    readonly root: string,
    opts: FsStoreOptions = {},
  ) {
    this.location = root;
    this.fsync = opts.fsync ?? true;
    this.stagingRoot = path.join(root, STAGING_DIR, opts.scope ?? '');
  }

  /** Absolute path of a committed output. */
  pathOf(key: string): string {
    const p = path.resolve(this.root, key);
    const rel = path.relative(this.root, p);
    if (rel.startsWith('..') || path.isAbsolute(rel))
      throw new Error(`output ${key} is outside the store root`);
    return p;
  }

  private stagingPath(key: string, attemptId: string): string {
    const h = createHash('sha1').update(key).digest('hex').slice(0, 16);
    return path.join(this.stagingRoot, `${h}.${attemptId}`, path.basename(key));
  }

  async stage(key: string, attemptId: string): Promise<string> {
    const p = this.stagingPath(key, attemptId);
    await fsp.mkdir(path.dirname(p), { recursive: true });
    return p;
  }

  async commit(key: string, attemptId: string): Promise<'committed' | 'duplicate' | 'missing'> {
    const staged = this.stagingPath(key, attemptId);
    const final = this.pathOf(key);
    if (this.fsync) {
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
    await fsp.mkdir(path.dirname(final), { recursive: true });
    try {
      await fsp.link(staged, final);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') {
        await this.discard(key, attemptId);
        return 'duplicate';
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
    await this.discard(key, attemptId);
    return 'committed';
  }

  async discard(key: string, attemptId: string): Promise<void> {
    await fsp.rm(path.dirname(this.stagingPath(key, attemptId)), { recursive: true, force: true });
  }

  /**
   * Removes this store's staging (attempts of workers that were killed leave theirs behind), and
   * the staging folder itself if no other job uses it. Call it when no attempt of the scope runs.
   */
  cleanStaging(): void {
    rmSync(this.stagingRoot, { recursive: true, force: true });
    try {
      rmdirSync(path.join(this.root, STAGING_DIR));
    } catch {
      // another job's attempts are there, or it is gone already
    }
  }

  async exists(key: string): Promise<boolean> {
    try {
      await fsp.access(this.pathOf(key));
      return true;
    } catch {
      return false;
    }
  }

  async *list(prefix = ''): AsyncIterable<string> {
    const base = this.pathOf(prefix || '.');
    const walk = async function* (dir: string, rel: string): AsyncIterable<string> {
      let entries: import('node:fs').Dirent[];
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
        if (e.name === STAGING_DIR) continue;
        const r = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) yield* walk(path.join(dir, e.name), r);
        else yield r;
      }
    };
    const relBase = path.relative(this.root, base).split(path.sep).join('/');
    yield* walk(base, relBase === '.' ? '' : relBase);
  }
}
