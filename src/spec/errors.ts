/**
 * Bad input: a spec field, CLI argument or environment that corral refuses.
 * The CLI prints it on one line and exits with code 2, before anything is created.
 */
export class UsageError extends Error {
  /** Exit code for bad input. */
  static readonly EXIT_CODE = 2;

  /**
   * @param field where the problem is: a YAML path such as `tasks.map.chunkSize`, or a CLI flag such as `--concurrency`
   * @param problem what is wrong, in a few words
   * @param fix what the user should do instead
   * @param location optional `file:line:col` of the field in its source file
   */
  constructor(
    readonly field: string,
    readonly problem: string,
    readonly fix?: string,
    readonly location?: string,
  ) {
    super(formatUsage(field, problem, fix, location));
    this.name = 'UsageError';
  }
}

function formatUsage(field: string, problem: string, fix?: string, location?: string): string {
  const where = location ? `${location}: ` : '';
  const name = field ? `${field}: ` : '';
  return `${where}${name}${problem}${fix ? ` (fix: ${fix})` : ''}`;
}

/** True for errors that must exit with code 2. */
export function isUsageError(err: unknown): err is UsageError {
  return err instanceof UsageError;
}

/**
 * A command that ran and failed for a reason outside corral (a deployment AWS rolled back, say):
 * the CLI prints its message on one line, without a stack, and exits with code 1.
 */
export class CommandFailed extends Error {
  /** Exit code of a failed command. */
  static readonly EXIT_CODE = 1;

  constructor(message: string) {
    super(message);
    this.name = 'CommandFailed';
  }
}

/**
 * True for a write that failed because the disk (or the user's quota) is full: ENOSPC or EDQUOT
 * from the file system, SQLITE_FULL from the state file.
 */
export function isNoSpace(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL';
}

/** Exit code of a local worker process that stopped because its disk is full (EX_IOERR). */
export const EXIT_NO_SPACE = 74;
