import { writeFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import type { GraphFormat } from '../../engine/preview.js';

interface DagFlags {
  format: GraphFormat;
  tasks?: boolean;
  output?: string;
  var: string[];
  workdir?: string;
}

/** `corral dag FILE`: the workflow's graph as Graphviz dot or Mermaid. */
export function register(program: Command): void {
  program
    .command('dag')
    .description(
      'write the workflow graph: steps with their edges, and every task when there are at most 50 (plans in memory, runs nothing)',
    )
    .argument('<FILE>', 'job spec (YAML), or a HyperFlow workflow (JSON)')
    .addOption(new Option('--format <FORMAT>', 'graph language').choices(['dot', 'mermaid']).default('dot'))
    .option('--tasks', 'draw every task, however many')
    .option('--no-tasks', 'draw the steps only')
    .option('-o, --output <FILE>', 'write the graph to this file (default: stdout)')
    .option(
      '--var <NAME=VALUE>',
      'value of a {{NAME}} placeholder of a HyperFlow workflow (repeatable)',
      (v: string, all: string[]) => [...all, v],
      [],
    )
    .option('--workdir <DIR>', "HyperFlow working directory (default: the JSON file's folder)")
    .addHelpText(
      'after',
      '\nExample: corral dag job.yaml | dot -Tsvg > dag.svg\n         corral dag job.yaml --format mermaid',
    )
    .action(async (file: string, flags: DagFlags) => {
      const { loadJob, parseVars } = await import('../../workflow/load-job.js');
      const { workflowGraph } = await import('../../engine/preview.js');
      const job = loadJob(file, { vars: parseVars(flags.var), workdir: flags.workdir });
      const graph = await workflowGraph(job, { format: flags.format, tasks: flags.tasks });
      if (flags.output) writeFileSync(flags.output, graph);
      else process.stdout.write(graph);
    });
}
