// The GPT page: opens WebGPU through the wasm `GptSession`, fetches the shipped corpus (or
// takes the user's .txt), trains a byte-level GPT a few steps per animation frame
// (submissions only), reads statistics every few steps asynchronously, evaluates and
// samples now and then, and draws it all.
//
// A run is `halfgrad gpt train`'s (same trainer, schedule, seed and batch draws), so a
// downloaded checkpoint continues with `halfgrad gpt train --resume FILE`.
//
// URL parameters (tests and tinkering): `preset=tiny|small|shakespeare-char`,
// `precision=f16|bf16|f32`, `packed=1` (packed f16 even with shader-f16), `autostart=1`,
// `max_steps=N` (pause at step N), `steps=N` (the schedule's length), `batch=N`,
// `stats=N` (read statistics every N steps), `eval=N` (validation loss and checkpoint
// every N steps), `eval_windows=N` (validation windows per evaluation; the CLI's 64),
// `sample=N` (a sample every N steps), `sample_tokens=N`, `per_frame=N` (steps per
// frame; adaptive otherwise), `seed=N`, `text=URL` (another text to fetch than
// data/kjv.txt).

import init, { GptSession } from './pkg/halfgrad.js';
import { LineChart } from './chart.js';

const params = new URLSearchParams(location.search);
const intParam = (name, fallback, min = 1) => {
  const v = Number.parseInt(params.get(name) ?? '', 10);
  return Number.isFinite(v) && v >= min ? v : fallback;
};
const config = {
  statsEvery: intParam('stats', 10),
  evalEvery: intParam('eval', 100),
  sampleEvery: intParam('sample', 300),
  sampleTokens: intParam('sample_tokens', 160),
  perFrame: intParam('per_frame', undefined),
  maxSteps: intParam('max_steps', null),
  steps: intParam('steps', 0, 0), // 0: the preset's schedule
  batch: intParam('batch', 0, 0), // 0: the preset's batch
  evalWindows: intParam('eval_windows', 0, 0), // 0: the CLI's 64
  seed: intParam('seed', 0, 0),
  textUrl: params.get('text') ?? 'data/kjv.txt',
  samplePrompt: '\n',
};

const $ = (id) => document.getElementById(id);
const maxSteps = () => config.maxSteps ?? state.totalSteps;

/** Everything the page knows; `window.halfgrad.state` lets tests read it. */
const state = {
  phase: 'opening', // opening | ready | running | paused | failed | lost
  session: null,
  info: null,
  presets: [],
  preset: params.get('preset') ?? 'tiny',
  precision: params.get('precision') ?? 'f16',
  text: null, // {name, bytes, info}
  hasTrainer: false,
  run: null, // the run's description
  path: '',
  totalSteps: Infinity,
  step: 0,
  stats: null,
  eval: null, // {step, loss}
  firstEval: null,
  evals: [], // [step, val loss]
  sample: null, // {step, text}
  generated: null,
  tokensPerSecond: 0,
  lastCheckpoint: null, // {bytes, step}
  errors: [],
  restarts: [],
  // {what, step, ms}: how long each evaluation, sample, checkpoint and stretch of steps
  // took (the test prints them; the last MAX_TIMINGS are kept).
  timings: [],
};
window.halfgrad = {
  state,
  config,
  simulateDeviceLoss: () => state.session?.simulateDeviceLoss(),
  /** The picker's path for a File (tests: the size refusal without a dialog). */
  loadTextFile: (file) => exclusive(() => loadTextFile(file)),
  setMaxSteps: (n) => {
    config.maxSteps = n;
    render();
  },
};

const charts = {
  loss: new LineChart($('chart-loss'), {
    title: 'loss (nats per byte)',
    series: [
      { name: 'train', color: '#5fb3f9' },
      { name: 'validation', color: '#f5a85a' },
    ],
  }),
  speed: new LineChart($('chart-speed'), {
    title: 'tokens/s',
    series: [{ name: 'tokens/s', color: '#59c27b' }],
    yMin: 0,
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

const MAX_TIMINGS = 10_000;
function recordTiming(what, ms) {
  state.timings.push({ what, step: state.step, ms: Math.round(ms) });
  if (state.timings.length > MAX_TIMINGS) state.timings.shift();
}

/** Runs `fn` and records how long it took in `state.timings`. */
async function timed(what, fn) {
  const t = performance.now();
  const r = await fn();
  recordTiming(what, performance.now() - t);
  return r;
}

// Every session call runs through this chain, one at a time.
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
const hideFailure = () => ($('failure').hidden = true);
const message = (e) => (e instanceof Error ? e.message : String(e));

/** A refusal the user can fix (a file too large, a preset that does not fit): shown,
 * but the page stays usable. */
function notice(title, text) {
  showFailure(title, text);
}

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
    state.phase = state.hasTrainer || state.phase === 'running' ? 'paused' : state.phase;
    if (state.phase === 'opening') state.phase = 'failed';
    state.errors.push(message(e));
    console.error(e);
    showFailure('Training stopped', message(e));
  }
  render();
}

window.addEventListener('unhandledrejection', (ev) => handleError(ev.reason));

setInterval(() => {
  if (['ready', 'paused'].includes(state.phase) && state.session?.lostReason() != null) {
    handleError(new Error('device lost'));
  }
}, 1000);

// ---------------------------------------------------------------- rendering

const MiB = 1024 * 1024;
const formatBytes = (b) =>
  b >= 1024 * MiB ? `${(b / 1024 / MiB).toFixed(2)} GiB` : `${(b / MiB).toFixed(1)} MiB`;
const formatCount = (n) =>
  n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : String(n);

function currentPreset() {
  return state.presets.find((p) => p.name === state.preset);
}

/** Why the chosen preset and precision cannot run here, or null. */
const refusal = () => currentPreset()?.fits[state.precision] ?? null;

function render() {
  const running = state.phase === 'running';
  const usable = ['ready', 'running', 'paused'].includes(state.phase);
  $('start').disabled =
    !usable || running || !state.text || state.step >= maxSteps() ||
    (!state.hasTrainer && refusal() !== null);
  $('pause').disabled = !running;
  $('reset').disabled = !usable || running || !state.hasTrainer;
  $('download').disabled = !usable || running || !state.hasTrainer;
  $('download-hf').disabled = !usable || running || !state.hasTrainer;
  $('generate').disabled = !usable || running || !state.hasTrainer;
  $('upload').disabled = !usable || running || !state.text;
  $('upload-label').classList.toggle('disabled', $('upload').disabled);
  const textLocked = !usable || state.hasTrainer;
  $('use-corpus').disabled = textLocked;
  $('text-file').disabled = textLocked;
  $('text-label').classList.toggle('disabled', textLocked);
  $('preset').disabled = textLocked;
  for (const r of document.querySelectorAll('input[name=precision]')) {
    r.disabled = state.hasTrainer || !usable;
    r.checked = r.value === state.precision;
  }
  $('force-packed').disabled = !usable || state.hasTrainer || !state.info?.shader_f16_available;
  $('path').textContent = state.path || '\u00a0';
  renderPresetInfo();

  const parts = [`step ${state.step}`];
  if (state.hasTrainer && Number.isFinite(maxSteps())) parts[0] += ` of ${maxSteps()}`;
  if (state.tokensPerSecond) parts.push(`${Math.round(state.tokensPerSecond).toLocaleString('en')} tokens/s`);
  if (state.stats) {
    if (Number.isFinite(state.stats.loss)) parts.push(`loss ${state.stats.loss.toFixed(3)}`);
    parts.push(`lr ${state.stats.lr.toExponential(2)}`);
    parts.push(`loss scale ${formatScale(state.stats.loss_scale)}`);
    parts.push(`skipped ${state.stats.skipped_steps}`);
  }
  if (state.eval) parts.push(`val loss ${state.eval.loss.toFixed(3)} (${state.eval.windows} windows)`);
  parts.push(state.phase);
  $('status').textContent = parts.join(' \u00b7 ');
}

function formatScale(s) {
  const l = Math.log2(s);
  return Number.isInteger(l) ? `2^${l}` : s.toPrecision(3);
}

function renderPresetInfo() {
  const p = currentPreset();
  if (state.run) {
    $('preset-info').textContent =
      `${formatCount(state.run.params)} parameters \u00b7 batch ${state.run.batch} \u00d7 ` +
      `${state.run.block} tokens \u00b7 ${formatBytes(state.run.memory_bytes)} on the GPU ` +
      `(training graph) \u00b7 ${state.run.schedule}`;
    return;
  }
  if (!p) return;
  const why = p.fits[state.precision];
  $('preset-info').textContent = why
    ? `does not fit this adapter in ${state.precision}: ${why}`
    : `${p.about} \u00b7 ${formatCount(p.params)} parameters \u00b7 about ` +
      `${formatBytes(p.memory_bytes[state.precision])} of GPU memory in ${state.precision}`;
}

function renderPresets() {
  const select = $('preset');
  select.replaceChildren();
  for (const p of state.presets) {
    const o = document.createElement('option');
    o.value = p.name;
    const mem = formatBytes(p.memory_bytes[state.precision]);
    o.textContent = `${p.name}: ${p.layers} layers, width ${p.embd}, context ${p.block} \u00b7 ` +
      `${formatCount(p.params)} params \u00b7 ~${mem}` + (p.fits[state.precision] ? ' (too large here)' : '');
    o.selected = p.name === state.preset;
    select.append(o);
  }
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
  $('limits').textContent =
    `buffers up to ${formatBytes(i.max_buffer_size)}, storage bindings up to ` +
    `${formatBytes(i.max_storage_buffer_binding_size)} (the adapter's own limits)`;
  $('force-packed').checked = i.shader_f16_disabled;
}

function renderText() {
  const t = state.text;
  $('text-info').textContent = t
    ? `${t.name}: ${t.info.bytes.toLocaleString('en')} bytes, ${t.info.distinct} distinct; ` +
      `train ${t.info.train_bytes.toLocaleString('en')} / validation ` +
      `${t.info.validation_bytes.toLocaleString('en')} (last 10%)`
    : 'no text';
}

function renderSample() {
  const s = state.sample;
  $('sample').textContent = s ? s.text : state.hasTrainer ? '(a sample comes every few hundred steps)' : '(no model yet)';
  $('sample-caption').textContent = s
    ? `at step ${s.step}, temperature 0.8, ${config.sampleTokens} bytes; refreshed every ` +
      `${config.sampleEvery} steps`
    : 'refreshed every few hundred steps';
}

function clearCharts() {
  for (const c of Object.values(charts)) c.clear();
}

// ---------------------------------------------------------------- session calls

async function openSession(forcePacked) {
  try {
    const old = state.session;
    state.session = await GptSession.open(forcePacked);
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
  state.presets = JSON.parse(state.session.presets());
  state.hasTrainer = false;
  if (state.text) setText(state.text.name, state.text.bytes);
  renderInfo();
  renderPresets();
  return true;
}

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

/** Hands a text to the session (throws for one it refuses). */
function setText(name, bytes) {
  const info = JSON.parse(state.session.setText(name, bytes));
  state.text = { name, bytes, info };
  renderText();
}

/** A file from the picker or a drop: refused before reading when too large. */
async function loadTextFile(file) {
  const max = GptSession.maxTextBytes();
  if (file.size > max) {
    notice('This text is too large for the page',
      `${file.name} has ${file.size.toLocaleString('en')} bytes; the page trains on at most ` +
      `${max.toLocaleString('en')} bytes (${formatBytes(max)}). Nothing was cut: pick a ` +
      `smaller file, or train on it natively with \`halfgrad gpt train --data FILE\`.`);
    return;
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  hideFailure();
  setText(file.name, bytes);
  render();
}

async function fetchCorpus() {
  $('text-info').textContent = `fetching ${config.textUrl}\u2026`;
  const r = await fetch(config.textUrl);
  if (!r.ok) throw new Error(`fetching ${config.textUrl}: HTTP ${r.status}`);
  setText(config.textUrl, new Uint8Array(await r.arrayBuffer()));
}

async function readStats() {
  const s = JSON.parse(await state.session.stats());
  const now = performance.now();
  if (state.stats && state.lastStatsTime && s.step > state.stats.step && state.phase === 'running') {
    const ms = now - state.lastStatsTime;
    const rate = ((s.step - state.stats.step) * s.tokens_per_step) / (ms / 1000);
    recordTiming(`train ${s.step - state.stats.step} steps`, ms);
    state.tokensPerSecond = state.tokensPerSecond ? 0.7 * state.tokensPerSecond + 0.3 * rate : rate;
    charts.speed.push(0, s.step, rate);
  }
  state.lastStatsTime = now;
  state.stats = s;
  state.step = s.step;
  charts.loss.push(0, s.step, s.loss);
  if (state.precision === 'f16' || s.loss_scale !== 1) charts.scale.push(0, s.step, s.loss_scale);
  charts.skipped.push(0, s.step, s.skipped_steps);
  for (const c of [charts.loss, charts.scale, charts.skipped, charts.speed]) c.draw();
}

async function evaluate() {
  const e = JSON.parse(await timed('evaluate', () => state.session.evaluate()));
  state.eval = { step: state.step, ...e };
  state.firstEval ??= state.eval;
  state.evals.push([state.step, e.loss]);
  charts.loss.push(1, state.step, e.loss);
  charts.loss.draw();
}

const decoder = new TextDecoder('utf-8');

async function sample() {
  const bytes = await timed('sample', () => state.session.sample(
    new TextEncoder().encode(config.samplePrompt), config.sampleTokens, 0.8, state.step));
  state.sample = { step: state.step, text: decoder.decode(bytes) };
  renderSample();
}

async function snapshot() {
  const bytes = await timed('checkpoint', () => state.session.checkpoint());
  state.lastCheckpoint = { bytes, step: state.step };
}

/** Stats, validation loss and a checkpoint (and a sample when one is due). */
async function evaluateAll(withSample) {
  await readStats();
  await evaluate();
  await snapshot();
  if (withSample) await sample();
}

function adoptRun(d) {
  state.run = d;
  state.hasTrainer = true;
  state.precision = d.precision;
  state.path = d.path;
  state.totalSteps = d.total_steps ?? Infinity;
  state.stats = null;
  state.eval = null;
  state.tokensPerSecond = 0;
  if (state.precision !== 'f16') charts.scale.setPlaceholder(`loss scaling off for ${state.precision}`);
}

async function newTrainer() {
  const d = JSON.parse(await timed('new trainer', () => state.session.newTrainer(
    state.preset, state.precision, config.seed, config.batch, config.steps, config.evalWindows)));
  adoptRun(d);
  state.step = 0;
  state.firstEval = null;
  state.evals = [];
  state.sample = null;
  renderSample();
  // The untrained model's validation loss (about ln 256); the first sample comes with
  // the first `sample=N` steps (an untrained model's bytes are noise).
  await evaluateAll(false);
}

// ---------------------------------------------------------------- the training loop

let loopDone = Promise.resolve();

function startLoop() {
  state.phase = 'running';
  state.lastStatsTime = 0;
  render();
  loopDone = trainLoop();
}

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
        state.session.step(k); // encodes and submits k steps; no readback
        sinceStats += k;
      }
      const atEnd = k <= 0 || k === remaining;
      if (sinceStats >= config.statsEvery || atEnd) {
        const before = state.step;
        await readStats();
        sinceStats = 0;
        const crossed = (every) => Math.floor(state.step / every) > Math.floor(before / every);
        if (crossed(config.evalEvery) || atEnd) {
          await evaluate();
          await snapshot();
        }
        if (crossed(config.sampleEvery) || atEnd) await sample();
        // tokens/s counts the steps only, not the evaluations and samples between them.
        state.lastStatsTime = performance.now();
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

// ---------------------------------------------------------------- controls

$('start').addEventListener('click', () =>
  exclusive(async () => {
    hideFailure();
    if (!state.hasTrainer) {
      const why = refusal();
      if (why) {
        notice('This model does not fit the adapter', why);
        return;
      }
      await newTrainer();
    }
    startLoop();
  }).catch(handleError),
);

$('pause').addEventListener('click', async () => {
  if (state.phase !== 'running') return;
  state.phase = 'paused';
  await loopDone;
  await exclusive(async () => {
    if (state.session.lostReason() == null && state.hasTrainer) await evaluateAll(false);
    render();
  }).catch(handleError);
});

function forgetTraining(phase) {
  state.session?.dropTrainer();
  Object.assign(state, {
    hasTrainer: false, run: null, path: '', totalSteps: Infinity, step: 0, stats: null,
    eval: null, firstEval: null, evals: [], sample: null, generated: null,
    lastCheckpoint: null, tokensPerSecond: 0, phase,
  });
  clearCharts();
  renderSample();
  $('generated').textContent = '';
  render();
}

$('reset').addEventListener('click', () =>
  exclusive(async () => forgetTraining('ready')).catch(handleError),
);

$('preset').addEventListener('change', (ev) => {
  state.preset = ev.target.value;
  render();
});

for (const r of document.querySelectorAll('input[name=precision]')) {
  r.addEventListener('change', () => {
    state.precision = r.value;
    charts.scale.setPlaceholder('');
    renderPresets();
    render();
  });
}

$('force-packed').addEventListener('change', (ev) =>
  exclusive(async () => {
    forgetTraining('opening');
    if (await openSession(ev.target.checked)) {
      state.phase = 'ready';
      render();
    }
  }).catch(handleError),
);

$('use-corpus').addEventListener('click', () =>
  exclusive(async () => {
    config.textUrl = 'data/kjv.txt';
    await fetchCorpus();
    render();
  }).catch(handleError),
);

$('text-file').addEventListener('change', (ev) => {
  const file = ev.target.files?.[0];
  ev.target.value = '';
  if (file) exclusive(() => loadTextFile(file)).catch(handleError);
});

const drop = document.body;
drop.addEventListener('dragover', (ev) => {
  ev.preventDefault();
  $('drop-zone').classList.add('over');
});
drop.addEventListener('dragleave', () => $('drop-zone').classList.remove('over'));
drop.addEventListener('drop', (ev) => {
  ev.preventDefault();
  $('drop-zone').classList.remove('over');
  const file = ev.dataTransfer?.files?.[0];
  if (!file) return;
  if (state.hasTrainer || state.phase === 'running') {
    notice('Reset first', 'A new text applies to a new model: press Reset, then drop it again.');
    return;
  }
  exclusive(() => loadTextFile(file)).catch(handleError);
});

function saveFile(bytes, name, type = 'application/octet-stream') {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([bytes], { type }));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

const runName = () => `halfgrad-gpt-${state.preset}-${state.precision}-step${state.step}`;

$('download').addEventListener('click', () =>
  exclusive(async () => {
    saveFile(await state.session.checkpoint(), `${runName()}.safetensors`);
  }).catch(handleError),
);

$('download-hf').addEventListener('click', () =>
  exclusive(async () => {
    const [configJson, weights] = await state.session.exportHf();
    saveFile(configJson, 'config.json', 'application/json');
    // Two downloads from one click: browsers may ask once to allow several.
    await new Promise((r) => setTimeout(r, 300));
    saveFile(weights, 'model.safetensors');
  }).catch(handleError),
);

$('upload').addEventListener('change', async (ev) => {
  const file = ev.target.files?.[0];
  ev.target.value = '';
  if (!file) return;
  const bytes = new Uint8Array(await file.arrayBuffer());
  await exclusive(() => loadCheckpoint(bytes)).catch(handleError);
});

async function loadCheckpoint(bytes) {
  const d = JSON.parse(await state.session.loadCheckpoint(bytes));
  state.lastCheckpoint = { bytes, step: d.step };
  const p = state.presets.find((x) => x.model === d.model);
  if (p) state.preset = p.name;
  adoptRun(d);
  hideFailure();
  await readStats();
  for (const c of Object.values(charts)) {
    c.data = c.data.map((pts) => pts.filter(([x]) => x <= state.step));
  }
  state.evals = state.evals.filter(([x]) => x <= state.step);
  await evaluate();
  await sample();
  if (state.phase !== 'running') state.phase = 'paused';
  renderPresets();
  render();
}

$('generate').addEventListener('click', () =>
  exclusive(async () => {
    const prompt = $('prompt').value;
    const temperature = Number.parseFloat($('temperature').value);
    const length = Number.parseInt($('length').value, 10);
    $('generated').textContent = '(generating\u2026)';
    const bytes = await state.session.sample(
      new TextEncoder().encode(prompt), Math.max(1, Math.min(length || 200, 2000)),
      Number.isFinite(temperature) ? temperature : 0.8, state.step + 1);
    state.generated = prompt + decoder.decode(bytes);
    $('generated').textContent = state.generated;
  }).catch((e) => {
    $('generated').textContent = '';
    handleError(e);
  }),
);

$('recover').addEventListener('click', () =>
  exclusive(async () => {
    if (state.phase !== 'lost') {
      hideFailure();
      return;
    }
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
  await exclusive(fetchCorpus);
  state.phase = 'ready';
  render();
  if (params.get('autostart') === '1' && !$('start').disabled) $('start').click();
}

main().catch(handleError);
