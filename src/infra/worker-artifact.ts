/**
 * The worker artifact: the corral that runs `corral up`, packed for cluster hosts. Hosts have no
 * package registry (and, with `natGateways: 0`, no internet): they fetch this file from S3
 * through the VPC's gateway endpoint, check its sha256 against the one pinned in their user
 * data, and run `corral` from it. It holds corral's build (dist/), its production dependencies
 * without the deployment-only ones (the CDK, cdk-nag, the EC2 client of `corral gc`), the C
 * forker's source, and a marker naming the platform its native parts (the C forker,
 * better-sqlite3's addon, esbuild's binary) were built for. A host of another platform or Node ABI
 * rebuilds the forker and better-sqlite3 from source with its own compilers (user-data.ts).
 *
 * The archive is reproducible: the same files give the same bytes (sorted entries, fixed mtimes,
 * no owners), so the same corral deploys the same sha256 and `corral up` rolls the pools only
 * when corral changed. It is cached by a fingerprint of its files' paths, sizes and mtimes.
 */
import { createHash } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tar from 'tar';

/** A built worker artifact. */
export interface WorkerArtifact {
  /** The archive (gzip'd tar, one top folder `corral/`). */
  readonly file: string;
  /** Hex sha256 of the archive's bytes: what hosts check before unpacking. */
  readonly sha256: string;
  /** Size in bytes. */
  readonly bytes: number;
  /** corral's version (package.json). */
  readonly version: string;
  /** What the native parts were built for: `<platform>-<arch>-<node ABI>`, e.g. `linux-x64-115`. */
  readonly nativePlatform: string;
}

/** Packages corral needs only on the machine that deploys, left out of the artifact. */
export const DEPLOY_ONLY_PACKAGES = ['aws-cdk-lib', '@aws-cdk/toolkit-lib', 'cdk-nag', '@aws-sdk/client-ec2'];

/** The top folder of the archive. */
export const ARTIFACT_TOP = 'corral';
/** The file inside the archive that names the platform of its native parts. */
export const NATIVE_MARKER = 'native-platform';

/** corral's package root (the folder of its package.json), from src/infra or dist/infra alike. */
export function corralRoot(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
}

interface PackageJson {
  name?: string;
  version?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

function readPackage(dir: string): PackageJson {
  return JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as PackageJson;
}

/** Where `name` resolves from `dir`, as Node finds it: the nearest node_modules upwards. */
function resolvePackageDir(name: string, from: string, root: string): string | undefined {
  let dir = from;
  for (;;) {
    const candidate = path.join(dir, 'node_modules', name);
    if (existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (dir === root) return undefined;
    const parent = path.dirname(dir);
    if (parent === dir || !parent.startsWith(root)) return undefined;
    dir = parent;
  }
}

/** Package folders of corral's production dependencies (closure), without the deploy-only ones. */
export function productionPackages(root: string): string[] {
  const seen = new Set<string>();
  const visit = (dir: string, isRoot: boolean) => {
    const pkg = readPackage(dir);
    const names = [
      ...Object.keys(pkg.dependencies ?? {}).map((n) => [n, false] as const),
      ...Object.keys(pkg.optionalDependencies ?? {}).map((n) => [n, true] as const),
    ];
    for (const [name, optional] of names) {
      if (isRoot && DEPLOY_ONLY_PACKAGES.includes(name)) continue;
      const found = resolvePackageDir(name, dir, root);
      if (!found) {
        if (optional) continue; // another platform's binary, say
        throw new Error(`corral's dependency ${name} is not installed under ${root}: run npm install`);
      }
      if (seen.has(found)) continue;
      seen.add(found);
      visit(found, false);
    }
  };
  visit(root, true);
  return [...seen].sort();
}

/** Build leftovers of native addons that hosts do not need. */
const SKIP =
  /(^|\/)build\/(Release|Debug)\/(obj|obj\.target|\.deps)(\/|$)|(^|\/)test_extension\.node$|\.tsbuildinfo$/;

function walk(root: string, rel: string, out: string[]): void {
  const full = path.join(root, rel);
  for (const entry of readdirSync(full, { withFileTypes: true })) {
    const r = rel ? `${rel}/${entry.name}` : entry.name;
    if (SKIP.test(r)) continue;
    if (entry.isDirectory()) {
      if (entry.name === 'node_modules') continue; // nested packages come in through the closure
      walk(root, r, out);
    } else if (entry.isFile() || entry.isSymbolicLink()) out.push(r);
  }
}

/** The files of the artifact, relative to corral's root, sorted. */
export function artifactFiles(root = corralRoot()): string[] {
  if (!existsSync(path.join(root, 'dist/cli/main.js'))) {
    throw new Error(`corral is not built under ${root}: run npm run build`);
  }
  const files = ['package.json', 'src/worker/forker.c'];
  walk(root, 'dist', files);
  for (const dir of productionPackages(root)) {
    const rel = path.relative(root, dir).split(path.sep).join('/');
    walk(root, rel, files);
  }
  return [...new Set(files)].sort();
}

function cacheDir(): string {
  const base =
    process.env.CORRAL_CACHE_HOME ?? process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache');
  return path.join(base, 'corral', 'artifacts');
}

const memo = new Map<string, WorkerArtifact>();

/**
 * Builds (or finds in the cache) the artifact of the corral installed at `root`. Synchronous, so
 * that a construct can call it while the stack is built.
 */
export function buildWorkerArtifact(root = corralRoot()): WorkerArtifact {
  const files = artifactFiles(root);
  const nativePlatform = `${process.platform}-${process.arch}-${process.versions.modules}`;
  const fp = createHash('sha256').update(`${nativePlatform}\n`);
  for (const f of files) {
    const st = lstatSync(path.join(root, f));
    fp.update(`${f}\0${st.size}\0${st.mtimeMs}\0${st.mode}\n`);
  }
  const key = fp.digest('hex').slice(0, 32);
  const cached = memo.get(key);
  if (cached && existsSync(cached.file)) return cached;
  const version = readPackage(root).version ?? '0.0.0';
  const dir = cacheDir();
  const file = path.join(dir, `corral-${version}-${key}.tgz`);
  const shaFile = `${file}.sha256`;
  if (existsSync(file) && existsSync(shaFile)) {
    const a = {
      file,
      sha256: readFileSync(shaFile, 'utf8').trim(),
      bytes: lstatSync(file).size,
      version,
      nativePlatform,
    };
    memo.set(key, a);
    return a;
  }
  mkdirSync(dir, { recursive: true });
  // The archive is packed from a staging folder: the marker, and links to the top folders of the
  // files (paths through a linked folder are plain files to tar).
  const stage = path.join(dir, `stage-${process.pid}-${key}`);
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  writeFileSync(path.join(stage, NATIVE_MARKER), `${nativePlatform}\n`);
  for (const top of new Set(files.map((f) => f.split('/')[0]!))) {
    symlinkSync(path.join(root, top), path.join(stage, top));
  }
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    tar.create(
      {
        file: tmp,
        cwd: stage,
        gzip: { level: 6 },
        portable: true,
        mtime: new Date('2000-01-01T00:00:00Z'),
        noDirRecurse: true,
        sync: true,
        prefix: ARTIFACT_TOP,
      },
      [...files, NATIVE_MARKER],
    );
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
  const bytes = readFileSync(tmp);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(`${tmp}.sha`, `${sha256}\n`);
  renameSync(tmp, file);
  renameSync(`${tmp}.sha`, shaFile);
  const a = { file, sha256, bytes: bytes.length, version, nativePlatform };
  memo.set(key, a);
  return a;
}
