import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface, type Interface } from 'node:readline';

/** Where the runner's interpreter is; perl-base is Essential on Debian, so it is always there. */
const PERL = ['/usr/bin/perl', '/bin/perl'].find((p) => existsSync(p));

/**
 * A tiny forker, one per worker: for each task it forks (a few hundred kB, not Node's tens of MB),
 * puts the child in a process group of its own, redirects its stdio, and execs `/bin/sh -c`.
 * Node's own spawn copies the whole worker process per task; this is what lets a worker keep up
 * with `xargs`. After the shell exits, whatever it left in its group is killed.
 */
const SCRIPT = String.raw`
$| = 1;
while (my $line = <STDIN>) {
  chomp $line;
  my ($cwd, $in, $out, $log, $cmd) = map { pack('H*', $_) } split(/\t/, $line, -1);
  my $pid = fork();
  if (!defined $pid) { print "e -1\n"; next; }
  if ($pid == 0) {
    setpgrp(0, 0);
    chdir($cwd) or CORE::exit(126);
    open(STDIN, '<', $in eq '' ? '/dev/null' : $in) or CORE::exit(126);
    if ($out eq '') { open(STDOUT, '>>', $log) or CORE::exit(126); }
    else { open(STDOUT, '>', $out) or CORE::exit(126); }
    open(STDERR, '>>', $log) or CORE::exit(126);
    exec('/bin/sh', '-c', $cmd);
    CORE::exit(127);
  }
  print "s $pid\n";
  waitpid($pid, 0);
  my $st = $?;
  kill('KILL', -$pid);
  print "e $st\n";
}
`;

/** How a task run by the runner ended. */
export interface RunnerExit {
  readonly code: number | null;
  readonly signal: number | null;
}

/** Whether this machine can use the runner. */
export function runnerAvailable(): boolean {
  return PERL !== undefined && process.env.CORRAL_SHELL_RUNNER !== 'node';
}

const hex = (s: string) => Buffer.from(s).toString('hex');

/** One runner process, running one task at a time. */
export class ShellRunner {
  private child: ChildProcess | undefined;
  private lines: Interface | undefined;
  private waiting: ((line: string | undefined) => void) | undefined;
  private queued: string[] = [];

  private start(): void {
    const child = spawn(PERL!, ['-e', SCRIPT], { stdio: ['pipe', 'pipe', 'inherit'], env: process.env });
    this.child = child;
    child.stdin!.on('error', () => {});
    this.lines = createInterface({ input: child.stdout! });
    this.lines.on('line', (l) => {
      const w = this.waiting;
      if (w) {
        this.waiting = undefined;
        w(l);
      } else this.queued.push(l);
    });
    child.on('exit', () => {
      if (this.child === child) this.child = undefined;
      const w = this.waiting;
      this.waiting = undefined;
      w?.(undefined);
    });
  }

  private next(): Promise<string | undefined> {
    const q = this.queued.shift();
    if (q !== undefined) return Promise.resolve(q);
    if (!this.child) return Promise.resolve(undefined);
    return new Promise((r) => {
      this.waiting = r;
    });
  }

  /**
   * Runs `/bin/sh -c command` in `cwd` with stdin from `stdinFile` (or /dev/null), stdout to
   * `stdoutFile` (or the log) and stderr to `logFile`. `onStart` gets the process group id.
   */
  async run(o: {
    command: string;
    cwd: string;
    stdinFile?: string;
    stdoutFile?: string;
    logFile: string;
    onStart: (pgid: number) => void;
  }): Promise<RunnerExit> {
    if (!this.child) this.start();
    this.queued = [];
    this.child!.stdin!.write(
      `${[o.cwd, o.stdinFile ?? '', o.stdoutFile ?? '', o.logFile, o.command].map(hex).join('\t')}\n`,
    );
    const s = await this.next();
    if (s === undefined || !s.startsWith('s ')) return { code: null, signal: null };
    o.onStart(Number(s.slice(2)));
    const e = await this.next();
    if (e === undefined || !e.startsWith('e ')) return { code: null, signal: null };
    const st = Number(e.slice(2));
    if (st < 0) return { code: null, signal: null };
    return st & 127 ? { code: null, signal: st & 127 } : { code: st >> 8, signal: null };
  }

  /** Stops the runner (a task it runs is killed by the caller first). */
  close(): void {
    this.child?.stdin?.end();
    this.child?.kill('SIGKILL');
    this.child = undefined;
  }
}
