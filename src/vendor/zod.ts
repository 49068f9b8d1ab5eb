/**
 * zod, as the rest of corral imports it. `npm run build` replaces the compiled file with one
 * bundled module (scripts/bundle-vendor.mjs): zod 4 is 95 ES modules, and loading them one by one
 * was ~95 ms of every CLI start; bundled it is ~45 ms. Types come from zod itself.
 */
export { z } from 'zod';
