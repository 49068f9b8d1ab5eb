import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { CLI, tempDir, writeFiles } from './helpers.js';

/**
 * Runs `corral run` on a real pseudo-terminal of `cols` columns (util-linux `script`), as a user
 * sees it, and returns every frame the progress bar drew.
 */
async function barFrames(
  dir: string,
  cols: number,
): Promise<{ frames: string[]; code: number | null; raw: string }> {
  const child = spawn(
    'script',
    [
      '-qefc',
      `stty cols ${cols} rows 24; exec "${process.execPath}" "${CLI}" run job.yaml -c 2`,
      '/dev/null',
    ],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let raw = '';
  child.stdout.on('data', (d) => {
    raw += d;
  });
  child.stderr.on('data', (d) => {
    raw += d;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  clearTimeout(timer);
  // each frame is drawn after cursor moves (ESC 7, ESC [1G, ESC [0K…): every escape ends a line
  const plain = raw.replace(/\x1b(\[[0-9;?]*[A-Za-z]|[78])/g, '\n');
  const frames = plain.split(/\r|\n/).filter((l) => /\d+\/\d+ done/.test(l));
  return { frames, code, raw: plain };
}

for (const cols of [60, 80, 120]) {
  test(`the progress bar at ${cols} columns: fits, keeps the failed count, ETA with a unit or --, never more running than workers (issue 22, item 5)`, async (t) => {
    const dir = tempDir(t);
    const n = 300;
    writeFiles(dir, {
      'n.txt': `${Array.from({ length: n }, (_, i) => i).join('\n')}\n`,
      'job.yaml': `name: bar
tasks:
  map: { lines: n.txt }
  command: 'if [ {input} = 7 ]; then exit 3; fi; sleep 0.01'
retries: { maxAttempts: 1 }
`,
    });
    const { frames, code, raw } = await barFrames(dir, cols);
    assert.equal(code, 1, raw.slice(-2000));
    assert.ok(frames.length > 0, `no bar drawn:\n${raw.slice(-2000)}`);
    for (const f of frames) {
      assert.ok(f.length <= cols, `wider than ${cols} columns: ${JSON.stringify(f)}`);
      assert.doesNotMatch(f, /INF/, f);
      assert.match(f, /ETA (--|\d+(\.\d)?s|\d+m\d\ds|\d+h\d\dm)(\s|$)/, f);
      const running = Number(/running (\d+)/.exec(f)?.[1]);
      assert.ok(running <= 2, `running ${running} with -c 2: ${f}`);
    }
    const last = frames.at(-1)!;
    assert.match(last, new RegExp(`${n - 1}/${n} done · failed 1 ·`), last);
  });
}
