/** Bounds shared by the spec and the command line (kept light: the CLI imports it before zod). */

/** The most tasks one job runs at once (`concurrency`, `--concurrency`). */
export const MAX_CONCURRENCY = 4096;

/** corral's own folder beside the outputs: attempts are staged there, then committed. */
export const STAGING_DIR = '.corral-staging';
/** The default state folder, relative to where corral runs. */
export const DEFAULT_STATE_DIR = '.corral';
/** Folders of a job's folder that outputs may not use: corral writes and removes files in them. */
export const RESERVED_DIRS: readonly string[] = [STAGING_DIR, DEFAULT_STATE_DIR];
