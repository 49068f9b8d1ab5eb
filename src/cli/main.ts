#!/usr/bin/env node
/**
 * The `corral` executable. A local `corral run` starts its workers first (early-start.ts), then
 * the command line loads (program.ts).
 */
import { startEarly } from './early-start.js';

startEarly(process.argv);
const { main } = await import('./program.js');
await main(process.argv);
