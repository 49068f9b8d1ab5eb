/**
 * pino, as the rest of corral imports it. `npm run build` replaces the compiled file with one
 * bundled module (scripts/bundle-vendor.mjs): through Node's ESM loader its CommonJS files took
 * 35-47 ms of every run's start, bundled 15-21 ms. corral uses no pino transport (those need
 * pino's own files in worker threads), only destinations and multistream. Types come from pino.
 */
export { type DestinationStream, type Level, type Logger, pino } from 'pino';
