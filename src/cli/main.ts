#!/usr/bin/env node
/**
 * The `corral` executable. A local `corral run` starts its workers first (early-start.ts), then
 * the command line loads (program.ts).
 */
import { discardEarly, startEarly } from './early-start.js';

startEarly(process.argv);
try {
  const { main } = await import('./program.js');
  await main(process.argv);
} finally {
  discardEarly(); // a command line refused before the run (an unknown flag, say) leaves none behind
}
