/**
 * The Store port: where task outputs live. An attempt writes to a staging place of its own;
 * `commit` makes it the task's output, and the first commit wins: a later attempt of the same
 * task never replaces a committed output. The set of committed outputs is the truth of a job's
 * completion. Adapters: `fs` (a folder; a hard link is the commit) and, on AWS, `s3`.
 */
export interface Store {
  /** A human-readable description of where outputs go (a folder or an s3:// URL). */
  readonly location: string;
  /** A local file path where attempt `attemptId` of the task with output `key` writes its output. */
  stage(key: string, attemptId: string): Promise<string>;
  /** Makes the attempt's staged output the task's output, unless one is committed already. */
  commit(key: string, attemptId: string): Promise<CommitResult>;
  /**
   * Commits the staged outputs of several attempts as one group (one flush to disk for all), as
   * `commit` would each; results in the order given, an Error for a commit that failed. Only the
   * folder store can (absent elsewhere: `commit` each).
   */
  commitAll?(
    items: ReadonlyArray<{ readonly key: string; readonly attemptId: string; readonly finished?: boolean }>,
  ): Promise<Array<CommitResult | Error>>;
  /**
   * Marks an attempt's staged output finished (its task succeeded), synchronously and without a
   * flush, so that it can wait for a group commit (`commitAll` with `finished`) while the worker
   * runs more tasks in its own process: if the worker dies first, `adopt` commits it, unless the
   * machine restarted meanwhile. False when it cannot: commit it now. Only the folder store can.
   */
  finish?(key: string, attemptId: string): boolean;
  /**
   * Commits the output an attempt marked finished (`finish`) in this boot but never committed
   * (its worker died); undefined when there is none. Only the folder store can.
   */
  adopt?(key: string, attemptId: string): Promise<CommitResult | undefined>;
  /**
   * Makes the attempt's staged output the task's output in place of the one committed (a redo of
   * a task whose input changed), atomically: a reader sees the old output or the new one, never
   * none nor a part. Only the folder store can (absent elsewhere).
   */
  replace?(key: string, attemptId: string): Promise<'committed' | 'missing'>;
  /** Drops an attempt's staged output. */
  discard(key: string, attemptId: string): Promise<void>;
  /** Whether an output is committed. */
  exists(key: string): Promise<boolean>;
  /** Committed output keys below a prefix. */
  list(prefix?: string): AsyncIterable<string>;
}

/**
 * How a commit ended: `committed` (this attempt's output is the result), `duplicate` (a result
 * was there already: an earlier attempt's, or the same bytes), `conflict` (a different file was
 * at the output path, left as it was: an earlier attempt of a task whose output varies, or
 * another writer: a task whose output path differs only by case on a case-insensitive file
 * system, a process outside corral; only the caller can tell which), `missing` (the attempt
 * wrote no output). Only the folder store tells `conflict` from `duplicate`.
 */
export type CommitResult = 'committed' | 'duplicate' | 'conflict' | 'missing';
