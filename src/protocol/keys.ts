// Key names the coordinator and the workers share: where a job's objects live in the bucket and
// how a task's completion is marked. Both sides import them from here, neither from the other.

/** Sub-prefixes of a store. */
export const S3_LAYOUT = {
  /** `attempts/<output key>/<attempt id>`: what each attempt uploaded. */
  attempts: 'attempts/',
  /** `committed/<output key>`: the commit marker, written once with If-None-Match: *. */
  committed: 'committed/',
  /**
   * `bundles/<bundle id>`: the commit marker of a bundle (several tasks sent in one message),
   * written once with If-None-Match: *; it holds the results of the tasks that succeeded.
   */
  bundles: 'bundles/',
  /** `failed/<task key>`: tasks that failed their last attempt. */
  failed: 'failed/',
} as const;

/** Bucket prefix of a job. */
export function jobPrefix(job: string): string {
  return `jobs/${job}/`;
}

/** Bucket key (relative to the job prefix) of the marker of a task without output. */
export function doneKey(taskKey: string): string {
  return `.tasks/${taskKey}`;
}

/**
 * Bucket key (relative to the job prefix) of a job's cancel record (`corral cancel`, issue 23):
 * `{ at, abandon }`; with `abandon`, workers drop the job's queued tasks instead of running them.
 */
export const CANCEL_RECORD = 'cancel.json';

/**
 * Bucket folder (at the root, not below a job) of the detached runs that need a coordinator
 * (issue 23): `detached/JOB.json`, deleted when the run ends. One LIST of it is what a worker's
 * look for coordinator work costs.
 */
export const DETACHED_PREFIX = 'detached/';
