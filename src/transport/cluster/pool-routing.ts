/**
 * Which pool's queue each task goes to (issue 20, item 3): the one decision the cluster
 * coordinator (cluster-transport.ts) asks for. A task goes to the queue of its step's
 * pool: the step's `pool`, else the run's mapping by step name (HyperFlow processes by process
 * name), else the job's `pool`, else the cluster's first pool. Each pool's workers read only their
 * pool's queue, so a task never runs on a pool it did not ask for.
 */
import type { ClusterTarget, PoolQueue } from '../../aws/outputs.js';
import { UsageError } from '../../spec/errors.js';
import type { LoadedJob } from '../../spec/job.js';

/** `--pool STEP=POOL` flags as a step → pool mapping; exit 2 for a value of another form. */
export function parsePoolFlags(values: readonly string[] = []): Record<string, string> {
  const byStep: Record<string, string> = {};
  for (const v of values) {
    const m = /^([^=]+)=(.+)$/.exec(v);
    if (!m) throw new UsageError('--pool', `"${v}" is not STEP=POOL`, 'write e.g. --pool render=gpu');
    byStep[m[1]!] = m[2]!;
  }
  return byStep;
}

/** The pool of each step, by step name. */
export type StepPools = ReadonlyMap<string, PoolQueue>;

/**
 * Resolves the pool of every step of `job`; throws UsageError (exit 2) for a pool the cluster
 * does not have, naming the field and the pools there are. Without pools in the target (flags
 * `--queue-url`, or a stack without pools), every step uses `target.queueUrl`.
 */
export function routeSteps(
  job: LoadedJob,
  target: ClusterTarget,
  byStep: Readonly<Record<string, string>> = {},
): StepPools {
  const pools = target.pools ?? [];
  const fallback: PoolQueue = pools[0] ?? {
    pool: '(default)',
    queueUrl: target.queueUrl,
    deadLetterQueueUrl: target.deadLetterQueueUrl,
  };
  const stepNames = new Set([...job.steps.map((s) => s.name), ...(job.hyperflow ?? []).map((t) => t.step)]);
  for (const step of Object.keys(byStep)) {
    if (!stepNames.has(step))
      throw new UsageError(
        '--pool',
        `the job has no step or process named ${step}`,
        `name one of ${[...stepNames].join(', ')}`,
      );
  }
  const find = (name: string, field: string): PoolQueue => {
    const p = pools.find((q) => q.pool === name);
    if (p) return p;
    throw new UsageError(
      field,
      pools.length
        ? `cluster ${target.name} has no pool ${name}`
        : `the pools of cluster ${target.name} are not known (no PoolQueues output; --queue-url gives one queue)`,
      pools.length
        ? `name one of its pools: ${pools.map((q) => q.pool).join(', ')}`
        : 'run with --cluster NAME or --outputs FILE of a cluster made by this corral, or remove the pool',
    );
  };
  const out = new Map<string, PoolQueue>();
  const stepIndex = new Map(job.spec.steps?.map((s, i) => [s.name, i]) ?? []);
  for (const name of stepNames) {
    const def = job.steps.find((s) => s.name === name);
    const own = job.spec.steps?.[stepIndex.get(name) ?? -1]?.pool;
    if (own !== undefined) out.set(name, find(own, `steps[${stepIndex.get(name)}].pool`));
    else if (byStep[name] !== undefined) out.set(name, find(byStep[name]!, '--pool'));
    else if (def?.pool !== undefined || job.spec.pool !== undefined)
      out.set(name, find((def?.pool ?? job.spec.pool)!, 'pool'));
    else out.set(name, fallback);
  }
  return out;
}

/** The pool queue of a step (the default pool's for a step not routed). */
export function queueOfStep(routes: StepPools, target: ClusterTarget, step: string): PoolQueue {
  return (
    routes.get(step) ??
    target.pools?.[0] ?? {
      pool: '(default)',
      queueUrl: target.queueUrl,
      deadLetterQueueUrl: target.deadLetterQueueUrl,
    }
  );
}

/** One line per pool: which steps go there (logged by `run --cluster` before anything is sent). */
export function describeRoutes(routes: StepPools): string[] {
  const byPool = new Map<string, string[]>();
  for (const [step, q] of routes) byPool.set(q.pool, [...(byPool.get(q.pool) ?? []), step]);
  return [...byPool].map(([pool, steps]) => `pool ${pool}: ${steps.join(', ')}`);
}
