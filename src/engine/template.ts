import path from 'node:path';
import type { TaskPayload } from '../queue/queue.js';
import { fillPlaceholders } from '../spec/placeholders.js';

/** Values a task's placeholders stand for. */
export type TaskVars = Record<string, string>;

/** Quotes a value for /bin/sh so that it is always one word and never code. */
export function shellQuote(v: string): string {
  if (/^[A-Za-z0-9_\-+=/.,:@%]+$/.test(v)) return v;
  return `'${v.replaceAll("'", `'\\''`)}'`;
}

/**
 * The placeholder values of a task. `input` is a path (absolute) or the line's text. An `s3://`
 * input is at `<s3Dir>/<bucket>/<key>` (the worker's input cache); `input.path` is its key.
 */
export function taskVars(p: TaskPayload, baseDir: string, extra: TaskVars = {}, s3Dir?: string): TaskVars {
  const vars: TaskVars = { index: String(p.i), ...extra };
  if (p.p?.startsWith('s3://')) {
    const rest = p.p.slice('s3://'.length);
    const slash = rest.indexOf('/');
    const bucket = rest.slice(0, slash);
    const key = rest.slice(slash + 1);
    const name = key.slice(key.lastIndexOf('/') + 1);
    vars.input = s3Dir !== undefined ? path.join(s3Dir, bucket, ...key.split('/')) : p.p;
    vars['input.path'] = key;
    vars['input.name'] = name;
    vars['input.stem'] = name.replace(/\.[^.]*$/, '') || name;
  } else if (p.p !== undefined) {
    const abs = path.resolve(baseDir, p.p);
    const name = path.basename(abs);
    vars.input = abs;
    vars['input.path'] = p.p;
    vars['input.name'] = name;
    vars['input.stem'] = name.replace(/\.[^.]*$/, '') || name;
  } else if (p.l !== undefined) {
    vars.input = p.l;
    vars['input.path'] = p.l;
    vars['input.name'] = p.l;
    vars['input.stem'] = p.l;
  }
  if (p.ins !== undefined) vars.inputs = p.ins.map((k) => path.resolve(baseDir, k)).join('\n');
  if (p.s !== undefined && p.e !== undefined) {
    vars['chunk.start'] = String(p.s);
    vars['chunk.end'] = String(p.e);
    vars['chunk.length'] = String(p.e - p.s);
  }
  return vars;
}

/**
 * Fills corral's `{name}` placeholders (src/spec/placeholders.ts); each value passes through
 * `quote`. Other braces stay as written, `{{` and `}}` become `{` and `}`, and a placeholder this
 * task has no value for is left as it is.
 */
export function render(template: string, vars: TaskVars, quote: (v: string) => string = (v) => v): string {
  return fillPlaceholders(template, (name) => {
    const v = vars[name];
    if (v === undefined) return undefined;
    // {inputs} is a list: each path is its own quoted word
    if (name === 'inputs') return v === '' ? '' : v.split('\n').map(quote).join(' ');
    return quote(v);
  });
}

/** Makes a value safe as part of a file name in an output path (no separators, no `..`). */
export function pathSegmentSafe(v: string): string {
  const s = v.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, (m) => '_'.repeat(m.length));
  return s.slice(0, 200) || '_';
}

/** Output key of a task: the `outputs` pattern filled with path-safe values. */
export function outputKey(pattern: string, p: TaskPayload, baseDir: string): string {
  const vars = taskVars(p, baseDir);
  const safe: TaskVars = {};
  for (const [k, v] of Object.entries(vars)) {
    // input.path keeps its folders (it is relative to the job folder and was matched there).
    safe[k] =
      k === 'input.path' && p.p !== undefined
        ? v.split('/').map(pathSegmentSafe).join('/')
        : pathSegmentSafe(v);
  }
  return path.posix.normalize(render(pattern, safe));
}
