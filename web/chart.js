// A small line chart on <canvas>: a few series of (x, y) points, linear or log2 y axis,
// redrawn whole on every update (the demo's charts hold at most a few thousand points).

const AXIS = '#8a8f98';
const GRID = 'rgba(138, 143, 152, 0.18)';
const TEXT = '#c9ccd1';
const MAX_POINTS = 4000;

/** Round numbers for tick marks: about `count` steps between lo and hi. */
function niceTicks(lo, hi, count) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
  return ticks;
}

function formatNumber(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(0);
  if (a >= 100) return v.toFixed(0);
  return String(Number(v.toPrecision(3)));
}

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{title: string, series: {name: string, color: string, step?: boolean}[],
   *          log2?: boolean, yMin?: number, yMax?: number, percent?: boolean}} opts
   */
  constructor(canvas, opts) {
    this.canvas = canvas;
    this.opts = opts;
    this.data = opts.series.map(() => []);
    this.placeholder = '';
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /** Appends a point to series `i`. Long series are thinned (every other point of the
   * history dropped) so a long run redraws as fast as a short one. */
  push(i, x, y) {
    if (!Number.isFinite(x) || !Number.isFinite(y)) return;
    const pts = this.data[i];
    pts.push([x, y]);
    if (pts.length > MAX_POINTS) {
      this.data[i] = pts.filter((_, k) => k % 2 === 0 || k === pts.length - 1);
    }
  }

  clear() {
    this.data = this.opts.series.map(() => []);
    this.draw();
  }

  /** Text drawn in the middle while there is no data (e.g. "loss scaling off"). */
  setPlaceholder(text) {
    this.placeholder = text;
    this.draw();
  }

  draw() {
    const { canvas, opts } = this;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = '12px system-ui, sans-serif';

    // Title and legend.
    ctx.fillStyle = TEXT;
    ctx.textBaseline = 'top';
    ctx.textAlign = 'left';
    ctx.fillText(opts.title, 8, 6);
    let lx = w - 8;
    ctx.textAlign = 'right';
    for (let i = opts.series.length - 1; i >= 0; i--) {
      const s = opts.series[i];
      const last = this.data[i].at(-1);
      const label = last ? `${s.name} ${this.formatY(last[1])}` : s.name;
      ctx.fillStyle = s.color;
      ctx.fillText(label, lx, 6);
      lx -= ctx.measureText(label).width + 14;
    }

    const pad = { l: 48, r: 12, t: 26, b: 22 };
    const pw = w - pad.l - pad.r;
    const ph = h - pad.t - pad.b;
    const all = this.data.flat();
    if (all.length === 0) {
      ctx.fillStyle = AXIS;
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText(this.placeholder || 'waiting for data', pad.l + pw / 2, pad.t + ph / 2);
      return;
    }

    const ty = (y) => (opts.log2 ? Math.log2(Math.max(y, Number.MIN_VALUE)) : y);
    let x0 = Math.min(...all.map((p) => p[0]));
    let x1 = Math.max(...all.map((p) => p[0]));
    if (x1 === x0) x1 = x0 + 1;
    let y0 = opts.yMin ?? Math.min(...all.map((p) => ty(p[1])));
    let y1 = opts.yMax ?? Math.max(...all.map((p) => ty(p[1])));
    if (opts.yMin === undefined && !opts.log2) y0 = Math.min(y0, 0);
    if (y1 - y0 < 1e-9) {
      // A flat series: counts that are all 0 show 0..1; anything else a band around it.
      if (y0 === 0 && !opts.log2) y1 = 1;
      else {
        y0 -= 1;
        y1 += 1;
      }
    }
    const px = (x) => pad.l + ((x - x0) / (x1 - x0)) * pw;
    const py = (y) => pad.t + ph - ((ty(y) - y0) / (y1 - y0)) * ph;

    // Grid and tick labels.
    ctx.strokeStyle = GRID;
    ctx.fillStyle = AXIS;
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    const yt = opts.log2
      ? niceTicks(Math.ceil(y0), Math.floor(y1), 4).filter(Number.isInteger)
      : niceTicks(y0, y1, 4);
    for (const t of yt) {
      const y = pad.t + ph - ((t - y0) / (y1 - y0)) * ph;
      ctx.beginPath();
      ctx.moveTo(pad.l, y);
      ctx.lineTo(pad.l + pw, y);
      ctx.stroke();
      ctx.fillText(opts.log2 ? `2^${t}` : this.formatY(t), pad.l - 6, y);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (const t of niceTicks(x0, x1, 5)) {
      if (!Number.isInteger(t)) continue;
      ctx.fillText(String(t), px(t), pad.t + ph + 5);
    }
    ctx.strokeStyle = AXIS;
    ctx.strokeRect(pad.l, pad.t, pw, ph);

    // Series.
    ctx.save();
    ctx.beginPath();
    ctx.rect(pad.l, pad.t, pw, ph);
    ctx.clip();
    opts.series.forEach((s, i) => {
      const pts = this.data[i];
      if (!pts.length) return;
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.lineWidth = 1.6;
      ctx.beginPath();
      pts.forEach(([x, y], k) => {
        if (k === 0) ctx.moveTo(px(x), py(y));
        else if (s.step) {
          ctx.lineTo(px(x), py(pts[k - 1][1]));
          ctx.lineTo(px(x), py(y));
        } else ctx.lineTo(px(x), py(y));
      });
      ctx.stroke();
      if (pts.length < 40) {
        for (const [x, y] of pts) {
          ctx.beginPath();
          ctx.arc(px(x), py(y), 2.2, 0, 2 * Math.PI);
          ctx.fill();
        }
      }
    });
    ctx.restore();
  }

  formatY(v) {
    if (this.opts.percent) return `${(v * 100).toFixed(1)}%`;
    if (this.opts.log2 && v > 0 && Number.isInteger(Math.log2(v))) return `2^${Math.log2(v)}`;
    return formatNumber(v);
  }
}
