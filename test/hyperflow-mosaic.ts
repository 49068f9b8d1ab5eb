/** The Montage-shaped HyperFlow workflow the tests write (index and name forms). */
export const N = 8;

/**
 * A Montage-shaped workflow (project → diff → concat → model → background → add), 26 processes.
 * Each process appends "<name> <start ns> <last argument (its output)>" to `trace`.
 */
export function mosaic(form: 'index' | 'name', trace = 'trace.log') {
  const signals: Array<{ name: string; data?: unknown }> = [];
  const sig = (name: string) => {
    let i = signals.findIndex((s) => s.name === name);
    if (i < 0) i = signals.push({ name }) - 1;
    return form === 'index' ? i : name;
  };
  const sh = (script: string, ins: string[], outs: string[], name: string, extra: string[] = []) => ({
    name,
    function: 'command',
    type: 'dataflow',
    parlevel: 0,
    config: {
      executor: {
        executable: 'sh',
        args: [
          '-c',
          `echo "$0 $(date +%s%N) $(eval echo \\\${$#})" >> '${trace}'; ${script}`,
          name,
          ...extra,
          ...ins,
          ...outs,
        ],
      },
    },
    ins: ins.map(sig),
    outs: outs.map(sig),
  });
  const processes = [];
  for (let i = 0; i < N; i++)
    processes.push(
      sh('echo "projected $(cat "$2") x$1" > "$3"', [`in_${i}.txt`], [`proj_${i}.txt`], 'mProject', [
        '{{scale}}',
      ]),
    );
  for (let i = 0; i < N - 1; i++)
    processes.push(
      sh('cat "$1" "$2" | wc -l > "$3"', [`proj_${i}.txt`, `proj_${i + 1}.txt`], [`diff_${i}.txt`], 'mDiff'),
    );
  const diffs = Array.from({ length: N - 1 }, (_, i) => `diff_${i}.txt`);
  processes.push(
    sh(
      // biome-ignore lint/suspicious/noTemplateCurlyInString: ${$#} is a shell expression (the last argument)
      'shift 0; out=$(eval echo \\${$#}); cat $(echo "$@" | tr " " "\\n" | head -n -1) > "$out"',
      diffs,
      ['diffs.tbl'],
      'mConcatFit',
    ),
  );
  processes.push(sh('wc -l < "$1" > "$2"', ['diffs.tbl'], ['corrections.tbl'], 'mBgModel'));
  for (let i = 0; i < N; i++)
    processes.push(
      sh('cat "$1" "$2" > "$3"', [`proj_${i}.txt`, 'corrections.tbl'], [`bg_${i}.txt`], 'mBackground'),
    );
  const bgs = Array.from({ length: N }, (_, i) => `bg_${i}.txt`);
  processes.push(
    sh(
      // biome-ignore lint/suspicious/noTemplateCurlyInString: ${$#} is a shell expression (the last argument)
      'out=$(eval echo \\${$#}); cat $(echo "$@" | tr " " "\\n" | head -n -1) > "$out"',
      bgs,
      ['mosaic.txt'],
      'mAdd',
    ),
  );
  const ins = Array.from({ length: N }, (_, i) => sig(`in_${i}.txt`));
  return { name: 'mosaic', processes, signals, ins, outs: [sig('mosaic.txt')] };
}

export function inputs(): Record<string, string> {
  return Object.fromEntries(Array.from({ length: N }, (_, i) => [`in_${i}.txt`, `tile ${i}\n`]));
}
