/**
 * The build's vendored libraries (scripts/bundle-vendor.mjs): zod, yaml and pino load from one
 * CommonJS bundle each, through V8's code cache written at build time, in a plain Node like the
 * CLI's; and they work as the libraries themselves do.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from './helpers.js';

test('zod, yaml and pino load from their bundles with the code cache V8 accepts', () => {
  for (const name of ['zod', 'yaml', 'pino']) {
    assert.ok(existsSync(path.join(ROOT, 'dist/vendor', `${name}.cjs.cache`)), `${name}: no code cache`);
  }
  const script = `
    const { bundleCacheState } = await import('./dist/vendor/load-bundle.js');
    const { z } = await import('./dist/vendor/zod.js');
    const { parse } = await import('./dist/vendor/yaml.js');
    const { pino } = await import('./dist/vendor/pino.js');
    const schema = z.object({ n: z.number().int().min(1) });
    const bad = schema.safeParse(parse('n: 0'));
    const lines = [];
    pino({ base: null, timestamp: false }, { write: (s) => lines.push(JSON.parse(s)) }).info('hi');
    console.log(JSON.stringify({
      caches: ['zod', 'yaml', 'pino'].map(bundleCacheState),
      ok: schema.parse(parse('n: 2')).n,
      issue: bad.success ? null : bad.error.issues[0].path.join('.'),
      log: lines[0].msg,
    }));`;
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  assert.deepEqual(JSON.parse(out), {
    caches: ['accepted', 'accepted', 'accepted'],
    ok: 2,
    issue: 'n',
    log: 'hi',
  });
});
