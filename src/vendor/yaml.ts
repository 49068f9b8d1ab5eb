/**
 * yaml, as the rest of corral imports it. `npm run build` replaces the compiled file with one
 * bundled module of yaml's ES build (scripts/bundle-vendor.mjs), which loads faster than its
 * CommonJS build through Node's ESM loader. Types come from yaml itself.
 */
export { isMap, isSeq, LineCounter, type Node, parse, parseDocument } from 'yaml';
