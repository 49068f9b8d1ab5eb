import { readFileSync, statSync } from 'node:fs';
import { parse } from '../vendor/yaml.js';

/** What the CLI can tell of a job file before it loads and validates it. */
export interface JobPeek {
  /** The spec's `concurrency`, when it is a plain number. */
  readonly concurrency?: number;
  /** Whether any step runs a module function (in the worker's own process). */
  readonly modules: boolean;
}

/** Files larger than this are not looked at before they are loaded. */
const PEEK_MAX_BYTES = 256 * 1024;

/**
 * A quick look at a job file (YAML, or HyperFlow JSON) without validating it, to prestart the
 * right number and kind of workers while the job is loaded; `undefined` when it cannot tell. The
 * job is validated as always afterwards: nothing here decides what runs.
 */
export function peekJob(file: string): JobPeek | undefined {
  let doc: unknown;
  try {
    // a spec this big is not one to start in a hurry (and past 4 MB the loader refuses it)
    if (statSync(file).size > PEEK_MAX_BYTES) return undefined;
    const text = readFileSync(file, 'utf8');
    // JSON (a HyperFlow workflow) parses in milliseconds as JSON, in a second or more as YAML
    doc = /\.json$/i.test(file) ? jsonOrUndefined(text) : undefined;
    doc ??= parse(text, { logLevel: 'silent' }); // the real load reports problems
  } catch {
    return undefined;
  }
  if (typeof doc !== 'object' || doc === null) return undefined;
  const d = doc as { concurrency?: unknown; tasks?: unknown; steps?: unknown; processes?: unknown };
  if (Array.isArray(d.processes)) return { modules: false }; // HyperFlow: commands only
  const steps = [d.tasks, ...(Array.isArray(d.steps) ? d.steps : [])];
  const modules = steps.some((s) => typeof s === 'object' && s !== null && 'module' in s);
  const concurrency = typeof d.concurrency === 'number' && d.concurrency >= 1 ? d.concurrency : undefined;
  return { concurrency, modules };
}

function jsonOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
