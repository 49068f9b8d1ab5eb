/**
 * yaml, as the rest of corral imports it. `npm run build` replaces the compiled file with a loader
 * of one CommonJS bundle of yaml and its V8 code cache (scripts/bundle-vendor.mjs, load-bundle.ts),
 * which loads faster than yaml's own files through Node's ESM loader. Types come from yaml itself.
 */
export { isMap, isSeq, LineCounter, type Node, parse, parseDocument } from 'yaml';
