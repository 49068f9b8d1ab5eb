/**
 * Loads a vendored library's CommonJS bundle (dist/vendor/NAME.cjs, made by
 * scripts/bundle-vendor.mjs) with V8's code cache (NAME.cjs.cache, written at build time), so a
 * CLI start does not parse and compile it again: zod alone is 750 kB of source, ~35 ms to compile
 * on every start of Node 20, which has no compile cache of its own (Node 22's
 * `module.enableCompileCache`). A cache V8 rejects (another Node, other flags) costs nothing but
 * the compile it would have saved.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

interface Loaded {
  readonly exports: Record<string, unknown>;
  readonly script: vm.Script;
  /** Whether V8 took the code cache: `none` when there was none to take. */
  readonly cache: 'accepted' | 'rejected' | 'none';
}

function load(name: string, withCache: boolean): Loaded {
  const file = fileURLToPath(new URL(`./${name}.cjs`, import.meta.url));
  let cachedData: Buffer | undefined;
  if (withCache) {
    try {
      cachedData = readFileSync(`${file}.cache`);
    } catch {
      // no cache (a build without it): compiled as usual
    }
  }
  const script = new vm.Script(Module.wrap(readFileSync(file, 'utf8')), {
    filename: file,
    cachedData,
    importModuleDynamically: vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  const module = { exports: {} as Record<string, unknown> };
  const wrapper = script.runInThisContext() as (...args: unknown[]) => void;
  wrapper.call(module.exports, module.exports, createRequire(file), module, file, path.dirname(file));
  const cache = cachedData === undefined ? 'none' : script.cachedDataRejected ? 'rejected' : 'accepted';
  return { exports: module.exports, script, cache };
}

/** The exports of the bundle `name` (zod, yaml, pino). */
export function loadBundle(name: string): Record<string, unknown> {
  return load(name, true).exports;
}

/** Loads the bundle `name` again and tells whether V8 took its code cache (a check of the build). */
export function bundleCacheState(name: string): Loaded['cache'] {
  return load(name, true).cache;
}

/** Writes the code cache of the bundle `name` after running it once (build time). */
export function writeBundleCache(name: string): void {
  const { script } = load(name, false);
  const file = fileURLToPath(new URL(`./${name}.cjs.cache`, import.meta.url));
  writeFileSync(file, script.createCachedData());
}
