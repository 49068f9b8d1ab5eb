import { UsageError } from '../spec/errors.js';
import { jobFromDocument, type LoadedJob } from '../spec/job.js';
import { MAX_SPEC_BYTES, MAX_WORKFLOW_JSON_BYTES, parseYamlText, readSpecText } from '../spec/load.js';
import { importHyperflow, isHyperflow } from './hyperflow.js';

/** Options that apply to some job formats only. */
export interface LoadJobOptions {
  /** HyperFlow `{{var}}` values. @default {} */
  readonly vars?: Readonly<Record<string, string>>;
  /** HyperFlow working directory. @default - the workflow file's folder */
  readonly workdir?: string;
  /** The job runs on a cluster: HyperFlow inputs named by absolute paths are staged in the working directory. @default false */
  readonly forCluster?: boolean;
}

/**
 * Reads a job file of any supported format, detected by content: a corral job (YAML) or a
 * HyperFlow workflow (JSON with `processes` and `signals`).
 */
export function loadJob(file: string, opts: LoadJobOptions = {}): LoadedJob {
  const json = /\.json$/i.test(file);
  const text = readSpecText(file, 'FILE', json ? MAX_WORKFLOW_JSON_BYTES : MAX_SPEC_BYTES);
  if (json) {
    // a big HyperFlow workflow parses in milliseconds as JSON, in seconds through the YAML reader
    // (which keeps positions for error messages); a corral job or bad JSON goes on to it
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch {
      data = undefined;
    }
    if (isHyperflow(data)) return importHyperflow(data, file, opts);
    const bytes = Buffer.byteLength(text);
    if (bytes > MAX_SPEC_BYTES)
      throw new UsageError(
        'FILE',
        `${file} is ${bytes} bytes, more than ${MAX_SPEC_BYTES} (only a HyperFlow workflow may be bigger)`,
        'pass a spec file, not data',
      );
  }
  const src = parseYamlText(text, file);
  if (isHyperflow(src.data)) return importHyperflow(src.data, file, opts);
  if (opts.workdir !== undefined) {
    throw new UsageError(
      '--workdir',
      'applies to HyperFlow workflows only',
      'remove --workdir; a corral job runs in its own folder',
    );
  }
  return jobFromDocument(src);
}

/** Parses `--var name=value` flags into a map, naming the bad one. */
export function parseVars(list: readonly string[]): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const v of list) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(v);
    if (!m) throw new UsageError('--var', `"${v}" is not NAME=VALUE`, 'write --var size=2.0');
    vars[m[1]!] = m[2]!;
  }
  return vars;
}
