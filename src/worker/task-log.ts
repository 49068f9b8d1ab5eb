import { closeSync, openSync, writeSync } from 'node:fs';

/**
 * A task's log file, opened on the first byte written so that tasks which print nothing create
 * no file. Each attempt appends after a header line.
 */
export class TaskLog {
  private fd: number | undefined;
  private wrote = false;

  /** `header` (or the function making it, called only if anything is written) opens the attempt. */
  constructor(
    readonly path: string,
    private readonly header: string | (() => string),
  ) {}

  /** Whether anything was written. */
  get written(): boolean {
    return this.wrote;
  }

  write(chunk: string | Uint8Array): void {
    if (this.fd === undefined) {
      this.fd = openSync(this.path, 'a');
      this.wrote = true;
      writeSync(this.fd, typeof this.header === 'string' ? this.header : this.header());
    }
    if (typeof chunk === 'string') writeSync(this.fd, chunk);
    else writeSync(this.fd, chunk);
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
