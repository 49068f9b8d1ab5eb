/** Debian chromium driven by playwright-core for the observability tests (no browser download). */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type BrowserContext, chromium } from 'playwright-core';

/** Where .ci/run installs chromium. */
export const CHROMIUM = '/usr/bin/chromium';

/** Whether chromium is installed (the browser tests are skipped with a reason when it is not). */
export const hasChromium = existsSync(CHROMIUM);

/** Launches headless chromium with a fresh profile; closed and removed after the test. */
export async function launchBrowser(t: {
  after: (fn: () => Promise<void> | void) => void;
}): Promise<BrowserContext> {
  const profile = mkdtempSync(path.join(os.tmpdir(), 'corral-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  t.after(async () => {
    await ctx.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  });
  return ctx;
}

/** Parses Prometheus text into samples `name{labels}` → value. */
export function parseProm(
  text: string,
): Array<{ name: string; labels: Record<string, string>; value: number }> {
  const out: Array<{ name: string; labels: Record<string, string>; value: number }> = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}
