import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Where the runner's interpreter is; perl-base is Essential on Debian, so it is always there. */
const PERL = ['/usr/bin/perl', '/bin/perl'].find((p) => existsSync(p));

/**
 * The C forker built by `npm run build` (src/worker/forker.c, when a C compiler was there): the
 * same protocol as the perl script below, but it starts tasks with posix_spawn (vfork), which
 * saves copying the forker per task. Resolved from src/worker or dist/worker alike.
 */
const NATIVE = fileURLToPath(new URL('../../dist/native/corral-forker', import.meta.url));

/** Which forker to use: `CORRAL_SHELL_RUNNER` = native | perl | node (Node's own spawn). */
function forkerCommand(): [string, string[]] | undefined {
  const want = process.env.CORRAL_SHELL_RUNNER;
  if (want === 'node') return undefined;
  if (want !== 'perl') {
    try {
      accessSync(NATIVE, constants.X_OK);
      return [NATIVE, []];
    } catch {
      // not built here (no C compiler): the perl forker does the same
    }
  }
  return PERL ? [PERL, ['-MErrno', '-e', SCRIPT]] : undefined;
}

/**
 * The perl forker (the fallback of the C one, same protocol), one per worker: for each task it
 * forks (a few hundred kB, not Node's tens of MB), puts the child in a process group of its own,
 * redirects its stdio, and execs `/bin/sh -c`.
 * Node's own spawn copies the whole worker process per task; this is what lets a worker keep up
 * with `xargs`. After the shell exits, whatever it left in its group is killed.
 *
 * A task is one line of tab-separated fields: cwd, stdin, stdout, log, command, then NAME=VALUE
 * variables for its environment; `%`, tab, newline and NUL are escaped as %XX in each
 * (`escapeField`).
 *
 * Tasks run one at a time, in the order they were written; the worker may write several ahead,
 * so the next one starts the moment the last one exits, without a round trip through Node. For
 * each task it reports `e PID STATUS BYTES USEC` when it ends (`e -1`: fork failed), BYTES being
 * the size of the task's log part, which it removes when empty, and USEC how long it ran (-1
 * where perl lacks Time::HiRes). A task still running after 20 ms
 * (watched through a pidfd) is reported at once as `s PID`, so that the worker can time it out or
 * kill it; shorter ones are reported only when they end. Reports are written in bulk: before it
 * waits for more input, before a task that outlives 20 ms, and every 32 tasks or once the oldest
 * waited 25 ms (every 8 tasks where perl lacks Time::HiRes), so the worker wakes up once per
 * many tasks: each wake-up of its Node process takes a core from the tasks. SIGUSR1 means "start
 * no more": the task running now runs to its end, the rest are never started; so does the
 * worker's death (the runner is reparented), so no queued task ever runs unsupervised.
 */
const SCRIPT = String.raw`
my $stop = 0;
my $worker = getppid();
$SIG{USR1} = sub { $stop = 1; };
my ($in, $out, $unflushed, $oldest) = ('', '', 0, 0);
my $clock = eval { require Time::HiRes; sub { Time::HiRes::clock_gettime(Time::HiRes::CLOCK_MONOTONIC()) } };
sub flush_out {
  while (length $out) {
    my $n = syswrite(STDOUT, $out);
    if (!defined $n) { next if $!{EINTR}; exit 1; }
    substr($out, 0, $n) = '';
  }
  $unflushed = 0;
}
while (!$stop) {
  my $nl = index($in, "\n");
  if ($nl < 0) {
    flush_out();
    my $n = sysread(STDIN, $in, 65536, length $in);
    if (!defined $n) { next if $!{EINTR}; last; }
    last if $n == 0;
    next;
  }
  my $line = substr($in, 0, $nl);
  substr($in, 0, $nl + 1) = '';
  last if $stop || getppid() != $worker;
  my ($cwd, $stdin, $stdout, $log, $cmd, @vars) = map { s/%([0-9a-fA-F]{2})/chr(hex($1))/ger } split(/\t/, $line, -1);
  my $began = $clock ? $clock->() : 0;
  my $pid = fork();
  if (!defined $pid) { $out .= "e -1\n"; flush_out(); next; }
  if ($pid == 0) {
    setpgrp(0, 0);
    for (@vars) { my ($k, $v) = split(/=/, $_, 2); $ENV{$k} = $v; }
    chdir($cwd) or CORE::exit(126);
    open(STDIN, '<', $stdin eq '' ? '/dev/null' : $stdin) or CORE::exit(126);
    if ($stdout eq '') { open(STDOUT, '>>', $log) or CORE::exit(126); }
    else { open(STDOUT, '>', $stdout) or CORE::exit(126); }
    open(STDERR, '>>', $log) or CORE::exit(126);
    exec('/bin/sh', '-c', $cmd);
    print STDERR "corral: could not start /bin/sh: $!\n";
    CORE::exit(127);
  }
  my $pidfd = syscall(434, $pid + 0, 0);
  my $ended = 0;
  if ($pidfd >= 0) {
    my $rin = '';
    vec($rin, $pidfd, 1) = 1;
    $ended = select(my $rout = $rin, undef, undef, 0.02) > 0;
    open(my $pfh, '<&=', $pidfd) and close($pfh);
  }
  if (!$ended) { $out .= "s $pid\n"; flush_out(); }
  waitpid($pid, 0);
  my $st = $?;
  my $now = $clock ? $clock->() : 0;
  kill('KILL', -$pid);
  my $size = -s $log;
  unlink($log) if !$size;
  $out .= "e $pid $st " . ($size || 0) . ' ' . ($clock ? int(($now - $began) * 1e6) : -1) . "\n";
  if ($clock) {
    $oldest = $now if $unflushed++ == 0;
    flush_out() if $unflushed >= 32 || $now - $oldest >= 0.025;
  } elsif (++$unflushed >= 8) { flush_out(); }
}
flush_out();
`;

/** How a task run by the runner ended. */
export interface RunnerExit {
  readonly code: number | null;
  readonly signal: number | null;
  /** Bytes the task wrote to its log part (removed by the runner when 0). */
  readonly logBytes?: number;
  /** How long the task ran, from its start to its exit, as the forker timed it. @default - not timed */
  readonly runMs?: number;
  /** Why the shell could not be started (an errno; the C forker only). */
  readonly spawnErrno?: number;
}

/** What the runner runs: `/bin/sh -c command` with its stdio redirected. */
export interface RunnerTask {
  readonly command: string;
  /** Variables added to the task's environment (names without `=`). @default - none */
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd: string;
  /** stdin (default /dev/null). */
  readonly stdinFile?: string;
  /** stdout (default: appended to `logFile`). */
  readonly stdoutFile?: string;
  /** stderr, appended; the runner removes it after the task when it is empty. */
  readonly logFile: string;
  /**
   * Called with the process group id when the task starts; `ended` when the task was short and
   * is reported only after it ended (nothing to time out or kill then).
   */
  readonly onStart: (pgid: number, ended: boolean) => void;
}

/** Whether this machine can use the runner. */
export function runnerAvailable(): boolean {
  return forkerCommand() !== undefined;
}

const SPECIAL = /[%\t\n\0]/;
const SPECIAL_ALL = /[%\t\n\0]/g;
const ESCAPED: Record<string, string> = { '%': '%25', '\t': '%09', '\n': '%0a', '\0': '%00' };
/** A field of the forker's protocol: `%`, tab, newline and NUL as %XX; anything else as it is. */
export const escapeField = (s: string): string =>
  SPECIAL.test(s) ? s.replace(SPECIAL_ALL, (c) => ESCAPED[c]!) : s;
const LOST: RunnerExit = { code: null, signal: null };

interface Request {
  readonly task: RunnerTask;
  started: boolean;
  readonly resolve: (r: RunnerExit | 'cancelled') => void;
}

/** One perl process and the tasks written to it, in order. */
class Forker {
  readonly child: ChildProcess;
  readonly requests: Request[] = [];
  /** Told to start no more tasks (the unstarted ones end `cancelled`). */
  stopping = false;

  constructor() {
    const [file, args] = forkerCommand()!;
    const child = spawn(file, args, {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: process.env,
    });
    this.child = child;
    child.stdin!.on('error', () => {});
    // reports come in bulk: split them here (readline's machinery cost more than the reports)
    let rest = '';
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (chunk: string) => {
      const data = rest + chunk;
      let from = 0;
      for (let nl = data.indexOf('\n'); nl >= 0; nl = data.indexOf('\n', from)) {
        this.onLine(data.slice(from, nl));
        from = nl + 1;
      }
      rest = data.slice(from);
    });
    child.on('error', () => {});
    child.on('close', () => {
      // Whatever is left never started, or the runner died under it. The first of the rest is
      // the one it was about to run (a failed attempt, so a runner that keeps dying cannot loop);
      // the others were never reached and go back.
      const rest = this.requests.splice(0);
      rest.forEach((r, i) => {
        r.resolve(r.started || (i === 0 && !this.stopping) ? LOST : 'cancelled');
      });
    });
  }

  private onLine(l: string): void {
    const head = this.requests[0];
    if (!head) return;
    if (l.startsWith('s ')) {
      head.started = true;
      head.task.onStart(Number(l.slice(2)), false);
    } else if (l.startsWith('e ')) {
      this.requests.shift();
      const [pid, status, bytes, usec, errno] = l.slice(2).split(' ');
      if (pid === '-1') {
        head.resolve(LOST);
        return;
      }
      // a short task is reported only when it has ended
      if (!head.started) head.task.onStart(Number(pid), true);
      const st = Number(status);
      const logBytes = Number(bytes ?? 0);
      const us = Number(usec ?? -1);
      const runMs = us >= 0 ? us / 1000 : undefined;
      head.resolve(
        st < 0
          ? LOST
          : st & 127
            ? { code: null, signal: st & 127, logBytes, runMs }
            : errno !== undefined
              ? { code: st >> 8, signal: null, logBytes, runMs, spawnErrno: Number(errno) }
              : { code: st >> 8, signal: null, logBytes, runMs },
      );
    }
  }

  submit(t: RunnerTask): Promise<RunnerExit | 'cancelled'> {
    return new Promise((resolve) => {
      this.requests.push({ task: t, started: false, resolve });
      // the tasks written in one turn of the event loop go in one write
      const stdin = this.child.stdin!;
      if (stdin.writableCorked === 0) {
        stdin.cork();
        process.nextTick(() => stdin.uncork());
      }
      let line = `${escapeField(t.cwd)}\t${escapeField(t.stdinFile ?? '')}\t${escapeField(t.stdoutFile ?? '')}\t${escapeField(t.logFile)}\t${escapeField(t.command)}`;
      for (const k in t.env) line += `\t${escapeField(`${k}=${t.env[k]}`)}`;
      stdin.write(`${line}\n`);
    });
  }

  /** Lets the running task finish; the queued ones never start. */
  stop(): void {
    this.stopping = true;
    try {
      this.child.kill('SIGUSR1');
    } catch {
      // gone already
    }
    this.child.stdin!.end();
  }
}

/**
 * The worker's forker. `run` may be called again before earlier runs have ended: the tasks are
 * queued in the forker and run one after another, each starting as soon as the previous exits.
 */
export class ShellRunner {
  private forker: Forker | undefined;

  /**
   * Runs `/bin/sh -c command` in `cwd` with stdin from `stdinFile` (or /dev/null), stdout to
   * `stdoutFile` (or the log) and stderr to `logFile`. `onStart` gets the process group id.
   * Resolves `cancelled` when `cancelQueued` stopped the runner before this task started.
   */
  run(t: RunnerTask): Promise<RunnerExit | 'cancelled'> {
    if (!this.forker || this.forker.child.exitCode !== null || this.forker.child.signalCode !== null)
      this.forker = new Forker();
    return this.forker.submit(t);
  }

  /** Tasks written and not yet ended (the one running included). */
  get inFlight(): number {
    return this.forker?.requests.length ?? 0;
  }

  /**
   * Starts none of the queued tasks (they resolve `cancelled`); the running one runs to its end.
   * The next `run` starts a fresh runner.
   */
  cancelQueued(): void {
    const f = this.forker;
    this.forker = undefined;
    f?.stop();
  }

  /**
   * Stops the runner (a task it runs is killed by the caller first): it starts nothing more, removes
   * its scratch log and exits; if it has not within a second, it is killed.
   */
  close(): void {
    const f = this.forker;
    this.forker = undefined;
    if (!f) return;
    f.stop();
    const child = f.child;
    setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }, 1000).unref();
  }
}
