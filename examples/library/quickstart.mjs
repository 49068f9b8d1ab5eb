import { defineJob, resolveJob, runJob } from 'corral';

const spec = defineJob({
  name: 'upper',
  tasks: { map: { glob: 'in/*.txt' }, command: 'tr a-z A-Z < {input}' },
  outputs: 'out/{input.stem}.txt',
});
const summary = await runJob(resolveJob(spec, `${process.cwd()}/job.yaml`), { stateDir: '.corral' });
console.log(summary.status, summary.counts); // succeeded { …, done: 3, … }
