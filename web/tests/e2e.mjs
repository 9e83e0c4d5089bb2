// End-to-end test of the demo page in Debian's Chromium (WebGPU on SwiftShader, which has
// no shader-f16, so F16 runs the packed path). Run by `cargo xtask test`, which builds
// web/pkg and serves web/:
//
//   node web/tests/e2e.mjs http://127.0.0.1:PORT/ OUT_DIR
//
// Checks: without WebGPU the page names the browsers that work; the page opens a WebGPU
// device and names the adapter; the GPU cast self-check passes bit for bit; F16 training
// (packed path) lowers the loss and passes an accuracy threshold; a checkpoint downloads;
// BF16 trains from scratch without loss scaling; the F16 checkpoint uploads and resumes;
// a simulated device loss shows the message and the restart button, which resumes from the
// last checkpoint; the console shows no errors beyond the ones the device-loss drill causes.
// Writes OUT_DIR/screenshot.png (mid-training), OUT_DIR/digits.safetensors (the F16
// checkpoint at step STEPS, which xtask then resumes with the native CLI) and
// OUT_DIR/report.json.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, outDir] = process.argv.slice(2);
if (!url || !outDir) {
  console.error('usage: node e2e.mjs URL OUT_DIR');
  process.exit(2);
}

// Steps to train and what they must reach (digits MLP, F16 on the packed path).
const STEPS = 300;
const BF16_STEPS = 40;
const MIN_ACCURACY = 0.85;
const TOTAL_TIMEOUT_MS = 8 * 60 * 1000;

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--enable-unsafe-webgpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

const t0 = Date.now();
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1)}s`;
const log = (...a) => console.log(`    [${elapsed()}]`, ...a);
const report = { url, checks: [], console_errors: [] };
function check(name, ok, detail = '') {
  report.checks.push({ name, ok, detail });
  log(`${ok ? 'PASS' : 'FAIL'} ${name}${detail ? ` (${detail})` : ''}`);
  if (!ok) throw new Error(`check failed: ${name} ${detail}`);
}

const watchdog = setTimeout(() => {
  console.error(`e2e: gave up after ${TOTAL_TIMEOUT_MS / 1000}s`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);

const profile = mkdtempSync(join(tmpdir(), 'halfgrad-chromium-'));
let context;
let failed = false;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.HALFGRAD_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1180, height: 1000 },
    acceptDownloads: true,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  // Console errors are failures, except those a deliberate device loss produces.
  let expectErrors = false;
  page.on('console', (m) => {
    if (m.type() === 'error') {
      const entry = { text: m.text(), during_loss_drill: expectErrors };
      report.console_errors.push(entry);
      log(`console.error${expectErrors ? ' (loss drill)' : ''}: ${m.text()}`);
    }
  });
  page.on('pageerror', (e) => {
    report.console_errors.push({ text: `uncaught: ${e.message}`, during_loss_drill: expectErrors });
    log(`page error: ${e.message}`);
  });

  await runChecks(page, () => (expectErrors = true));
  const unexpected = report.console_errors.filter((e) => !e.during_loss_drill);
  check('no console errors', unexpected.length === 0, unexpected.map((e) => e.text).join(' | '));
} catch (e) {
  failed = true;
  console.error(`e2e: ${e.stack || e}`);
} finally {
  report.seconds = (Date.now() - t0) / 1000;
  writeFileSync(join(outDir, 'report.json'), JSON.stringify(report, null, 2));
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  clearTimeout(watchdog);
}
log(failed ? 'browser test FAILED' : 'browser test passed');
process.exit(failed ? 1 : 0);

/** Waits until `predicate(arg)` holds in the page; fails at once when the page shows a
 * failure (unless `allowLost` and the failure is a device loss). */
async function waitState(page, predicate, arg, timeout = 120_000, allowLost = false) {
  const done = await page.waitForFunction(
    ([src, a, lostOk]) => {
      const phase = window.halfgrad?.state.phase;
      if (phase === 'failed' || (phase === 'lost' && !lostOk)) return { failed: phase };
      // eslint-disable-next-line no-new-func
      return new Function('a', `return (${src})(a)`)(a) ? { ok: true } : false;
    },
    [predicate.toString(), arg, allowLost],
    { timeout, polling: 250 },
  );
  const r = await done.jsonValue();
  if (r.failed) {
    const text = await page.textContent('#failure-text').catch(() => '');
    throw new Error(`the page shows a failure (${r.failed}): ${text}`);
  }
}

/** Every check but the console's. */
async function runChecks(page, enterLossDrill) {
  // A browser without WebGPU gets a message naming the browsers (and flags) that work.
  const bare = await page.context().newPage();
  await bare.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined, configurable: true });
  });
  await bare.goto(url);
  await bare.waitForSelector('#failure:not([hidden])', { timeout: 30_000 });
  const why = await bare.textContent('#failure-text');
  check('without WebGPU the page says which browsers and flags work',
    ['Chrome', 'Safari', 'Firefox', '--enable-unsafe-webgpu'].every((w) => why.includes(w)));
  await bare.close();

  await page.goto(`${url}?precision=f16&max_steps=${STEPS}`);
  await waitState(page, () => ['ready', 'failed'].includes(window.halfgrad?.state.phase));
  const info = await page.evaluate(() => window.halfgrad.state.info);
  check('WebGPU device opened', !!info, info ? `${info.adapter} via ${info.backend}` : 'no device');
  const shown = await page.textContent('#adapter');
  check('page names the adapter', info.adapter.length > 0 && shown.includes(info.adapter), shown);
  check('f16 runs the packed path (no shader-f16 on SwiftShader)', info.shader_f16 === false,
    (await page.textContent('#f16-path')).trim());

  await waitState(page, () => window.halfgrad.state.selfCheck !== null);
  const sc = await page.evaluate(() => window.halfgrad.state.selfCheck);
  check('GPU cast self-check passes bit for bit', sc.passed === true,
    sc.checks.map((c) => `${c.name}: ${c.mismatches}/${c.checked}`).join('; ') || sc.error);

  await trainingChecks(page, enterLossDrill);
}

async function trainingChecks(page, enterLossDrill) {
  // Train in F16 (packed path) for STEPS steps; screenshot half way.
  await page.check('input[name=precision][value=f16]');
  const started = Date.now();
  await page.click('#start');
  await waitState(page, (n) => window.halfgrad.state.step >= n, STEPS / 2, 300_000);
  await page.screenshot({ path: join(outDir, 'screenshot.png'), fullPage: true });
  log('screenshot taken mid-training');
  await waitState(page, (n) => window.halfgrad.state.phase === 'paused' && window.halfgrad.state.step >= n,
    STEPS, 300_000);
  const trainSeconds = (Date.now() - started) / 1000;
  const s = await page.evaluate(() => {
    const st = window.halfgrad.state;
    return { step: st.step, losses: st.losses, eval: st.eval, stats: st.stats, path: st.path };
  });
  report.train = { steps: s.step, seconds: trainSeconds, path: s.path, eval: s.eval, stats: s.stats };
  check('trained exactly the requested steps', s.step === STEPS, `step ${s.step}, ${trainSeconds.toFixed(1)}s`);
  check('page says which f16 path', /packed/.test(s.path), s.path);
  const first = s.losses[0][1];
  const last = s.losses.at(-1)[1];
  check('loss fell', last < 0.5 * first, `${first.toFixed(4)} -> ${last.toFixed(4)}`);
  check(`test accuracy above ${MIN_ACCURACY * 100}%`, s.eval.accuracy >= MIN_ACCURACY,
    `${(s.eval.accuracy * 100).toFixed(1)}%`);
  const digits = await page.$$eval('#digits .digit', (d) => d.length);
  check('test digits drawn with predictions', digits > 0, `${digits} digits`);

  // Checkpoint: download (xtask resumes it with the native CLI afterwards).
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  const ckpt = join(outDir, 'digits.safetensors');
  await download.saveAs(ckpt);
  check('checkpoint downloads as .safetensors', download.suggestedFilename().endsWith('.safetensors'),
    download.suggestedFilename());
  // BF16 from scratch (Reset, pick BF16): the loss falls and loss scaling stays off.
  await page.click('#reset');
  await waitState(page, () => window.halfgrad.state.step === 0 && !window.halfgrad.state.hasTrainer);
  await page.evaluate((n) => window.halfgrad.setMaxSteps(n), BF16_STEPS);
  await page.check('input[name=precision][value=bf16]');
  await page.click('#start');
  await waitState(page, (n) => window.halfgrad.state.phase === 'paused' && window.halfgrad.state.step >= n,
    BF16_STEPS, 300_000);
  const b = await page.evaluate(() => {
    const st = window.halfgrad.state;
    return { step: st.step, losses: st.losses, stats: st.stats, path: st.path };
  });
  report.bf16 = { steps: b.step, path: b.path, stats: b.stats };
  check('BF16 trains: loss fell, no loss scaling', b.path.startsWith('bf16') &&
    b.losses.at(-1)[1] < 0.8 * b.losses[0][1] && b.stats.loss_scale === 1,
  `${b.path.split(' ')[0]}, ${b.losses[0][1].toFixed(3)} -> ${b.losses.at(-1)[1].toFixed(3)}, scale ${b.stats.loss_scale}`);

  // The F16 checkpoint uploaded: the F16 model comes back at the same step and accuracy.
  await page.click('#reset');
  await waitState(page, () => window.halfgrad.state.step === 0 && !window.halfgrad.state.hasTrainer);
  await page.setInputFiles('#upload', ckpt);
  await waitState(page, (n) => window.halfgrad.state.phase === 'paused' && window.halfgrad.state.step === n &&
    window.halfgrad.state.eval?.step === n, STEPS);
  const back = await page.evaluate(() => window.halfgrad.state.eval);
  const backPrecision = await page.evaluate(() => window.halfgrad.state.precision);
  check('uploaded checkpoint resumes at the same step, precision and accuracy',
    Math.abs(back.accuracy - s.eval.accuracy) < 1e-6 && backPrecision === 'f16',
    `${backPrecision}, ${(back.accuracy * 100).toFixed(1)}%`);

  // Device loss: the message and the restart button appear; restarting continues training
  // from the last checkpoint (the upload's, at step STEPS) up to 20 more steps.
  enterLossDrill();
  await page.evaluate((n) => window.halfgrad.setMaxSteps(n), STEPS + 20);
  await page.evaluate(() => window.halfgrad.simulateDeviceLoss());
  await waitState(page, () => window.halfgrad.state.phase === 'lost', undefined, 60_000, true);
  const visible = await page.isVisible('#recover');
  check('device loss shows a message and a restart button', visible,
    (await page.textContent('#failure-text')).split('\n')[0]);
  await page.click('#recover');
  await waitState(page, (n) => window.halfgrad.state.phase === 'paused' && window.halfgrad.state.step >= n,
    STEPS + 20, 300_000);
  const after = await page.evaluate(() => ({
    step: window.halfgrad.state.step,
    restarts: window.halfgrad.state.restarts,
  }));
  const restart = after.restarts.at(-1);
  check('restart resumes from the last checkpoint and trains on',
    restart?.from === STEPS && after.step === STEPS + 20,
    `resumed at step ${restart?.from}, now step ${after.step}`);

  await ownDataChecks(page);
}

/** A dropped CSV: a bad file is refused with the CLI's message, a good one trains. */
async function ownDataChecks(page) {
  const CSV_STEPS = 60;
  const bad = join(outDir, 'bad.csv');
  writeFileSync(bad, 'x,y,shape\n0.1,0.2,circle\n3.0,oops,square\n');
  await page.setInputFiles('#csv-file', bad);
  await page.waitForSelector('#data-error:not([hidden])', { timeout: 30_000 });
  const refused = await page.textContent('#data-error');
  check('a bad CSV is refused with file, line and column',
    refused.includes('bad.csv, line 3, column 2 ("y"): "oops" is not a number'), refused);

  // 120 points of three shapes (96 train rows, more than a batch of 64).
  const centres = [[0, 0], [3, 1], [1, 3]];
  const names = ['circle', 'square', 'triangle'];
  let text = 'x,y,shape\n';
  for (let i = 0; i < 120; i++) {
    const k = i % 3;
    const jx = ((i * 7) % 10) / 10 - 0.45;
    const jy = ((i * 3) % 10) / 10 - 0.45;
    text += `${centres[k][0] + jx},${centres[k][1] + jy},${names[k]}\n`;
  }
  const good = join(outDir, 'shapes.csv');
  writeFileSync(good, text);
  await page.setInputFiles('#csv-file', good);
  await waitState(page, () => window.halfgrad.state.data?.source === 'shapes.csv' &&
    !window.halfgrad.state.hasTrainer);
  const shown = await page.textContent('#data-info');
  check('a CSV replaces the digits: rows, features and classes shown',
    shown.includes('96 train / 24 test rows, 2 features, 3 classes (circle, square, triangle)') &&
    (await page.isHidden('#data-error')), shown);
  await page.evaluate((n) => window.halfgrad.setMaxSteps(n), CSV_STEPS);
  await page.click('#start');
  await waitState(page, (n) => window.halfgrad.state.phase === 'paused' && window.halfgrad.state.step >= n,
    CSV_STEPS, 300_000);
  const c = await page.evaluate(() => ({ losses: window.halfgrad.state.losses, eval: window.halfgrad.state.eval }));
  report.csv = { losses: c.losses, eval: c.eval };
  check('the CSV trains: loss fell', c.losses.at(-1)[1] < 0.8 * c.losses[0][1],
    `${c.losses[0][1].toFixed(3)} -> ${c.losses.at(-1)[1].toFixed(3)}, test accuracy ` +
    `${(c.eval.accuracy * 100).toFixed(1)}%`);
}
