/**
 * The steps of a job in workflow order, read from its serialized LoadedJob (meta `spec`, or
 * job.json): each step after the steps it reads or waits for, otherwise in file order. Used
 * by `status`, the dashboard and the report, so they list steps as the workflow runs them.
 */

/** A step and the steps it needs (its `needs`, `reduce`, `map.outputsOf`, or HyperFlow signals). */
export interface OrderedStep {
  readonly name: string;
  readonly needs: string[];
}

interface StepSpec {
  name: string;
  needs?: unknown;
  reduce?: unknown;
  map?: { outputsOf?: unknown };
}

/**
 * The steps and what each needs, in workflow order (topological, ties in file order); none when
 * the text is not a job. A HyperFlow process needs the processes whose signals it reads.
 */
export function workflowSteps(jobJson: string | undefined): OrderedStep[] {
  if (!jobJson) return [];
  let job: { spec?: { steps?: unknown }; steps?: unknown; hyperflow?: unknown };
  try {
    job = JSON.parse(jobJson) as typeof job;
  } catch {
    return [];
  }
  const list = Array.isArray(job?.spec?.steps) ? job.spec.steps : job?.steps;
  if (!Array.isArray(list)) return [];
  const steps = list
    .filter((s): s is StepSpec => typeof (s as { name?: unknown })?.name === 'string')
    .map((s) => {
      const needs = Array.isArray(s.needs) ? s.needs.filter((n): n is string => typeof n === 'string') : [];
      // a reduce, or a map over another step's outputs, also waits for that step
      for (const from of [s.reduce, s.map?.outputsOf])
        if (typeof from === 'string' && !needs.includes(from)) needs.push(from);
      return { name: s.name, needs };
    });
  if (Array.isArray(job.hyperflow)) {
    const tasks = job.hyperflow as Array<{ step?: unknown; after?: unknown }>;
    const by = new Map(steps.map((s) => [s.name, s]));
    for (const t of tasks) {
      const st = typeof t?.step === 'string' ? by.get(t.step) : undefined;
      if (!st || !Array.isArray(t.after)) continue;
      for (const a of t.after) {
        const from = typeof a === 'number' ? tasks[a]?.step : undefined;
        if (typeof from === 'string' && from !== st.name && !st.needs.includes(from)) st.needs.push(from);
      }
    }
  }
  return topological(steps);
}

/** Kahn's order: a step once every step it needs is placed, the first such in file order; a cycle's steps last, in file order. */
function topological(steps: OrderedStep[]): OrderedStep[] {
  const names = new Set(steps.map((s) => s.name));
  const placed = new Set<string>();
  const out: OrderedStep[] = [];
  while (out.length < steps.length) {
    const next = steps.find(
      (s) => !placed.has(s.name) && s.needs.every((n) => placed.has(n) || !names.has(n)),
    );
    if (!next) break;
    placed.add(next.name);
    out.push(next);
  }
  for (const s of steps) if (!placed.has(s.name)) out.push(s);
  return out;
}
