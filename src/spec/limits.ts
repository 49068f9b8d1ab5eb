/** Bounds shared by the spec and the command line (kept light: the CLI imports it before zod). */

/** The most tasks one job runs at once (`concurrency`, `--concurrency`). */
export const MAX_CONCURRENCY = 4096;
