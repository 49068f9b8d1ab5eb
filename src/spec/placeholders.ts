/**
 * Placeholders in command templates and `outputs` patterns: `{name}` is a placeholder only when
 * `name` is one of corral's ({@link PLACEHOLDERS}); any other brace is left as written (a shell's
 * `awk '{print}'`, `${VAR}`), and `{{` / `}}` write a literal `{` / `}` (as in Snakemake), so
 * `{{input}}` reaches the shell as `{input}`.
 */

/** Placeholders a command template or an `outputs` pattern may use. */
export const PLACEHOLDERS = [
  'input',
  'inputs',
  'inputs.file',
  'input.path',
  'input.name',
  'input.stem',
  'output',
  'index',
  'chunk.start',
  'chunk.end',
  'chunk.length',
  'attempt',
] as const;

/** One pass over a template: `{{`, `}}`, or a `{name}` of lowercase letters and dots. */
const TOKEN = /\{\{|\}\}|\{([a-z.]+)\}/g;

/**
 * Fills a template: each placeholder of `names` becomes `fill(name)` (undefined keeps it as
 * written); `{{` and `}}` become `{` and `}`; everything else is kept.
 */
export function fillPlaceholders(
  template: string,
  fill: (name: string) => string | undefined,
  names: readonly string[] = PLACEHOLDERS,
): string {
  return template.replace(TOKEN, (m, name: string | undefined) => {
    if (name === undefined) return m[0]!;
    return names.includes(name) ? (fill(name) ?? m) : m;
  });
}

/**
 * The placeholders a template uses, in order (escaped `{{…}}` excluded). With `shape`, every
 * `{name}` whose name matches it counts (for `outputs`, where any such name is an error).
 */
export function placeholdersIn(template: string, shape?: RegExp): string[] {
  const out: string[] = [];
  for (const m of template.matchAll(TOKEN)) {
    const name = m[1];
    if (name !== undefined && (shape ? shape.test(name) : (PLACEHOLDERS as readonly string[]).includes(name)))
      out.push(name);
  }
  return out;
}
