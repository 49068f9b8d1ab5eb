import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { isMap, isSeq, LineCounter, type Node, parseDocument } from '../vendor/yaml.js';
import type { z } from '../vendor/zod.js';
import { UsageError } from './errors.js';

/** Largest spec file corral reads; a bigger one is refused before parsing. */
export const MAX_SPEC_BYTES = 4 * 1024 * 1024;
/** Largest HyperFlow workflow JSON corral reads (parsed as JSON, not through the YAML reader). */
export const MAX_WORKFLOW_JSON_BYTES = 64 * 1024 * 1024;

/** A parsed document together with what is needed to point at a field in it. */
export interface SourceDocument {
  /** The plain data of the document. */
  readonly data: unknown;
  /** The file it came from, as given. */
  readonly file: string;
  /** `file:line:col` of a YAML path, when the path exists in the source. */
  locate(fieldPath: readonly PropertyKey[]): string | undefined;
}

/** Reads and parses a YAML (or JSON, which is YAML) file; syntax errors become UsageErrors. */
export function readYamlFile(file: string, field = 'FILE'): SourceDocument {
  return parseYamlText(readSpecText(file, field), file);
}

/** Reads a spec file's text; a file that is missing, not a file or over `max` bytes is refused. */
export function readSpecText(file: string, field = 'FILE', max = MAX_SPEC_BYTES): string {
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new UsageError(field, `${file} is not a file`, 'pass the path of a spec file');
    if (st.size > max) {
      throw new UsageError(
        field,
        `${file} is ${st.size} bytes, more than ${max}`,
        'pass a spec file, not data',
      );
    }
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(
      field,
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      'check the path',
    );
  }
  return text;
}

/** Parses YAML text; aliases are limited so that a "billion laughs" document cannot exhaust memory. */
export function parseYamlText(text: string, file: string): SourceDocument {
  if (text.includes('\u0000')) {
    throw new UsageError('', `${file} is binary, not YAML`, 'pass a YAML spec file');
  }
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const first = doc.errors[0];
  if (first) {
    const pos = first.linePos?.[0];
    const loc = pos ? `${file}:${pos.line}:${pos.col}` : file;
    const msg = first.message.split('\n')[0] ?? 'invalid YAML';
    throw new UsageError('', `invalid YAML: ${msg}`, 'fix the YAML syntax', loc);
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw new UsageError('', `invalid YAML: ${(err as Error).message}`, 'remove excessive aliases', file);
  }
  return {
    data,
    file,
    locate(fieldPath) {
      let node: unknown = doc.contents;
      let last: Node | undefined = doc.contents ?? undefined;
      for (const [k, key] of fieldPath.entries()) {
        if (isMap(node)) {
          const pair = node.items.find(
            (p) => String((p.key as { value?: unknown })?.value ?? p.key) === String(key),
          );
          if (!pair) break;
          last = (pair.key as Node) ?? last;
          node = pair.value;
          // point at the field's key; at its value only on the way down
          if (k < fieldPath.length - 1 && node && typeof node === 'object' && 'range' in (node as object))
            last = node as Node;
        } else if (isSeq(node) && typeof key === 'number') {
          node = node.items[key];
          if (node && typeof node === 'object' && 'range' in (node as object)) last = node as Node;
        } else break;
      }
      const offset = last?.range?.[0];
      if (offset === undefined) return file;
      const { line, col } = lineCounter.linePos(offset);
      return `${file}:${line}:${col}`;
    },
  };
}

/** Formats a zod path the way users write it in YAML: `pools[1].spot.onDemandBase`. */
export function formatPath(p: readonly PropertyKey[]): string {
  let out = '';
  for (const k of p) {
    if (typeof k === 'number') out += `[${k}]`;
    else out += out ? `.${String(k)}` : String(k);
  }
  return out;
}

/**
 * Validates data against a zod schema and returns the typed value, or throws the first
 * problem as a UsageError naming the YAML path, with a fix.
 */
export function validate<S extends z.ZodType>(
  schema: S,
  src: SourceDocument | { data: unknown; file: string },
): z.output<S> {
  const res = schema.safeParse(src.data);
  if (res.success) return res.data;
  const issue = res.error.issues[0]!;
  let fieldPath: PropertyKey[] = [...issue.path];
  let problem = issue.message;
  let fix: string | undefined;
  if (issue.code === 'unrecognized_keys') {
    const keys = (issue as { keys: string[] }).keys;
    fieldPath = [...fieldPath, keys[0]!];
    problem = `unknown field "${keys[0]}"`;
    fix = `remove it or check its spelling against the spec reference`;
  } else if (issue.code === 'invalid_type' && /received undefined/.test(issue.message)) {
    problem = 'is required';
    fix = `add ${formatPath(fieldPath) || 'it'} to the spec`;
  } else {
    const [msg, hint] = issue.message.split(' | fix: ');
    problem = msg ?? problem;
    fix = hint;
  }
  const location = 'locate' in src ? src.locate(fieldPath) : src.file;
  throw new UsageError(formatPath(fieldPath) || '(root)', problem, fix, location);
}

/** Resolves a path written in a spec relative to the spec file's folder. */
export function resolveFrom(specFile: string, p: string): string {
  return path.resolve(path.dirname(path.resolve(specFile)), p);
}
