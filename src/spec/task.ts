// The task vocabulary every layer shares: what one task runs on (the queue, the ledger, the workers
// and the engine all pass it along; the spec's job model names it).

/** What a task runs on: one file, line or byte range, and the output it must commit. */
export interface TaskPayload {
  /** The task's index in the job, from 0. */
  readonly i: number;
  /** Input file, relative to the job folder (glob and chunk maps). */
  readonly p?: string;
  /** Input line text (line maps). */
  readonly l?: string;
  /** Number of that line in its file, from 1 (line maps; blank lines are counted, not run). */
  readonly n?: number;
  /** Chunk start byte, inclusive (chunk maps). */
  readonly s?: number;
  /** Chunk end byte, exclusive (chunk maps). */
  readonly e?: number;
  /**
   * Size (bytes) and modification time (ms) of the input file when the task was planned (local
   * glob and chunk maps): what its output is made from. A chunk task whose input differs when it
   * starts fails, rather than reading bytes that are no longer the planned chunk; a re-run counts
   * the glob tasks whose input differs now (`--redo-changed` redoes them).
   */
  readonly z?: number;
  readonly m?: number;
  /**
   * 1: run the task even though its output exists, and replace that output atomically (its input
   * changed since the output was made: `--redo-changed`). @default - absent (an existing output is the result)
   */
  readonly r?: 1;
  /**
   * 1: the task may have been sent before (handed back by a worker, or sent again by a coordinator
   * that resumed or found messages lost), so a cluster worker looks for its committed result before
   * its first attempt too. @default - absent (a cluster worker runs a first attempt without looking)
   */
  readonly lk?: 1;
  /** Output key in the store, relative to its root. */
  readonly o?: string;
  /** Input keys in the store (a reduce's inputs; a HyperFlow process's input files). */
  readonly ins?: readonly string[];
  /** Files the task writes in place in the job folder (a HyperFlow process's outputs). */
  readonly outs?: readonly string[];
  /** Executable and arguments, run without a shell in the job folder (a HyperFlow process). */
  readonly argv?: readonly string[];
  /** File of the job folder the command's stdout is written to, one of `outs` (HyperFlow `config.executor.stdout`). @default - the task's log */
  readonly stdout?: string;
  /**
   * Files a cluster worker fetches into the job folder before the task runs, besides `p` and
   * `ins`: the outputs of the steps it `needs`, and local files its command names. Added by the
   * cluster coordinator when it sends the task; local runs read the job folder directly.
   */
  readonly stage?: readonly string[];
}
