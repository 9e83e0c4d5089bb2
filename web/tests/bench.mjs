// Training steps per second in Debian's Chromium (WebGPU on SwiftShader; f16 takes the
// packed path there). Run by `cargo xtask web-bench`, which builds web/pkg (and, with
// --rev, an older revision's) and serves it:
//
//   node web/tests/bench.mjs URL LABEL [STEPS]
//
// For each model (the demo's default 64-128-128-10 with LayerNorm, and a plain MLP
// 64-256-256-10) and each precision: one trainer, 5 warm-up steps and a readback, then
// STEPS steps submitted at once and ended by one statistics readback (the page's own loop
// submits a few steps per frame and reads the statistics as often). Prints one line per
// case and a JSON line `BENCH {...}` with every figure.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, label = 'build', stepsArg = '40'] = process.argv.slice(2);
if (!url) {
  console.error('usage: node bench.mjs URL LABEL [STEPS]');
  process.exit(2);
}
const STEPS = Number(stepsArg);
const MODELS = [
  { name: 'default 64-128-128-10 + LayerNorm', hidden: '128,128', layerNorm: true },
  { name: 'mlp 64-256-256-10', hidden: '256,256', layerNorm: false },
];
const PRECISIONS = ['f16', 'bf16', 'f32'];

const profile = mkdtempSync(join(tmpdir(), 'halfgrad-bench-'));
let context;
let code = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.HALFGRAD_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => m.type() === 'error' && console.log(`console.error: ${m.text()}`));
  // Any same-origin page will do: the package is imported directly, the demo never runs.
  await page.goto(`${url}pkg/halfgrad.js`);
  const results = [];
  for (const model of MODELS) {
    for (const precision of PRECISIONS) {
      const r = await page.evaluate(async ([model, precision, steps]) => {
        const m = await import('/pkg/halfgrad.js');
        await m.default();
        window.session ??= await m.Session.open(true);
        const s = window.session;
        await s.benchTrainer(precision, model.hidden, model.layerNorm);
        s.step(5);
        await s.stats();
        const t0 = performance.now();
        s.step(steps);
        const stats = JSON.parse(await s.stats());
        const seconds = (performance.now() - t0) / 1000;
        return { steps_per_s: steps / seconds, ms_per_step: (1000 * seconds) / steps, loss: stats.loss };
      }, [model, precision, STEPS]);
      const row = { build: label, model: model.name, precision, ...r };
      results.push(row);
      console.log(`${label.padEnd(10)} ${model.name.padEnd(34)} ${precision.padEnd(5)} ` +
        `${r.steps_per_s.toFixed(1).padStart(7)} steps/s  ${r.ms_per_step.toFixed(1).padStart(7)} ms/step`);
    }
  }
  console.log(`BENCH ${JSON.stringify(results)}`);
} catch (e) {
  code = 1;
  console.error(`bench: ${e.stack || e}`);
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
