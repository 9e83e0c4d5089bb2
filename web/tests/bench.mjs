// Training steps per second in Debian's Chromium (WebGPU on SwiftShader; f16 takes the
// packed path there). Run by `cargo xtask web-bench`, which builds web/pkg (and, with
// --rev, an older revision's) and serves each build on its own port:
//
//   node web/tests/bench.mjs STEPS ROUNDS LABEL=URL [LABEL=URL ...]
//
// For each model (the demo's default 64-128-128-10 with LayerNorm, and a plain MLP
// 64-256-256-10) and each precision, each build in turn (one tab per build, cases
// interleaved so a busy machine slows every build alike): a fresh trainer, 5 warm-up
// steps and a readback, then STEPS steps submitted at once and ended by one statistics
// readback. ROUNDS rounds; the best round counts (software WebGPU shares the CPU with
// everything else). Beside wall-clock steps/s it reports the CPU time the browser's
// processes spent per step (from /proc, Linux): on a machine busy with other work that
// figure still compares builds fairly. Prints one line per case and a JSON line
// `BENCH {...}`.

import { chromium } from 'playwright-core';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [stepsArg, roundsArg, ...buildArgs] = process.argv.slice(2);
const builds = buildArgs.map((a) => {
  const i = a.indexOf('=');
  return { label: a.slice(0, i), url: a.slice(i + 1) };
});
if (!(Number(stepsArg) > 0) || !(Number(roundsArg) > 0) || builds.length === 0 ||
  builds.some((b) => !b.label || !b.url)) {
  console.error('usage: node bench.mjs STEPS ROUNDS LABEL=URL [LABEL=URL ...]');
  process.exit(2);
}
const STEPS = Number(stepsArg);
const ROUNDS = Number(roundsArg);
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
  for (const b of builds) {
    b.page = await context.newPage();
    b.page.on('console', (m) => m.type() === 'error' && !m.text().includes('404') &&
      console.log(`${b.label} console.error: ${m.text()}`));
    // Any same-origin page will do: the package is imported directly, the demo never runs.
    await b.page.goto(`${b.url}pkg/halfgrad.js`);
  }
  const results = [];
  for (const model of MODELS) {
    for (const precision of PRECISIONS) {
      for (const b of builds) {
        const rounds = [];
        for (let round = 0; round < ROUNDS; round++) {
          // The browser's CPU time over the timed part only: the page marks its start.
          const t = await b.page.evaluate(prepare, [model, precision]);
          const cpuStart = browserCpuSeconds();
          const r = await b.page.evaluate(timeSteps, STEPS);
          const cpu = browserCpuSeconds() - cpuStart;
          rounds.push({ ...r, ...t, cpu_ms_per_step: (1000 * cpu) / STEPS });
        }
        const best = rounds.reduce((x, y) => (y.steps_per_s > x.steps_per_s ? y : x));
        best.cpu_ms_per_step = Math.min(...rounds.map((r) => r.cpu_ms_per_step));
        const row = { build: b.label, model: model.name, precision, ...best,
          rounds: rounds.map((r) => r.steps_per_s) };
        results.push(row);
        console.log(`${b.label.padEnd(10)} ${model.name.padEnd(34)} ${precision.padEnd(5)} ` +
          `${best.steps_per_s.toFixed(1).padStart(7)} steps/s  ${best.ms_per_step.toFixed(1).padStart(7)} ms/step` +
          `  cpu ${best.cpu_ms_per_step.toFixed(1).padStart(7)} ms/step` +
          `  (rounds: ${rounds.map((r) => r.steps_per_s.toFixed(1)).join(', ')}; loss ${best.loss.toFixed(6)})`);
      }
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

/** CPU seconds (user + system) of every process of this browser (its profile directory
 * is on each one's command line). */
function browserCpuSeconds() {
  let ticks = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(profile)) continue;
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
    } catch {
      // the process ended meanwhile
    }
  }
  return ticks / 100; // USER_HZ
}

/** In the page: a fresh trainer, warm-up steps and a readback. */
async function prepare([model, precision]) {
  const m = await import('/pkg/halfgrad.js');
  await m.default();
  window.session ??= await m.Session.open(true);
  await window.session.benchTrainer(precision, model.hidden, model.layerNorm);
  window.session.step(5);
  await window.session.stats();
  return {};
}

/** In the page: `steps` steps submitted at once, ended by one statistics readback. */
async function timeSteps(steps) {
  const s = window.session;
  const t0 = performance.now();
  s.step(steps);
  const stats = JSON.parse(await s.stats());
  const seconds = (performance.now() - t0) / 1000;
  return { steps_per_s: steps / seconds, ms_per_step: (1000 * seconds) / steps, loss: stats.loss };
}
