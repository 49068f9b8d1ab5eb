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
 * Every `{name}` a template holds, in order, corral's or not (escaped `{{…}}` excluded): an
 * `outputs` pattern may hold only corral's, a command any.
 */
export function placeholdersIn(template: string): string[] {
  return [...template.matchAll(TOKEN)].flatMap((m) => (m[1] === undefined ? [] : [m[1]]));
}
