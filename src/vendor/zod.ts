/**
 * zod, as the rest of corral imports it. `npm run build` replaces the compiled file with a loader
 * of one CommonJS bundle of zod and its V8 code cache (scripts/bundle-vendor.mjs, load-bundle.ts):
 * zod 4 is 95 ES modules and 750 kB, ~95 ms of every CLI start one by one, ~15 ms so. Types come
 * from zod itself.
 */
export { z } from 'zod';
