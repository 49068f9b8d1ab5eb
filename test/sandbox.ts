/**
 * A bootstrap rehearsal sandbox: runs a host's user data, exactly as rendered, as root in a mount
 * namespace of its own (unshare) where /etc, /opt, /var and /usr/local are overlays whose writes
 * land in a throwaway folder. Only OS commands are stand-ins that record their arguments: dnf
 * (packages are "installed" when the host already has them), systemctl (runs a unit's ExecStart
 * in the background with its EnvironmentFile, and its ExecStopPost power-off as a recorded
 * `shutdown`), shutdown, useradd, usermod, cfn-signal and docker (no engine here: `docker login`
 * records the password it read on stdin, `docker pull` of an image named `…no-such-…` fails as a
 * registry without it does, of one named `…late-network…` fails twice as a registry not reachable
 * yet does, anything else succeeds) and sleep (records, returns at once). Everything else is real: bash, curl, tar,
 * sha256sum, the AWS CLI, Node, and the corral the script installs.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const OVERLAID = ['etc', 'opt', 'var', 'usr/local'];

/** What the stand-ins recorded, one command a line. */
export function recorded(root: string): string[] {
  const f = path.join(root, 'record.log');
  return existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter(Boolean) : [];
}

const RECORD = 'echo "$(basename "$0") $*" >> "$CORRAL_REHEARSAL_RECORD"';

const STANDINS: Record<string, string> = {
  dnf: `#!/bin/bash\n${RECORD}\nexit 0\n`,
  shutdown: `#!/bin/bash\n${RECORD}\nexit 0\n`,
  useradd: `#!/bin/bash\n${RECORD}\nexit 0\n`,
  usermod: `#!/bin/bash\n${RECORD}\nexit 0\n`,
  'cfn-signal': `#!/bin/bash\n${RECORD}\nexit 0\n`,
  // The host's clock is not the test's: a bootstrap that waits (retries) only records how long.
  sleep: `#!/bin/bash\n${RECORD}\nexit 0\n`,
  docker: `#!/bin/bash
${RECORD}
case "$1" in
  login)
    password=$(cat)
    [ -n "$password" ] || { echo "Error: Cannot perform an interactive login from a non TTY device" >&2; exit 1; }
    echo "docker login read the password $password" >> "$CORRAL_REHEARSAL_RECORD" ;;
  pull)
    case "$2" in
      *no-such-*) echo "Error response from daemon: manifest for $2 not found: manifest unknown: Requested image not found" >&2; exit 1 ;;
      *late-network*)
        tries="$CORRAL_REHEARSAL_ROOT/pull-tries"
        echo x >> "$tries"
        [ "$(wc -l < "$tries")" -ge 3 ] || { echo "Error response from daemon: Get https://$2/v2/: dial tcp: i/o timeout" >&2; exit 1; } ;;
    esac ;;
esac
exit 0
`,
  // A unit runs as this user (User= is recorded, not applied): the sandbox has no corral user.
  systemctl: `#!/bin/bash
${RECORD}
[ "$1" = enable ] && [ "$2" = --now ] || exit 0
unit="/etc/systemd/system/$3"
[ -f "$unit" ] || exit 0
field() { sed -n "s/^$1=//p" "$unit"; }
out=$(field StandardOutput | sed 's/^append://')
mkdir -p "$(dirname "$out")" "$CORRAL_REHEARSAL_ROOT/services"
(
  set -a
  . "$(field EnvironmentFile)"
  for e in $(field Environment); do export "$e"; done
  set +a
  $(field ExecStart) >>"$out" 2>&1
  rc=$?
  echo "unit $3 exited $rc" >> "$CORRAL_REHEARSAL_RECORD"
  post=$(field ExecStopPost)
  [ -z "$post" ] || EXIT_STATUS=$rc /bin/sh -c "\${post#+}"
) </dev/null >>"$out" 2>&1 &
echo $! > "$CORRAL_REHEARSAL_ROOT/services/$3.pid"
`,
};

/** A throwaway host. */
export interface Sandbox {
  readonly root: string;
  /** Runs `bash FILE` on the host (the namespace and its overlays), to its end. */
  run(
    args: string[],
    opts?: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number },
  ): Promise<{ code: number | null; output: string }>;
  /** Stops every process the host started, services included (SIGTERM, then SIGKILL). */
  stopServices(): Promise<void>;
  /** Pid of a service the stand-in systemctl started. */
  servicePid(unit: string): number | undefined;
}

/** Makes the throwaway host under `root` (its overlays' upper folders and the stand-ins). */
export function makeSandbox(root: string): Sandbox {
  const stubs = path.join(root, 'stubs');
  mkdirSync(stubs, { recursive: true });
  for (const d of OVERLAID) {
    mkdirSync(path.join(root, 'up', d), { recursive: true });
    mkdirSync(path.join(root, 'work', d), { recursive: true });
  }
  for (const [name, text] of Object.entries(STANDINS)) {
    writeFileSync(path.join(stubs, name), text);
    chmodSync(path.join(stubs, name), 0o755);
  }
  // cfn-signal lives where aws-cfn-bootstrap puts it on Amazon Linux.
  mkdirSync(path.join(root, 'up/opt/aws/bin'), { recursive: true });
  writeFileSync(path.join(root, 'up/opt/aws/bin/cfn-signal'), STANDINS['cfn-signal']!);
  chmodSync(path.join(root, 'up/opt/aws/bin/cfn-signal'), 0o755);
  const mounts = OVERLAID.map(
    (d) =>
      `mount -t overlay overlay -o lowerdir=/${d},upperdir=${root}/up/${d},workdir=${root}/work/${d} /${d}`,
  ).join(' && ');
  const children = new Set<ChildProcess>();
  const sandbox: Sandbox = {
    root,
    run(args, opts = {}) {
      const child = spawn(
        'unshare',
        [
          '--mount',
          '--fork',
          '--',
          'bash',
          '-c',
          `mount --make-rprivate / && ${mounts} && exec "$@"`,
          'sandbox',
          ...args,
        ],
        {
          cwd: opts.cwd ?? root,
          env: {
            ...process.env,
            ...opts.env,
            PATH: `${stubs}:${opts.env?.PATH ?? process.env.PATH}`,
            CORRAL_REHEARSAL_RECORD: path.join(root, 'record.log'),
            CORRAL_REHEARSAL_ROOT: root,
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      children.add(child);
      let output = '';
      child.stdout!.on('data', (d) => {
        output += d;
      });
      child.stderr!.on('data', (d) => {
        output += d;
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
      return new Promise((resolve) => {
        child.on('close', (code) => {
          clearTimeout(timer);
          children.delete(child);
          resolve({ code, output });
        });
      });
    },
    servicePid(unit) {
      const f = path.join(root, 'services', `${unit}.pid`);
      return existsSync(f) ? Number(readFileSync(f, 'utf8')) : undefined;
    },
    async stopServices() {
      // Every process the host started carries CORRAL_REHEARSAL_ROOT=<root> in its environment:
      // found through /proc, so nothing is left running even when the root is already removed.
      // Each round signals the ones not signalled yet: a process the host was starting at the first
      // (a service's worker, forked by a shell that the first SIGTERM ended) is stopped at the next
      // instead of being waited for until the SIGKILL.
      const mine = () => hostProcesses(root);
      const termed = new Set<number>();
      for (let i = 0; i < 100; i++) {
        const pids = mine();
        if (pids.length === 0) break;
        for (const pid of pids.filter((p) => !termed.has(p))) {
          termed.add(pid);
          signal(pid, 'SIGTERM');
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      for (const pid of mine()) signal(pid, 'SIGKILL');
      for (const c of children) c.kill('SIGKILL');
    },
  };
  return sandbox;
}

/** Pids of the live processes whose environment has `CORRAL_REHEARSAL_ROOT=<root>`. */
function hostProcesses(root: string): number[] {
  const marker = `\0CORRAL_REHEARSAL_ROOT=${root}\0`;
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (`\0${readFileSync(`/proc/${entry}/environ`, 'latin1')}`.includes(marker)) pids.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

type Cfn = Record<string, unknown>;

/**
 * Resolves the intrinsic functions of a template value (Fn::Base64, Fn::Join, Fn::Sub, Ref,
 * Fn::GetAtt) with `ref` giving the value of a Ref (a logical id or a pseudo parameter).
 */
export function resolveIntrinsics(v: unknown, ref: (name: string) => string): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  const o = v as Cfn;
  if ('Fn::Base64' in o) return resolveIntrinsics(o['Fn::Base64'], ref);
  if ('Fn::Join' in o) {
    const [sep, parts] = o['Fn::Join'] as [string, unknown[]];
    return parts.map((p) => resolveIntrinsics(p, ref)).join(sep);
  }
  if ('Ref' in o) return ref(String(o.Ref));
  if ('Fn::Sub' in o) {
    const text = Array.isArray(o['Fn::Sub']) ? String(o['Fn::Sub'][0]) : String(o['Fn::Sub']);
    return text.replace(/\$\{([^}]+)\}/g, (_, name: string) => ref(name));
  }
  if ('Fn::GetAtt' in o) {
    const [id, attr] = o['Fn::GetAtt'] as [string, string];
    return ref(`${id}.${attr}`);
  }
  throw new Error(`cannot resolve ${JSON.stringify(v).slice(0, 200)}`);
}
