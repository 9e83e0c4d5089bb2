// The demo page: opens WebGPU through the wasm `Session`, trains the digits MLP a few steps
// per animation frame (submissions only: nothing waits on the GPU), reads statistics every
// few steps asynchronously, and draws them.
//
// A run is `halfgrad train`'s default run (same config, seed and data), so a downloaded
// checkpoint continues with `halfgrad train --resume FILE`: it pauses where the learning-rate
// schedule ends (1,500 steps) unless told otherwise. A CSV file picked or dropped on the
// Training card replaces the digits (parsed in Rust, as `halfgrad train --data` parses it);
// its checkpoints continue with `halfgrad train --resume FILE --data THE.csv`.
//
// URL parameters (for tests and tinkering): `precision=f16|bf16|f32`, `packed=1` (packed
// f16 even with shader-f16), `autostart=1`, `max_steps=N` (pause at step N), `stats=N`
// (read statistics every N steps), `eval=N` (evaluate and checkpoint at most every N steps
// and every second), `per_frame=N` (steps submitted per frame; adaptive otherwise),
// `seed=N`.

import init, { Session } from './pkg/halfgrad.js';
import { LineChart } from './chart.js';

const params = new URLSearchParams(location.search);
const intParam = (name, fallback, min = 1) => {
  const v = Number.parseInt(params.get(name) ?? '', 10);
  return Number.isFinite(v) && v >= min ? v : fallback;
};
const config = {
  statsEvery: intParam('stats', 10),
  evalEvery: intParam('eval', 25),
  evalMinMs: 1000,
  perFrame: intParam('per_frame', undefined), // undefined: adapt to the adapter's speed
  maxSteps: intParam('max_steps', null), // null: where the trainer's schedule ends
  seed: intParam('seed', 0, 0), // the CLI's default: the same run as `halfgrad train`
  selfCheckRandom: 100000,
  digits: 30,
};

const $ = (id) => document.getElementById(id);

/** The step where training pauses by itself. */
const maxSteps = () => config.maxSteps ?? state.totalSteps;

/** Everything the page knows; `window.halfgrad.state` lets tests read it. */
const state = {
  phase: 'opening', // opening | ready | running | paused | failed | lost
  session: null,
  info: null,
  hasTrainer: false, // a trainer exists on the current session
  precision: params.get('precision') ?? 'f16',
  path: '',
  totalSteps: Infinity, // the end of the trainer's learning-rate schedule
  step: 0,
  stats: null, // last {step, loss, loss_scale, skipped_steps}
  eval: null, // last {step, loss, accuracy}
  selfCheck: null,
  lastCheckpoint: null, // {bytes, step}: the device-loss recovery point
  stepsPerSecond: 0,
  losses: [], // [step, loss] as read
  errors: [],
  restarts: [], // {lostAt, from}: device-loss restarts and the step each resumed from
  data: null, // the data set: {source, train_rows, test_rows, features, classes, label}
  csv: null, // {bytes, name, label, split, standardize}: the CSV in use (reloaded on restart)
};
window.halfgrad = {
  state,
  config,
  simulateDeviceLoss: () => state.session?.simulateDeviceLoss(),
  /** Moves the pause-at step (tests); `Infinity` trains until Pause. */
  setMaxSteps: (n) => {
    config.maxSteps = n;
    render();
  },
};

const charts = {
  loss: new LineChart($('chart-loss'), {
    title: 'loss',
    series: [
      { name: 'train', color: '#5fb3f9' },
      { name: 'test', color: '#f5a85a' },
    ],
  }),
  acc: new LineChart($('chart-acc'), {
    title: 'test accuracy',
    series: [{ name: 'accuracy', color: '#59c27b' }],
    yMin: 0,
    yMax: 1,
    percent: true,
  }),
  scale: new LineChart($('chart-scale'), {
    title: 'loss scale (log axis)',
    series: [{ name: 'scale', color: '#c792ea', step: true }],
    log2: true,
  }),
  skipped: new LineChart($('chart-skipped'), {
    title: 'skipped steps (non-finite gradients)',
    series: [{ name: 'skipped', color: '#f0645a', step: true }],
  }),
};

// Every call into the session runs through this chain, one at a time: the training loop's
// iterations and the buttons' work interleave but never overlap.
let chain = Promise.resolve();
function exclusive(fn) {
  const run = chain.then(fn);
  chain = run.catch(() => {});
  return run;
}

const nextFrame = () =>
  new Promise((resolve) =>
    document.hidden ? setTimeout(resolve, 0) : requestAnimationFrame(() => resolve()),
  );

// ---------------------------------------------------------------- failures

const NO_WEBGPU = `This browser does not offer WebGPU, which the demo needs.
It works in Chrome and Edge 113 or newer (Windows, macOS, ChromeOS, Android; on Linux start
Chrome with --enable-unsafe-webgpu --enable-features=Vulkan), Safari 26 or newer, and
Firefox 141 or newer on Windows (elsewhere Firefox Nightly with dom.webgpu.enabled).
WebGPU also needs a secure page: https, or http://localhost as \`cargo xtask web\` serves it.`;

function showFailure(title, text, recoverLabel) {
  $('failure-title').textContent = title;
  $('failure-text').textContent = text;
  const button = $('recover');
  button.hidden = !recoverLabel;
  if (recoverLabel) button.textContent = recoverLabel;
  $('failure').hidden = false;
}

function hideFailure() {
  $('failure').hidden = true;
}

function message(e) {
  return e instanceof Error ? e.message : String(e);
}

/** A failed call: device loss offers a restart; anything else stops training. */
function handleError(e) {
  const lost = state.session?.lostReason();
  if (lost !== undefined && lost !== null) {
    state.phase = 'lost';
    const from = state.lastCheckpoint
      ? `the checkpoint of step ${state.lastCheckpoint.step}`
      : 'scratch';
    showFailure(
      'The GPU device was lost',
      `${lost}\nTraining stopped at step ${state.step}. Starting again opens a new device ` +
        `and continues from ${from}.`,
      state.lastCheckpoint ? 'Start again from the last checkpoint' : 'Start again',
    );
  } else {
    state.phase = 'failed';
    state.errors.push(message(e));
    console.error(e);
    showFailure('Training stopped', message(e));
  }
  render();
}

window.addEventListener('unhandledrejection', (ev) => handleError(ev.reason));

// A device lost while nothing runs (driver reset, GPU process crash) shows at once.
setInterval(() => {
  if (['ready', 'paused'].includes(state.phase) && state.session?.lostReason() != null) {
    handleError(new Error('device lost'));
  }
}, 1000);

// ---------------------------------------------------------------- rendering

function render() {
  const running = state.phase === 'running';
  const usable = ['ready', 'running', 'paused'].includes(state.phase);
  $('start').disabled = !usable || running || state.step >= maxSteps();
  $('pause').disabled = !running;
  $('reset').disabled = !usable || running || !state.hasTrainer;
  $('download').disabled = !usable || !state.hasTrainer;
  $('upload').disabled = !usable || running;
  $('upload-label').classList.toggle('disabled', $('upload').disabled);
  for (const r of document.querySelectorAll('input[name=precision]')) {
    r.disabled = state.hasTrainer || !usable;
    r.checked = r.value === state.precision;
  }
  $('force-packed').disabled = !usable || running || !state.info?.shader_f16_available;
  $('csv-file').disabled = !usable || running;
  $('csv-label-button').classList.toggle('disabled', $('csv-file').disabled);
  $('use-digits').hidden = !state.csv;
  $('use-digits').disabled = !usable || running;
  renderData();
  $('path').textContent = state.path || '\u00a0';

  const parts = [`step ${state.step}`];
  if (running && state.stepsPerSecond) parts.push(`${state.stepsPerSecond.toFixed(1)} steps/s`);
  if (state.hasTrainer && Number.isFinite(maxSteps())) parts[0] += ` of ${maxSteps()}`;
  if (state.stats) {
    if (Number.isFinite(state.stats.loss)) parts.push(`loss ${state.stats.loss.toFixed(4)}`);
    parts.push(`lr ${state.stats.lr.toExponential(2)}`);
    parts.push(`loss scale ${formatScale(state.stats.loss_scale)}`);
    parts.push(`skipped ${state.stats.skipped_steps}`);
  }
  if (state.eval) parts.push(`test accuracy ${(state.eval.accuracy * 100).toFixed(1)}%`);
  parts.push(state.phase);
  $('status').textContent = parts.join(' \u00b7 ');
}

function renderData() {
  const d = state.data;
  if (!d) return;
  const what = d.source === 'digits' ? 'the embedded 8\u00d78 digits' : d.source;
  const classes = d.classes.length <= 12 ? ` (${d.classes.join(', ')})` : '';
  $('data-info').textContent =
    `${what}: ${d.train_rows} train / ${d.test_rows} test rows, ${d.features} features, ` +
    `${d.classes.length} classes${classes}` +
    (d.label ? `, label "${d.label}"${d.standardized ? ', standardized' : ''}` : '');
  $('digits-card').hidden = d.source !== 'digits';
}

/** A refused CSV file: the message under the data row (the previous data stays). */
function showDataError(text) {
  $('data-error').textContent = text;
  $('data-error').hidden = !text;
}

function formatScale(s) {
  const l = Math.log2(s);
  return Number.isInteger(l) ? `2^${l}` : s.toPrecision(3);
}

function renderInfo() {
  const i = state.info;
  $('adapter').textContent =
    `${i.adapter} \u00b7 ${i.backend === 'BrowserWebGpu' ? 'browser WebGPU' : i.backend}` +
    (i.driver ? ` \u00b7 ${i.driver}` : '');
  let f16 = i.shader_f16
    ? 'native: shader-f16 (array<f16>)'
    : 'packed: u32 words + unpack2x16float';
  if (!i.shader_f16 && i.shader_f16_disabled) f16 += ' (shader-f16 turned off here)';
  else if (!i.shader_f16) f16 += ' (this adapter has no shader-f16)';
  $('f16-path').textContent = f16;
  $('force-packed').checked = i.shader_f16_disabled;
}

function renderSelfCheck() {
  const c = state.selfCheck;
  const body = $('selfcheck').tBodies[0];
  body.replaceChildren();
  if (!c) return;
  for (const r of c.checks) {
    const tr = body.insertRow();
    const ok = r.mismatches === 0;
    const verdict = tr.insertCell();
    verdict.textContent = ok ? 'PASS' : 'FAIL';
    verdict.className = ok ? 'pass' : 'fail';
    tr.insertCell().textContent = r.name;
    tr.insertCell().textContent = `${r.checked.toLocaleString('en')} values`;
    tr.insertCell().textContent = ok ? '' : `${r.mismatches} differ, e.g. ${r.first[0]}`;
  }
  const passed = c.checks.filter((r) => r.mismatches === 0).length;
  $('selfcheck-summary').textContent =
    `${passed} of ${c.checks.length} GPU cast checks pass bit for bit` +
    (c.passed ? '' : ' \u2014 see below');
}

function renderDigits(sample) {
  const box = $('digits');
  box.replaceChildren();
  const n = sample?.labels.length ?? 0;
  for (let k = 0; k < n; k++) {
    const img = sample.images[k];
    const side = Math.round(Math.sqrt(img.length));
    const canvas = document.createElement('canvas');
    canvas.width = side;
    canvas.height = side;
    const ctx = canvas.getContext('2d');
    const data = ctx.createImageData(side, side);
    const max = Math.max(...img, 1e-6);
    img.forEach((v, p) => {
      const g = Math.round(255 * (1 - Math.max(0, v) / max));
      data.data.set([g, g, g, 255], 4 * p);
    });
    ctx.putImageData(data, 0, 0);
    const pred = sample.predictions?.[k];
    const cell = document.createElement('div');
    cell.className = 'digit ' + (pred === undefined ? 'none' : pred === sample.labels[k] ? 'right' : 'wrong');
    const label = document.createElement('span');
    label.textContent = pred === undefined ? '?' : String(pred);
    label.title = `label ${sample.labels[k]}`;
    cell.append(canvas, label);
    box.append(cell);
  }
}

function clearCharts() {
  for (const c of Object.values(charts)) c.clear();
  state.losses = [];
}

// ---------------------------------------------------------------- session calls

async function openSession(forcePacked) {
  if (!navigator.gpu) {
    state.phase = 'failed';
    showFailure('No WebGPU in this browser', NO_WEBGPU);
    render();
    return false;
  }
  try {
    const old = state.session;
    state.session = await Session.open(forcePacked);
    // The old device (lost, or replaced) goes now rather than whenever JS collects it.
    old?.free();
  } catch (e) {
    state.phase = 'failed';
    showFailure('Could not open a WebGPU device', `${message(e)}\n\n${NO_WEBGPU}`);
    render();
    return false;
  }
  const info = JSON.parse(state.session.info());
  info.shader_f16_available = info.shader_f16 || info.shader_f16_disabled;
  if (!info.adapter) info.adapter = await browserAdapterName();
  state.info = info;
  state.hasTrainer = false;
  // A new session starts on the digits: put the CSV in use back.
  if (state.csv) await loadCsv(state.csv);
  state.data = JSON.parse(state.session.dataInfo());
  renderInfo();
  return true;
}

/** Parses a CSV file in Rust (the CLI's parser and messages) and trains on it from now. */
async function loadCsv(csv) {
  const d = state.session.loadCsv(csv.bytes, csv.name, csv.label, csv.split, csv.standardize);
  state.csv = csv;
  state.data = JSON.parse(d);
}

/** wgpu reports only the adapter's description, which browsers often leave empty; the
 * browser's own GPUAdapterInfo (same request options as wgpu's) names vendor and family. */
async function browserAdapterName() {
  try {
    const a = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    const i = a?.info ?? {};
    const name = [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ');
    return (name || 'unnamed adapter') + (i.isFallbackAdapter ? ' (software fallback adapter)' : '');
  } catch {
    return 'unnamed adapter';
  }
}

async function runSelfCheck() {
  $('selfcheck-summary').textContent = 'running\u2026';
  try {
    state.selfCheck = JSON.parse(await state.session.selfCheck(config.selfCheckRandom));
  } catch (e) {
    state.selfCheck = { passed: false, checks: [], error: message(e) };
    $('selfcheck-summary').textContent = `self-check failed: ${message(e)}`;
    console.error(e);
    return;
  }
  renderSelfCheck();
}

async function readStats() {
  const s = JSON.parse(await state.session.stats());
  const now = performance.now();
  if (state.stats && state.lastStatsTime && s.step > state.stats.step) {
    const rate = (s.step - state.stats.step) / ((now - state.lastStatsTime) / 1000);
    state.stepsPerSecond = state.stepsPerSecond ? 0.7 * state.stepsPerSecond + 0.3 * rate : rate;
  }
  state.lastStatsTime = now;
  state.stats = s;
  state.step = s.step;
  if (Number.isFinite(s.loss)) state.losses.push([s.step, s.loss]);
  charts.loss.push(0, s.step, s.loss);
  if (state.precision === 'f16' || s.loss_scale !== 1) charts.scale.push(0, s.step, s.loss_scale);
  charts.skipped.push(0, s.step, s.skipped_steps);
  for (const c of [charts.loss, charts.scale, charts.skipped]) c.draw();
}

async function evaluate() {
  const e = JSON.parse(await state.session.evaluate());
  state.eval = { step: state.step, time: performance.now(), ...e };
  charts.loss.push(1, state.step, e.loss);
  charts.acc.push(0, state.step, e.accuracy);
  charts.loss.draw();
  charts.acc.draw();
  if (state.data?.source === 'digits') {
    renderDigits(JSON.parse(await state.session.testDigits(config.digits)));
  }
}

async function snapshot() {
  const bytes = await state.session.checkpoint();
  state.lastCheckpoint = { bytes, step: state.step };
}

async function newTrainer() {
  const d = JSON.parse(await state.session.newTrainer(state.precision, config.seed));
  state.hasTrainer = true;
  state.path = d.path;
  state.totalSteps = d.total_steps ?? Infinity;
  state.step = 0;
  state.stats = null;
  state.eval = null;
  if (state.precision !== 'f16') charts.scale.setPlaceholder(`loss scaling off for ${state.precision}`);
  await readStats();
  await evaluate();
  await snapshot();
}

// ---------------------------------------------------------------- the training loop

let loopDone = Promise.resolve();

function startLoop() {
  state.phase = 'running';
  render();
  loopDone = trainLoop();
}

/** Steps submitted per frame: fixed by `per_frame=N`, otherwise adapted so a frame's
 * work (encoding, plus the awaited statistics read when one is due) stays near one
 * display frame: a slow adapter gets one step a frame, a fast one dozens. */
let perFrame = config.perFrame ?? 1;

async function trainLoop() {
  let sinceStats = 0;
  while (state.phase === 'running') {
    const frameStart = performance.now();
    const ok = await exclusive(async () => {
      if (state.phase !== 'running') return false;
      const remaining = maxSteps() - state.step - sinceStats;
      const k = Math.min(perFrame, remaining);
      if (k > 0) {
        // Encodes and submits k steps; returns at once (no readback).
        state.session.step(k);
        sinceStats += k;
      }
      const atEnd = k <= 0 || k === remaining;
      if (sinceStats >= config.statsEvery || atEnd) {
        await readStats();
        sinceStats = 0;
        const evalDue = state.step - (state.eval?.step ?? 0) >= config.evalEvery &&
          performance.now() - (state.eval?.time ?? 0) >= config.evalMinMs;
        if (evalDue || atEnd) {
          await evaluate();
          await snapshot();
        }
        render();
      }
      if (atEnd) {
        state.phase = 'paused';
        render();
        return false;
      }
      return true;
    }).catch((e) => {
      handleError(e);
      return false;
    });
    if (!ok) break;
    if (config.perFrame === undefined) {
      const ms = performance.now() - frameStart;
      if (ms < 10) perFrame = Math.min(perFrame + 1, 64);
      else if (ms > 40) perFrame = Math.max(1, Math.floor(perFrame * 0.7));
    }
    await nextFrame();
  }
}

// ---------------------------------------------------------------- buttons

$('start').addEventListener('click', () =>
  exclusive(async () => {
    hideFailure();
    if (!state.hasTrainer) await newTrainer();
    startLoop();
  }).catch(handleError),
);

$('pause').addEventListener('click', async () => {
  if (state.phase !== 'running') return;
  state.phase = 'paused';
  await loopDone;
  await exclusive(async () => {
    if (state.session.lostReason() == null && state.hasTrainer) {
      await readStats();
      await evaluate();
      await snapshot();
    }
    render();
  }).catch(handleError);
});

/** Forgets the model: no trainer, empty charts, no recovery point. */
function forgetTraining(phase) {
  state.session?.dropTrainer();
  Object.assign(state, {
    hasTrainer: false, path: '', totalSteps: Infinity, step: 0, stats: null, eval: null,
    lastCheckpoint: null, stepsPerSecond: 0, phase,
  });
  clearCharts();
  renderDigits(null);
  render();
}

$('reset').addEventListener('click', () =>
  exclusive(async () => forgetTraining('ready')).catch(handleError),
);

for (const r of document.querySelectorAll('input[name=precision]')) {
  r.addEventListener('change', () => {
    state.precision = r.value;
    charts.scale.setPlaceholder('');
    render();
  });
}

$('force-packed').addEventListener('change', (ev) =>
  exclusive(async () => {
    forgetTraining('opening');
    if (await openSession(ev.target.checked)) {
      state.phase = 'ready';
      render();
      await runSelfCheck();
    }
  }).catch(handleError),
);

$('download').addEventListener('click', () =>
  exclusive(async () => {
    const bytes = await state.session.checkpoint();
    const blob = new Blob([bytes], { type: 'application/octet-stream' });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    const base = state.csv ? state.csv.name.replace(/\.csv$/i, '') : 'digits';
    a.download = `halfgrad-${base}-${state.precision}-step${state.step}.safetensors`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  }).catch(handleError),
);

/** A CSV file from the picker or a drop: refused files leave the data as it was. */
async function useCsvFile(file) {
  const csv = {
    bytes: new Uint8Array(await file.arrayBuffer()),
    name: file.name,
    label: $('csv-label').value.trim(),
    split: Number.parseFloat($('csv-split').value) || 0.2,
    standardize: $('csv-standardize').checked,
  };
  await exclusive(async () => {
    if (state.phase === 'running') return;
    try {
      await loadCsv(csv);
    } catch (e) {
      showDataError(message(e));
      return;
    }
    showDataError('');
    forgetTraining('ready');
  }).catch(handleError);
}

$('csv-file').addEventListener('change', async (ev) => {
  const file = ev.target.files?.[0];
  ev.target.value = '';
  if (file) await useCsvFile(file);
});

$('controls').addEventListener('dragover', (ev) => {
  ev.preventDefault();
  $('controls').classList.add('dragging');
});
$('controls').addEventListener('dragleave', () => $('controls').classList.remove('dragging'));
$('controls').addEventListener('drop', async (ev) => {
  ev.preventDefault();
  $('controls').classList.remove('dragging');
  const file = ev.dataTransfer?.files?.[0];
  if (file) await useCsvFile(file);
});

$('use-digits').addEventListener('click', () =>
  exclusive(async () => {
    state.data = JSON.parse(state.session.useDigits());
    state.csv = null;
    showDataError('');
    forgetTraining('ready');
  }).catch(handleError),
);

$('upload').addEventListener('change', async (ev) => {
  const file = ev.target.files?.[0];
  ev.target.value = '';
  if (!file) return;
  const bytes = new Uint8Array(await file.arrayBuffer());
  await exclusive(() => loadCheckpoint(bytes)).catch(handleError);
});

/** Replaces the trainer with one from checkpoint bytes and shows where it stands. */
async function loadCheckpoint(bytes) {
  const d = JSON.parse(await state.session.loadCheckpoint(bytes));
  // The recovery point at once: a device lost during the reads below still has it.
  state.lastCheckpoint = { bytes, step: d.step };
  state.hasTrainer = true;
  state.precision = d.precision;
  state.path = d.path;
  state.totalSteps = d.total_steps ?? Infinity;
  state.stats = null;
  state.eval = null;
  hideFailure();
  await readStats();
  // Charts keep the history before the checkpoint's step and drop what came after.
  for (const c of Object.values(charts)) {
    c.data = c.data.map((pts) => pts.filter(([x]) => x <= state.step));
  }
  await evaluate();
  if (state.phase !== 'running') state.phase = 'paused';
  render();
}

$('recover').addEventListener('click', () =>
  exclusive(async () => {
    $('recover').disabled = true;
    const checkpoint = state.lastCheckpoint;
    state.restarts.push({ lostAt: state.step, from: checkpoint?.step ?? 0 });
    state.phase = 'opening';
    render();
    try {
      if (!(await openSession(state.info?.shader_f16_disabled ?? false))) return;
      state.phase = 'ready';
      hideFailure();
      if (checkpoint) await loadCheckpoint(checkpoint.bytes);
      else await newTrainer();
    } finally {
      $('recover').disabled = false;
    }
    startLoop();
  }).catch(handleError),
);

// ---------------------------------------------------------------- start-up

async function main() {
  render();
  if (!navigator.gpu) {
    state.phase = 'failed';
    showFailure('No WebGPU in this browser', NO_WEBGPU);
    $('adapter').textContent = 'none';
    return;
  }
  await init();
  if (!(await openSession(params.get('packed') === '1'))) return;
  state.phase = 'ready';
  render();
  await exclusive(runSelfCheck);
  if (params.get('autostart') === '1' && !$('start').disabled) $('start').click();
}

main().catch(handleError);
