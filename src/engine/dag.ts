import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { CountDeltas, type SqliteQueue } from '../ledger/sqlite-queue.js';
import { type TaskCounts, type TaskPayload, taskLabel } from '../queue/queue.js';
import { UsageError } from '../spec/errors.js';
import { type LoadedJob, MAP_STEP, type StepDef } from '../spec/job.js';
import { placeholdersIn } from '../spec/placeholders.js';
import { type ExpandOptions, expandFileMap } from './expand.js';
import { outputKey } from './template.js';

/** Rows per transaction when a step's tasks are planned; a plan up to this size is "small". */
export const INSERT_BATCH = 5000;

/** Rows per transaction of the rest of a small plan, once workers run its first rows. */
const SMALL_PLAN_BATCH = 500;

/**
 * Lets workers start on the first rows of a plan while the rest is written: those rows are
 * committed on their own, then `onCommitted` is called (once). Only for small plans: claims that race a
 * long plan's transactions slow both down.
 */
export interface EarlyStart {
  readonly rows: number;
  readonly onCommitted: () => void;
}

/**
 * Tasks whose failure is passed on per transaction; between two transactions the event loop
 * runs, so that a long propagation (a chain of thousands) never keeps a signal from being answered.
 */
const PROPAGATE_BATCH = 2000;

/** A step's readiness to be expanded into tasks. */
type StepState = 'waiting' | 'expanded' | 'skipped';

/** What happened in one pass of the DAG bookkeeping, for the event log. */
export interface DagEvents {
  expanded: Array<{ step: string; tasks: number }>;
  skipped: Array<{ step: string; reason: string; tasks: number }>;
  released: Array<{ step: string; needs: string }>;
  /** Steps that could not be planned once the steps they need had run, with the reason. */
  unplanned: Array<{ step: string; reason: string }>;
}

/**
 * The workflow's bookkeeping in the sqlite state file: expands steps into tasks once their inputs
 * are known, releases step barriers (`needs`, `reduce`) when the needed steps finish, and
 * propagates failures (dependents of a dead task are skipped with the reason, unless the failed
 * step has `continueOnFailure`). Task-to-task edges (a map over `outputsOf`) are released by the
 * queue itself when a task completes, so each task starts as soon as its input is committed.
 * Every decision is stored, so a coordinator that restarts continues where the last one stopped.
 */
export class DagState {
  private readonly db: Database.Database;
  private readonly steps: Map<string, StepDef>;

  constructor(
    private readonly queue: SqliteQueue,
    private readonly job: LoadedJob,
    /** How file maps are listed (an S3 client for `s3://` inputs on a cluster). @default {} */
    private readonly expand: ExpandOptions = {},
    /** Aborting ends a pass early (between two transactions); the next pass goes on from there. */
    private readonly signal?: AbortSignal,
  ) {
    this.db = queue.db;
    this.steps = new Map(job.steps.map((s) => [s.name, s]));
  }

  /** Task key: the index for a map job (so `corral logs JOB 3` works), `step/index` in a workflow. */
  keyOf(step: string, i: number): string {
    return this.job.spec.tasks && step === MAP_STEP ? String(i) : `${step}/${i}`;
  }

  /** Prepared once: every pass asks it of every step (a HyperFlow workflow has a step per process name). */
  private stepStateStmt: Database.Statement | undefined;

  private stepState(name: string): StepState | undefined {
    this.stepStateStmt ??= this.db.prepare('SELECT state FROM steps WHERE name = ?');
    return (this.stepStateStmt.get(name) as { state: StepState } | undefined)?.state;
  }

  private setStepState(name: string, state: StepState, tasks = 0): void {
    this.db
      .prepare(
        'INSERT INTO steps (name, state, tasks) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET state = excluded.state, tasks = excluded.tasks',
      )
      .run(name, state, tasks);
  }

  /** Steps this one reads whole outputs of or waits for: barriers. */
  private barriers(st: StepDef): string[] {
    const b = new Set(st.needs);
    if (st.reduce) b.add(st.reduce);
    return [...b];
  }

  /** Whether a step has finished: expanded (or skipped) and none of its tasks can still run. */
  private finished(name: string): { done: boolean; failed: boolean } {
    const state = this.stepState(name);
    if (state === 'skipped') return { done: true, failed: true };
    if (state !== 'expanded') return { done: false, failed: false };
    const c = this.queue.countsSync(name);
    const open = c.pending + c.leased + c.blocked;
    const failed = c.skipped > 0 || (c.dead > 0 && !this.steps.get(name)!.continueOnFailure);
    return { done: open === 0, failed };
  }

  /**
   * One pass: expand what can be expanded, release satisfied barriers, skip what cannot run.
   * Repeats until nothing changes; returns what it did.
   */
  async advance(early?: EarlyStart): Promise<DagEvents> {
    this.early = early;
    const ev: DagEvents = { expanded: [], skipped: [], released: [], unplanned: [] };
    for (let changed = true; changed && !this.signal?.aborted; ) {
      changed = false;
      changed = (await this.propagateFailures()) > 0 || changed;
      // a planned HyperFlow workflow has no step left to expand nor barrier to release
      for (const st of this.job.format === 'hyperflow' && this.allExpanded() ? [] : this.job.steps) {
        const state = this.stepState(st.name);
        if (state === undefined) {
          if (this.unplannable.has(st.name)) continue;
          const r = await this.tryExpand(st);
          if (r) {
            changed = true;
            if (r.unplanned) ev.unplanned.push({ step: st.name, reason: r.unplanned });
            else if (r.skipped) ev.skipped.push({ step: st.name, reason: r.skipped, tasks: 0 });
            else ev.expanded.push({ step: st.name, tasks: r.tasks });
          }
        } else if (state === 'expanded') {
          for (const need of this.unsatisfied(st.name)) {
            const f = this.finished(need);
            if (!f.done) continue;
            changed = true;
            if (f.failed) {
              const n = this.skipStepTasks(st.name, `skipped: step ${need}, which it needs, failed`);
              ev.skipped.push({ step: st.name, reason: `step ${need} failed`, tasks: n });
            } else {
              this.releaseBarrier(st.name);
              ev.released.push({ step: st.name, needs: need });
            }
            this.db
              .prepare('UPDATE step_deps SET satisfied = 1 WHERE step = ? AND needs = ?')
              .run(st.name, need);
          }
        }
      }
    }
    return ev;
  }

  private unsatisfiedStmt: Database.Statement | undefined;

  private unsatisfied(step: string): string[] {
    this.unsatisfiedStmt ??= this.db.prepare('SELECT needs FROM step_deps WHERE step = ? AND satisfied = 0');
    return (this.unsatisfiedStmt.all(step) as { needs: string }[]).map((r) => r.needs);
  }

  /**
   * Plans every process of a HyperFlow workflow, with an edge per signal between processes, in
   * transactions of PROPAGATE_BATCH rows with the event loop served between them (a SIGTERM is
   * answered during the plan of a big workflow). The steps are marked expanded in the last one, so
   * a plan cut short by an abort is taken up again on resume: the rows it wrote are kept, its edges
   * written again. Returns false when aborted before the end. No worker claims meanwhile: they
   * are woken once the first pass is over.
   */
  private async expandHyperflow(): Promise<boolean> {
    if (this.signal?.aborted) return false;
    const tasks = this.job.hyperflow ?? [];
    const steps = this.steps;
    const written = new Map(
      (this.db.prepare('SELECT id, key FROM tasks').all() as { id: number; key: string }[]).map((r) => [
        r.key,
        r.id,
      ]),
    );
    const ids: number[] = new Array(tasks.length);
    const depth = hyperflowDepths(tasks);
    const inBatches = async (body: (from: number, to: number) => void): Promise<boolean> => {
      for (let from = 0; from < tasks.length; from += PROPAGATE_BATCH) {
        if (this.signal?.aborted) return false;
        this.db.transaction(() => body(from, Math.min(tasks.length, from + PROPAGATE_BATCH))).immediate();
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      return true;
    };
    const rows = await inBatches((from, to) => {
      const counted = new CountDeltas();
      for (let k = from; k < to; k++) {
        const t = tasks[k]!;
        const st = steps.get(t.step)!;
        ids[k] =
          written.get(this.keyOf(st.name, t.payload.i)) ??
          this.insertRow(st, t.payload, t.after.length, depth[k], counted);
      }
      this.queue.addCounts(counted);
    });
    if (!rows) return false;
    // the edges of a plan cut short are written again (a HyperFlow job has no other edges)
    if (written.size > 0) this.db.prepare('DELETE FROM deps').run();
    const edge = this.db.prepare('INSERT INTO deps (task_id, dependent_id) VALUES (?, ?)');
    const edges = await inBatches((from, to) => {
      for (let k = from; k < to; k++) for (const a of tasks[k]!.after) edge.run(ids[a]!, ids[k]!);
    });
    if (!edges) return false;
    this.db
      .transaction(() => {
        const perStep = new Map<string, number>();
        for (const t of tasks) perStep.set(t.step, (perStep.get(t.step) ?? 0) + 1);
        for (const st of this.job.steps) this.setStepState(st.name, 'expanded', perStep.get(st.name) ?? 0);
      })
      .immediate();
    return true;
  }

  /** The early start asked of the current `advance`, until the first file map takes it. */
  private early: EarlyStart | undefined;

  /**
   * Steps whose inputs turned out wrong once the steps they need had run (a glob that matches
   * nothing), with the reason. Not stored: such a step fails this run (its dependents are not
   * planned either), the state is kept, and the next run plans it again.
   */
  private readonly unplannable = new Map<string, string>();

  private cannotPlan(st: StepDef, err: UsageError): { tasks: number; unplanned: string } {
    this.unplannable.set(st.name, err.message);
    return { tasks: 0, unplanned: err.message };
  }

  /** Whether a step can never be planned in this run: it or a step it reads or waits for could not be. */
  private waitsOnUnplannable(name: string): boolean {
    if (this.unplannable.has(name)) return true;
    const st = this.steps.get(name);
    if (!st) return false;
    const refs = [...(st.map?.outputsOf ? [st.map.outputsOf] : []), ...this.barriers(st)];
    return refs.some((r) => {
      const s = this.stepState(r);
      return s !== 'expanded' && s !== 'skipped' && this.waitsOnUnplannable(r);
    });
  }

  /** Steps not planned in this run: those that could not be (with the reason), and those waiting on them. */
  unplanned(): string[] {
    const out: string[] = [];
    for (const st of this.job.steps) {
      const reason = this.unplannable.get(st.name);
      if (reason !== undefined) out.push(`step ${st.name}: ${reason}`);
      else if (this.stepState(st.name) === undefined && this.waitsOnUnplannable(st.name))
        out.push(`step ${st.name}: not planned (it needs a step that could not be)`);
    }
    return out;
  }

  /** Expands a step if its inputs are known; returns undefined when it must wait. */
  private async tryExpand(
    st: StepDef,
  ): Promise<{ tasks: number; skipped?: string; unplanned?: string } | undefined> {
    if (this.job.format === 'hyperflow') {
      if (!(await this.expandHyperflow())) return undefined;
      return { tasks: this.job.hyperflow?.filter((t) => t.step === st.name).length ?? 0 };
    }
    const src = st.map?.outputsOf;
    const refs = [...(src ? [src] : []), ...this.barriers(st)];
    // a step whose inputs come from an earlier step needs that step's tasks to exist first
    for (const r of refs) {
      const s = this.stepState(r);
      if (s === undefined || s === 'waiting') return undefined;
    }
    const isFileMap = st.map !== undefined && st.map.outputsOf === undefined;
    const barriers = this.barriers(st);
    if (isFileMap && barriers.length > 0) {
      // files produced by earlier steps: list them only once those steps have finished
      for (const b of barriers) {
        const f = this.finished(b);
        if (!f.done) return undefined;
        if (f.failed) {
          this.setStepState(st.name, 'skipped');
          return { tasks: 0, skipped: `step ${b} failed` };
        }
      }
      // work has run by now: wrong inputs fail the run (its state kept), they are not bad input
      let n: number;
      try {
        n = await this.insertStream(st, expandFileMap(this.job, st, this.expand), 0, []);
      } catch (err) {
        if (err instanceof UsageError) return this.cannotPlan(st, err);
        throw err;
      }
      if (n === 0)
        return this.cannotPlan(
          st,
          new UsageError(
            `steps.${st.name}.map`,
            'matched no input after the steps it needs ran',
            'check the glob against what they write',
          ),
        );
      this.setStepState(st.name, 'expanded', n);
      return { tasks: n };
    }
    const skippedSrc = refs.find((r) => this.stepState(r) === 'skipped');
    if (skippedSrc) {
      this.setStepState(st.name, 'skipped');
      return { tasks: 0, skipped: `step ${skippedSrc} failed` };
    }
    let n: number;
    if (isFileMap) n = await this.insertStream(st, expandFileMap(this.job, st, this.expand), 0, []);
    else if (src) n = this.insertOutputsOf(st, src, barriers);
    else n = this.insertSingle(st, barriers);
    if (n === 0 && isFileMap) {
      throw new UsageError(
        this.job.spec.tasks ? 'tasks.map' : `steps.${st.name}.map`,
        'the inputs give no task (empty file or no lines)',
        'add inputs',
      );
    }
    this.setStepState(st.name, 'expanded', n);
    return { tasks: n };
  }

  private insertBarriers(st: StepDef, barriers: string[]): void {
    const ins = this.db.prepare('INSERT OR IGNORE INTO step_deps (step, needs) VALUES (?, ?)');
    for (const b of barriers) ins.run(st.name, b);
  }

  private insertStmt: Database.Statement | undefined;
  private insertAgainStmt: Database.Statement | undefined;

  /**
   * Inserts a task row; its count goes into `counted` (written by the caller at the end of its
   * transaction), or is written now without it. Inserts have no count trigger (migration 0003).
   */
  private insertRow(
    st: StepDef,
    p: TaskPayload,
    depsLeft: number,
    depth?: number,
    counted?: CountDeltas,
  ): number {
    // prepared once: a million-task map inserts through it a million times
    this.insertStmt ??= this.db.prepare(
      'INSERT INTO tasks (key, step, payload, max_attempts, state, deps_left, depth) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id',
    );
    const row = this.rowOf(st, p, depsLeft, depth);
    const r = this.insertStmt.get(...row) as {
      id: number;
    };
    this.countInsert(st.name, row[4], counted);
    return r.id;
  }

  private countInsert(step: string, state: string, counted: CountDeltas | undefined): void {
    if (counted) counted.add(step, state);
    else {
      const d = new CountDeltas();
      d.add(step, state);
      this.queue.addCounts(d);
    }
  }

  private insertSkipped(st: StepDef, p: TaskPayload, reason: string, counted?: CountDeltas): number {
    const r = this.db
      .prepare(
        "INSERT INTO tasks (key, step, payload, max_attempts, state, last_error, finished_at) VALUES (?, ?, ?, ?, 'skipped', ?, ?) RETURNING id",
      )
      .get(
        this.keyOf(st.name, p.i),
        st.name,
        JSON.stringify(p),
        st.retries.maxAttempts,
        reason,
        Date.now(),
      ) as {
      id: number;
    };
    this.countInsert(st.name, 'skipped', counted);
    return r.id;
  }

  /**
   * Blocked tasks that nothing can release any more (all else has finished) are skipped, so that a
   * run always ends; returns how many (0 when something can still release them).
   *
   * Decided under the write lock, from the state itself rather than from counts read earlier: a
   * worker that completes the last task of a step between the caller's `advance` and its counts
   * leaves nothing pending or leased, yet the step's dependents are releasable, not unreachable
   * (a chain of 100 fast `needs` steps lost ~95 of them that way).
   */
  skipUnreachable(): number {
    return this.db
      .transaction(() => {
        const c = this.queue.countsSync();
        if (c.blocked === 0 || c.pending + c.leased > 0) return 0;
        // a failure not yet passed on, or a barrier whose needed step has finished: the next
        // `advance` decides those tasks (skipped with their real reason, or released)
        const unpropagated = this.db
          .prepare("SELECT 1 FROM tasks WHERE state IN ('dead', 'skipped') AND propagated = 0 LIMIT 1")
          .get();
        if (unpropagated) return 0;
        for (const st of this.job.steps)
          for (const need of this.unsatisfied(st.name)) if (this.finished(need).done) return 0;
        return this.db
          .prepare(
            "UPDATE tasks SET state = 'skipped', last_error = 'skipped: its inputs can no longer be produced', finished_at = ? WHERE state = 'blocked'",
          )
          .run(Date.now()).changes;
      })
      .immediate();
  }

  /**
   * How each failure spread, e.g. `split/3 failed → count/3 skipped → step total skipped`, for
   * the first `limit` dead tasks.
   */
  failedPaths(limit = 10): string[] {
    const dead = this.db
      .prepare("SELECT id, key, step, payload FROM tasks WHERE state = 'dead' ORDER BY id LIMIT ? + 0")
      .all(limit) as {
      id: number;
      key: string;
      step: string;
      payload: string;
    }[];
    const next = this.db.prepare(
      "SELECT t.id, t.key, t.step FROM deps d JOIN tasks t ON t.id = d.dependent_id WHERE d.task_id = ? AND t.state = 'skipped' LIMIT 1",
    );
    const stepNext = this.db.prepare(
      "SELECT sd.step FROM step_deps sd WHERE sd.needs = ? AND (EXISTS (SELECT 1 FROM tasks t WHERE t.step = sd.step AND t.state = 'skipped') OR EXISTS (SELECT 1 FROM steps s WHERE s.name = sd.step AND s.state = 'skipped')) LIMIT 1",
    );
    return dead.map((d) => {
      const parts = [`${taskLabel(d.key, JSON.parse(d.payload) as TaskPayload)} failed`];
      let cur: { id: number; key: string; step: string } | undefined = d;
      let step = d.step;
      for (let hops = 0; hops < 50 && cur; hops++) {
        const n = next.get(cur.id) as { id: number; key: string; step: string } | undefined;
        if (n) parts.push(`${n.key} skipped`);
        cur = n;
        if (n) step = n.step;
      }
      const seen = new Set<string>([step]);
      for (let hops = 0; hops < 50; hops++) {
        const s =
          (stepNext.get(step) as { step: string } | undefined)?.step ?? this.fileMapSkippedAfter(step);
        if (!s || seen.has(s)) break;
        parts.push(`step ${s} skipped`);
        seen.add(s);
        step = s;
      }
      return parts.join(' → ');
    });
  }

  private fileMapSkippedAfter(step: string): string | undefined {
    const st = this.job.steps.find(
      (s) => this.stepState(s.name) === 'skipped' && this.barriers(s).includes(step),
    );
    return st?.name;
  }

  private async insertStream(
    st: StepDef,
    it: AsyncIterable<TaskPayload>,
    depsLeft: number,
    barriers: string[],
  ): Promise<number> {
    let batch: TaskPayload[] = [];
    let n = 0;
    // after an early start the workers claim meanwhile: shorter transactions keep them waiting less
    let smallRest = false;
    // a plan cut short (kill -9) left some of these rows without marking the step expanded: the
    // next run plans the step again, and the rows it finds are kept as they are (done or not)
    this.insertAgainStmt ??= this.db.prepare(
      'INSERT INTO tasks (key, step, payload, max_attempts, state, deps_left, depth) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING',
    );
    const again = this.insertAgainStmt;
    // every row of the step has the same state: counted once per transaction
    const insert = (rows: readonly TaskPayload[]) => {
      let added = 0;
      for (const p of rows) added += again.run(...this.rowOf(st, p, depsLeft)).changes;
      const d = new CountDeltas();
      d.add(st.name, depsLeft > 0 ? 'blocked' : 'pending', added);
      this.queue.addCounts(d);
    };
    const flush = () => {
      const rows = batch;
      this.db.transaction(() => insert(rows)).immediate();
      batch = [];
    };
    const collisions = outputCollisions(st, this.job.baseDir);
    for await (const p of it) {
      collisions?.(p);
      batch.push(p);
      n++;
      const early = this.early;
      if (early && batch.length >= early.rows) {
        flush();
        this.early = undefined;
        smallRest = true;
        early.onCommitted();
      } else if (batch.length >= (smallRest ? SMALL_PLAN_BATCH : INSERT_BATCH)) flush();
    }
    // the last rows, the barriers and the step's state in one transaction: planned at once or not at all
    this.db
      .transaction(() => {
        insert(batch);
        this.insertBarriers(st, barriers);
        if (n > 0) this.setStepState(st.name, 'expanded', n);
      })
      .immediate();
    return n;
  }

  /** One task per task of `src`; each depends on its source task (and on the step's barriers). */
  private insertOutputsOf(st: StepDef, src: string, barriers: string[]): number {
    const select = this.db.prepare('SELECT id, payload, state FROM tasks WHERE step = ? ORDER BY id');
    const edge = this.db.prepare('INSERT INTO deps (task_id, dependent_id) VALUES (?, ?)');
    const own = barriers.filter((b) => b !== src);
    // read and insert in one write transaction: a source task that a worker completes meanwhile
    // would otherwise find no edge to release, and its dependent would wait forever
    return this.db
      .transaction(() => {
        const rows = select.all(src) as { id: number; payload: string; state: string }[];
        const counted = new CountDeltas();
        let i = 0;
        for (const r of rows) {
          const up = JSON.parse(r.payload) as TaskPayload;
          const base: TaskPayload = { i: i++, p: up.o! };
          const p = st.outputs ? { ...base, o: outputKey(st.outputs, base, this.job.baseDir) } : base;
          // an input that is already committed is no reason to wait
          if (r.state === 'dead' || r.state === 'skipped') {
            // its input will never come: decided now, since the source's fate was passed on already
            if (r.state === 'dead' && this.steps.get(src)?.continueOnFailure)
              this.insertRow(st, p, own.length, undefined, counted);
            // with its edge: a re-run that retries the source makes it wait for it again
            else
              edge.run(
                r.id,
                this.insertSkipped(
                  st,
                  p,
                  `skipped: needs task ${this.keyOf(src, up.i)}, which failed`,
                  counted,
                ),
              );
            continue;
          }
          // an input that is already committed is no reason to wait
          const id = this.insertRow(st, p, own.length + (r.state === 'done' ? 0 : 1), undefined, counted);
          if (r.state !== 'done') edge.run(r.id, id);
        }
        this.queue.addCounts(counted);
        this.insertBarriers(st, own);
        this.setStepState(st.name, 'expanded', rows.length);
        return rows.length;
      })
      .immediate();
  }

  /** One task (a reduce over all outputs of a step, or a plain task) behind the step's barriers. */
  private insertSingle(st: StepDef, barriers: string[]): number {
    let p: TaskPayload = { i: 0 };
    if (st.reduce) {
      const ins = (
        this.db.prepare('SELECT payload FROM tasks WHERE step = ? ORDER BY id').all(st.reduce) as {
          payload: string;
        }[]
      )
        .map((r) => (JSON.parse(r.payload) as TaskPayload).o!)
        .filter(Boolean);
      p = { i: 0, ins };
    }
    if (st.outputs) p = { ...p, o: outputKey(st.outputs, p, this.job.baseDir) };
    const task = p;
    this.db
      .transaction(() => {
        this.insertRow(st, task, barriers.length);
        this.insertBarriers(st, barriers);
        this.setStepState(st.name, 'expanded', 1);
      })
      .immediate();
    return 1;
  }

  private releaseBarrier(step: string): void {
    this.db
      .prepare(
        `UPDATE tasks SET deps_left = deps_left - 1,
           state = CASE WHEN state = 'blocked' AND deps_left <= 1 THEN 'pending' ELSE state END
         WHERE step = ? AND state = 'blocked'`,
      )
      .run(step);
  }

  private skipStepTasks(step: string, reason: string): number {
    return this.db
      .prepare(
        "UPDATE tasks SET state = 'skipped', last_error = ?, finished_at = ? WHERE step = ? AND state IN ('blocked', 'pending')",
      )
      .run(reason, Date.now(), step).changes;
  }

  /**
   * Dead and skipped tasks pass their fate along task edges: dependents are skipped, or, below a
   * step with `continueOnFailure`, released as if the input were done (it is just missing). A
   * skipped dependent passes its fate on in the same pass, so a chain of N tasks takes one pass
   * (not N passes over every step); the work is split into transactions of PROPAGATE_BATCH tasks
   * with the event loop served between them, and an abort stops it between two (the rest is
   * still marked to pass on, and the next pass goes on from there).
   */
  private async propagateFailures(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = this.propagateBatch();
      total += n;
      if (n === 0 || this.signal?.aborted) return total;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  private propagateStmts:
    | { select: Database.Statement; mark: Database.Statement; skip: Database.Statement }
    | undefined;

  /** Passes on the fate of up to PROPAGATE_BATCH dead or skipped tasks, in one transaction. */
  private propagateBatch(): number {
    this.propagateStmts ??= {
      select: this.db.prepare(
        "SELECT id, key, step, state FROM tasks WHERE state IN ('dead', 'skipped') AND propagated = 0 LIMIT ?",
      ),
      mark: this.db.prepare('UPDATE tasks SET propagated = 1 WHERE id = ?'),
      skip: this.db.prepare(
        `UPDATE tasks SET state = 'skipped', last_error = ?, finished_at = ?
         WHERE id IN (SELECT dependent_id FROM deps WHERE task_id = ?) AND state IN ('blocked', 'pending')
         RETURNING id, key, step, state`,
      ),
    };
    const { select, mark, skip } = this.propagateStmts;
    type Row = { id: number; key: string; step: string; state: string };
    return this.db
      .transaction(() => {
        const work = select.all(PROPAGATE_BATCH) as Row[];
        let n = 0;
        // what this batch skips is passed on in it too, up to the batch size; the rest stays
        // unpropagated and the next batch selects it
        while (work.length > 0 && n < PROPAGATE_BATCH) {
          const r = work.pop()!;
          if (r.state === 'dead' && this.steps.get(r.step)?.continueOnFailure)
            this.queue.releaseDependents(r.id);
          else
            work.push(
              ...(skip.all(
                `skipped: needs task ${r.key}, which ${r.state === 'dead' ? 'failed' : 'was skipped'}`,
                Date.now(),
                r.id,
              ) as Row[]),
            );
          mark.run(r.id);
          n++;
        }
        return n;
      })
      .immediate();
  }

  /** The values of a task row: key, step, payload, max attempts, state, needs left, depth. */
  private rowOf(
    st: StepDef,
    p: TaskPayload,
    depsLeft: number,
    depth = this.depthOf(st.name),
  ): [string, string, string, number, string, number, number] {
    return [
      this.keyOf(st.name, p.i),
      st.name,
      JSON.stringify(p),
      st.retries.maxAttempts,
      depsLeft > 0 ? 'blocked' : 'pending',
      depsLeft,
      depth,
    ];
  }

  private readonly depths = new Map<string, number>();

  /**
   * How deep a step sits: 0 for one that reads and waits for no other step, else one more than the
   * deepest of those. Ready tasks of deeper steps are claimed first (depth-first), so a task
   * starts as soon as its input is committed instead of after every task of the steps before it.
   */
  private depthOf(name: string, seen: ReadonlySet<string> = new Set()): number {
    const known = this.depths.get(name);
    if (known !== undefined) return known;
    const st = this.steps.get(name);
    if (!st || seen.has(name)) return 0;
    const refs = [...(st.map?.outputsOf ? [st.map.outputsOf] : []), ...this.barriers(st)];
    const inner = new Set([...seen, name]);
    const d = refs.reduce((m, r) => Math.max(m, this.depthOf(r, inner) + 1), 0);
    this.depths.set(name, d);
    return d;
  }

  /** Every step expanded or skipped, or never to be planned in this run (see `unplanned`). */
  allExpanded(): boolean {
    // once true, for good: a step is never planned again
    this.expandedAll ||= this.job.steps.every((s) => {
      const st = this.stepState(s.name);
      return st === 'expanded' || st === 'skipped' || this.waitsOnUnplannable(s.name);
    });
    return this.expandedAll;
  }

  private expandedAll = false;

  /** Steps that were skipped whole (never expanded) because a step they need failed. */
  skippedSteps(): string[] {
    return (
      this.db.prepare("SELECT name FROM steps WHERE state = 'skipped'").all() as { name: string }[]
    ).map((r) => r.name);
  }

  /**
   * How a run of the workflow ended, from the counts at its end: steps skipped whole, promised
   * outputs (HyperFlow `outs`) missing from the job folder (not checked when `checkOutputs` is
   * false), and the status.
   */
  outcome(
    counts: TaskCounts,
    interrupted: boolean,
    checkOutputs = true,
  ): { status: 'succeeded' | 'failed' | 'interrupted'; skippedSteps: string[]; missingOutputs: string[] } {
    const skippedSteps = this.skippedSteps();
    const missingOutputs =
      interrupted || !checkOutputs
        ? []
        : (this.job.outs ?? []).filter((f) => !existsSync(path.resolve(this.job.baseDir, f)));
    const status = interrupted
      ? 'interrupted'
      : counts.dead + counts.skipped > 0 ||
          skippedSteps.length > 0 ||
          missingOutputs.length > 0 ||
          this.unplannable.size > 0
        ? 'failed'
        : 'succeeded';
    return { status, skippedSteps, missingOutputs };
  }

  /**
   * Gives a finished job's failures another go (a re-run of a failed job): dead tasks get their
   * attempts again; skipped tasks wait again for what they need (deps left recomputed from the
   * current states of their inputs and of their step's barriers); steps skipped whole are planned
   * again; barriers that a failure had settled wait again. Committed work stays done. One write
   * transaction (BEGIN IMMEDIATE): a deferred read-then-write could not upgrade its lock while a
   * worker wrote. Returns what it reset.
   */
  retryFailed(): { dead: number; skipped: number; steps: number } {
    return this.db
      .transaction(() => {
        const failedSteps = (
          this.db.prepare("SELECT name FROM steps WHERE state = 'skipped'").all() as { name: string }[]
        ).map((r) => r.name);
        const c = this.queue.countsSync();
        if (c.dead + c.skipped === 0 && failedSteps.length === 0) return { dead: 0, skipped: 0, steps: 0 };
        // barriers a failure settled (their step's tasks were skipped): decided before the reset
        const settled = (
          this.db.prepare('SELECT step, needs FROM step_deps WHERE satisfied = 1').all() as {
            step: string;
            needs: string;
          }[]
        ).filter((d) => this.finished(d.needs).failed);
        // a dead task below continueOnFailure released its dependents already: its edges are spent
        for (const st of this.job.steps)
          if (st.continueOnFailure)
            this.db
              .prepare(
                "DELETE FROM deps WHERE task_id IN (SELECT id FROM tasks WHERE step = ? AND state = 'dead' AND propagated = 1)",
              )
              .run(st.name);
        let dead = 0;
        const revive = this.db.prepare(
          `UPDATE tasks SET state = 'pending', max_attempts = attempts + ?, run_at = 0, owner = NULL,
             lease_expires = NULL, finished_at = NULL, last_error = NULL, propagated = 0
           WHERE step = ? AND state = 'dead'`,
        );
        for (const st of this.job.steps) dead += revive.run(st.retries.maxAttempts, st.name).changes;
        const unskip = this.db
          .prepare(
            `UPDATE tasks SET state = 'blocked', deps_left = 0, finished_at = NULL, last_error = NULL, propagated = 0
             WHERE state = 'skipped' RETURNING id`,
          )
          .all() as { id: number }[];
        const unsettle = this.db.prepare('UPDATE step_deps SET satisfied = 0 WHERE step = ? AND needs = ?');
        for (const d of settled) unsettle.run(d.step, d.needs);
        const replan = this.db.prepare('DELETE FROM steps WHERE name = ?');
        for (const name of failedSteps) replan.run(name);
        // what each task still waits for: its inputs not done yet, and its step's open barriers
        const wait = this.db.prepare(
          `UPDATE tasks SET deps_left =
             (SELECT count(*) FROM deps d JOIN tasks s ON s.id = d.task_id WHERE d.dependent_id = tasks.id AND s.state <> 'done')
             + (SELECT count(*) FROM step_deps sd WHERE sd.step = tasks.step AND sd.satisfied = 0)
           WHERE id = ?`,
        );
        const ready = this.db.prepare("UPDATE tasks SET state = 'pending' WHERE id = ? AND deps_left <= 0");
        for (const r of unskip) {
          wait.run(r.id);
          ready.run(r.id);
        }
        this.expandedAll = false;
        return { dead, skipped: unskip.length, steps: failedSteps.length };
      })
      .immediate();
  }

  /** Steps that read the outputs of a step or wait for it (`outputsOf`, `reduce`, `needs`). */
  private readersOf(name: string): string[] {
    return this.job.steps
      .filter((s) => s.map?.outputsOf === name || this.barriers(s).includes(name))
      .map((s) => s.name);
  }

  /**
   * Steps whose inputs a re-run looks at again: planned local glob maps that wait for no step
   * (their inputs are the user's files, not what earlier steps write).
   */
  private globSteps(): StepDef[] {
    if (this.job.format === 'hyperflow' || !this.expand.stamp) return [];
    return this.job.steps.filter(
      (st) =>
        st.map?.glob !== undefined &&
        !st.map.glob.startsWith('s3://') &&
        this.barriers(st).length === 0 &&
        this.stepState(st.name) === 'expanded',
    );
  }

  /**
   * On a re-run: lists the glob of each planned glob map again and plans the files that appeared
   * since, as new tasks keyed after the last one (an existing key never changes meaning), checked
   * for output collisions with the step's other tasks. Files of a step that other steps read are
   * counted, not planned (those steps' plans are fixed: `--fresh` plans them all again).
   */
  async planNewInputs(): Promise<{ added: number; waiting: Array<{ step: string; inputs: number }> }> {
    let added = 0;
    const waiting: Array<{ step: string; inputs: number }> = [];
    for (const st of this.globSteps()) {
      const rows = (
        this.db.prepare('SELECT payload FROM tasks WHERE step = ?').all(st.name) as { payload: string }[]
      ).map((r) => JSON.parse(r.payload) as TaskPayload);
      const known = new Set(rows.map((p) => p.p));
      let next = rows.reduce((n, p) => Math.max(n, p.i + 1), 0);
      const collisions = outputCollisions(st, this.job.baseDir);
      for (const p of rows) collisions?.(p);
      const fresh: TaskPayload[] = [];
      for await (const p of expandFileMap(this.job, st, this.expand)) {
        if (known.has(p.p)) continue;
        const base: TaskPayload = { ...p, i: next++ };
        const q = st.outputs ? { ...base, o: outputKey(st.outputs, base, this.job.baseDir) } : base;
        collisions?.(q);
        fresh.push(q);
      }
      if (fresh.length === 0) continue;
      if (this.readersOf(st.name).length > 0) {
        waiting.push({ step: st.name, inputs: fresh.length });
        continue;
      }
      this.db
        .transaction(() => {
          const counted = new CountDeltas();
          for (const p of fresh) this.insertRow(st, p, 0, undefined, counted);
          this.queue.addCounts(counted);
          this.db.prepare('UPDATE steps SET tasks = tasks + ? WHERE name = ?').run(fresh.length, st.name);
        })
        .immediate();
      added += fresh.length;
    }
    return { added, waiting };
  }

  /**
   * Done tasks of glob maps whose input file differs now (size or mtime) from what their output
   * was made from (its stamp at plan time); with `redo`, those of steps that no other step reads
   * run again, their new output replacing the old one atomically (the task's stamp is renewed).
   * Returns how many inputs changed, and how many of them are redone.
   */
  async changedInputs(redo: boolean): Promise<{ changed: number; redone: number; steps: string[] }> {
    let changed = 0;
    let redone = 0;
    const steps = new Set<string>();
    for (const st of this.globSteps()) {
      const rows = this.db
        .prepare("SELECT id, payload FROM tasks WHERE step = ? AND state = 'done'")
        .all(st.name) as { id: number; payload: string }[];
      const renew: Array<{ id: number; p: TaskPayload }> = [];
      for (const r of rows) {
        const p = JSON.parse(r.payload) as TaskPayload;
        if (p.p === undefined || p.z === undefined) continue;
        let now: { size: number; mtimeMs: number };
        try {
          now = await fsp.stat(path.resolve(this.job.baseDir, p.p));
        } catch {
          continue; // a file gone is not planned again; its output stays what it was
        }
        if (now.size === p.z && now.mtimeMs === p.m) continue;
        changed++;
        steps.add(st.name);
        renew.push({ id: r.id, p: { ...p, z: now.size, m: now.mtimeMs, r: 1 } });
      }
      if (!redo || renew.length === 0 || this.readersOf(st.name).length > 0) continue;
      const again = this.db.prepare(
        `UPDATE tasks SET payload = ?, state = 'pending', max_attempts = attempts + ?, run_at = 0,
           finished_at = NULL, outcome = NULL WHERE id = ? AND state = 'done'`,
      );
      this.db
        .transaction(() => {
          for (const { id, p } of renew)
            redone += again.run(JSON.stringify(p), st.retries.maxAttempts, id).changes;
        })
        .immediate();
    }
    return { changed, redone, steps: [...steps] };
  }

  /** Marks tasks done whose outputs the store already has, releasing their dependents. */
  markFound(ids: readonly number[]): void {
    // from leased, counted here; from any other state but done, by the trigger (migration 0003)
    const fromLeased = this.db.prepare(
      "UPDATE tasks SET state = 'done', owner = NULL, lease_expires = NULL, finished_at = ?, outcome = 'found' WHERE id = ? AND state = 'leased' RETURNING step",
    );
    const upd = this.db.prepare(
      "UPDATE tasks SET state = 'done', owner = NULL, lease_expires = NULL, finished_at = ?, outcome = 'found' WHERE id = ? AND state NOT IN ('done', 'leased')",
    );
    const now = Date.now();
    this.db
      .transaction(() => {
        const counted = new CountDeltas();
        for (const id of ids) {
          const leased = fromLeased.get(now, id) as { step: string } | undefined;
          if (leased) counted.move(leased.step, 'leased', 'done');
          if (leased || upd.run(now, id).changes > 0) this.queue.releaseDependents(id);
        }
        this.queue.addCounts(counted);
      })
      .immediate();
  }
}

/**
 * Each HyperFlow task's depth: 0 for one that waits for no signal, else one more than the deepest
 * task it waits for (its processes repeat, so depth is per task, not per process name).
 */
function hyperflowDepths(tasks: ReadonlyArray<{ readonly after: readonly number[] }>): number[] {
  const depth: number[] = new Array(tasks.length).fill(-1);
  for (let root = 0; root < tasks.length; root++) {
    if (depth[root]! >= 0) continue;
    // iterative: a chain of thousands of tasks would overflow the stack
    const stack = [root];
    const onStack = new Set<number>([root]);
    while (stack.length > 0) {
      const k = stack.at(-1)!;
      const todo = tasks[k]!.after.find((a) => depth[a]! < 0 && !onStack.has(a));
      if (todo !== undefined) {
        stack.push(todo);
        onStack.add(todo);
        continue;
      }
      depth[k] = tasks[k]!.after.reduce((m, a) => Math.max(m, (depth[a] ?? -1) + 1), 0);
      stack.pop();
      onStack.delete(k);
    }
  }
  return depth;
}

/**
 * A check that no two tasks of a step write one output (`data/a b.txt` and `data/a_b.txt` with
 * `outputs: out/{input.name}.gz`: the second commit would be discarded as a duplicate and its
 * result lost). Undefined when the pattern is unique by construction ({index}) or absent.
 */
function outputCollisions(st: StepDef, baseDir: string): ((p: TaskPayload) => void) | undefined {
  const pattern = st.outputs;
  if (!pattern || placeholdersIn(pattern).includes('index')) return undefined;
  const seen = new Map<string, string>();
  return (p) => {
    const key = outputKey(pattern, p, baseDir);
    const from = p.p ?? p.l ?? `task ${p.i}`;
    const other = seen.get(key);
    if (other !== undefined) {
      throw new UsageError(
        st.name === MAP_STEP ? 'outputs' : `steps.${st.name}.outputs`,
        `"${pattern}" gives ${key} for both ${JSON.stringify(other)} and ${JSON.stringify(from)}: one result would be lost`,
        'put {input.path} or {index} in the pattern, or rename one of the inputs',
      );
    }
    seen.set(key, from);
  };
}
