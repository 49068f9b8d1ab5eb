import { UsageError } from '../spec/errors.js';
import { jobFromDocument, type LoadedJob } from '../spec/job.js';
import { readYamlFile } from '../spec/load.js';
import { importHyperflow, isHyperflow } from './hyperflow.js';

/** Options that apply to some job formats only. */
export interface LoadJobOptions {
  /** HyperFlow `{{var}}` values. @default {} */
  readonly vars?: Readonly<Record<string, string>>;
  /** HyperFlow working directory. @default - the workflow file's folder */
  readonly workdir?: string;
}

/**
 * Reads a job file of any supported format, detected by content: a corral job (YAML) or a
 * HyperFlow workflow (JSON with `processes` and `signals`).
 */
export function loadJob(file: string, opts: LoadJobOptions = {}): LoadedJob {
  const src = readYamlFile(file);
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
