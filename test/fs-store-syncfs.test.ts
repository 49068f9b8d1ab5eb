import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { FsStore } from '../src/store/fs/fs-store.js';
import { tempDir } from './helpers.js';

/** This process's child processes, as `pid:comm` (Linux). */
function children(): string[] {
  const pids = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim();
  return pids
    .split(' ')
    .filter(Boolean)
    .map((pid) => {
      try {
        return `${pid}:${readFileSync(`/proc/${pid}/comm`, 'utf8').trim()}`;
      } catch {
        return `${pid}:gone`;
      }
    });
}

const perl = ['/usr/bin/perl', '/bin/perl'].some((p) => existsSync(p));

test('group commits flush with syncfs(2) called by one perl process kept for the life of the process, not a process started per group', async (t) => {
  assert.ok(perl, 'perl-base is there (Debian: Essential)');
  const dir = tempDir(t);
  const store = new FsStore(dir, { scope: 'job' });
  // the test's own (the TypeScript loader's esbuild) are not the store's
  const before = new Set(children());
  const seen = new Set<string>();
  for (let g = 0; g < 6; g++) {
    const items = [];
    for (let i = 0; i < 3; i++) {
      const key = `out/${g}-${i}.txt`;
      writeFileSync(await store.stage(key, '1-w'), `${g} ${i}\n`);
      items.push({ key, attemptId: '1-w' });
    }
    assert.deepEqual(await store.commitAll(items), ['committed', 'committed', 'committed']);
    for (const c of children()) if (!before.has(c)) seen.add(c);
  }
  for (let g = 0; g < 6; g++)
    for (let i = 0; i < 3; i++)
      assert.equal(readFileSync(path.join(dir, `out/${g}-${i}.txt`), 'utf8'), `${g} ${i}\n`);
  // one helper for every group: a perl that calls syncfs itself (a shell that started
  // coreutils' sync for each group cost ~30 % of a run's CPU: BENCHMARKS.md, row 9)
  const helpers = [...seen];
  assert.equal(helpers.length, 1, `children seen: ${helpers.join(', ')}`);
  assert.match(helpers[0]!, /:perl$/);
});
