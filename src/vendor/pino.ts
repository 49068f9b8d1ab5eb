/**
 * pino, as the rest of corral imports it. `npm run build` replaces the compiled file with a loader
 * of one CommonJS bundle of pino and its V8 code cache (scripts/bundle-vendor.mjs, load-bundle.ts):
 * through Node's ESM loader its files took 35-47 ms of every run's start. corral uses no pino
 * transport (those need pino's own files in worker threads), only destinations and multistream.
 * Types come from pino.
 */
export { type DestinationStream, type Level, type Logger, pino } from 'pino';
