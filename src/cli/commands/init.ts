import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { UsageError } from '../../spec/errors.js';

const JOB = `# A corral job: one task per line of inputs.txt. Run: npx corral run job.yaml
# Reference: the "Job spec reference" of corral's README.
name: my-job
tasks:
  map:
    lines: inputs.txt          # or glob: "data/*.csv", or chunks: big.txt with chunkSize: 64MiB
  # every {placeholder} is shell-quoted by corral: do not quote it yourself
  command: "echo processing {input} && echo {input} | wc -c"
outputs: out/{index}.txt       # stdout becomes the output, since the command does not use {output}
retries:
  maxAttempts: 3
timeout: 10m
`;

const INPUTS = 'alpha\nbravo\ncharlie\n';

const CLUSTER = `# A corral cluster. Preview offline: npx corral plan cluster.yaml; create: npx corral up cluster.yaml
# Reference: docs/cluster.md.
name: my-cluster
region: us-east-1
network:
  azs: [us-east-1a, us-east-1b]
access:
  adminCidr: 203.0.113.7/32    # replace with your own IP/32: SSH is admitted from here only
pools:
  - name: workers
    instanceTypes: [t3.small, t3a.small]
    min: 0
    max: 4
    spot: { onDemandBase: 0, onDemandAbovePercent: 0 }
    scaling: { backlogPerInstance: 10, scaleToZeroAfter: 15m }
budget:
  maxHourly: 1.0
`;

/**
 * `corral init [DIR]`: writes a starter job (and inputs) and a starter cluster spec. What it
 * prints says `npx corral …`, as README does: npm puts corral in node_modules/.bin, not on PATH.
 */
export function register(program: Command): void {
  program
    .command('init')
    .description('write a starter job.yaml (with inputs.txt) and cluster.yaml into a folder')
    .argument('[DIR]', 'folder to write into (created if missing)', '.')
    .option('--json', 'print the written files as JSON')
    .action((dir: string, flags: { json?: boolean }) => {
      const files: Record<string, string> = {
        'job.yaml': JOB,
        'inputs.txt': INPUTS,
        'cluster.yaml': CLUSTER,
      };
      const taken = Object.keys(files).filter((f) => existsSync(path.join(dir, f)));
      if (taken.length > 0) {
        throw new UsageError(
          'DIR',
          `${taken.join(', ')} already exist in ${dir}`,
          'choose an empty folder: npx corral init my-project',
        );
      }
      mkdirSync(dir, { recursive: true });
      for (const [f, text] of Object.entries(files)) writeFileSync(path.join(dir, f), text);
      const written = Object.keys(files).map((f) => path.join(dir, f));
      if (flags.json) process.stdout.write(`${JSON.stringify({ written })}\n`);
      else {
        process.stdout.write(`wrote ${written.join(', ')}\n`);
        process.stdout.write(
          `next: npx corral run ${path.join(dir, 'job.yaml')}  ·  npx corral plan ${path.join(dir, 'cluster.yaml')}\n`,
        );
      }
    });
}
