// Charts as SVG built with DOM calls (no markup strings): labelled axes, a title per bar.
import type { Stats } from './api.js';

const SVG = 'http://www.w3.org/2000/svg';

function svgEl<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number>,
  text?: string,
): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Round tick values from 0 to at least `max`. */
function ticks(max: number, count = 4): number[] {
  const raw = Math.max(1, max) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = 0; v <= max + step - 1e-9 && out.length <= count + 1; v += step) out.push(Math.round(v));
  return out;
}

/** Messages per day: inbound and outbound stacked, dates on the x axis, counts on the y axis. */
interface Margins {
  readonly top: number;
  readonly right: number;
  readonly bottom: number;
  readonly left: number;
}

/** The two axis lines of a chart and the label of its x axis. */
function axes(svg: SVGSVGElement, m: Margins, w: number, h: number, xLabel: string): void {
  svg.appendChild(svgEl('line', { class: 'axis', x1: m.left, x2: m.left, y1: m.top, y2: h - m.bottom }));
  svg.appendChild(
    svgEl('line', { class: 'axis', x1: m.left, x2: w - m.right, y1: h - m.bottom, y2: h - m.bottom }),
  );
  const plotW = w - m.left - m.right;
  svg.appendChild(
    svgEl(
      'text',
      { class: 'axis-label x', x: m.left + plotW / 2, y: h - 8, 'text-anchor': 'middle' },
      xLabel,
    ),
  );
}

export function dailyChart(daily: Stats['daily']): SVGSVGElement {
  const w = 720;
  const h = 240;
  const m = { left: 48, right: 12, top: 12, bottom: 48 };
  const plotW = w - m.left - m.right;
  const plotH = h - m.top - m.bottom;
  const max = Math.max(1, ...daily.map((d) => d.inbound + d.outbound));
  const yTicks = ticks(max);
  const top = yTicks[yTicks.length - 1] ?? max;
  const y = (v: number) => m.top + plotH - (plotH * v) / top;
  const svg = svgEl('svg', {
    viewBox: `0 0 ${w} ${h}`,
    class: 'chart',
    role: 'img',
    'aria-label': `Messages per day over the last ${daily.length} days`,
  });
  for (const t of yTicks) {
    svg.appendChild(svgEl('line', { class: 'grid', x1: m.left, x2: w - m.right, y1: y(t), y2: y(t) }));
    svg.appendChild(
      svgEl('text', { class: 'tick y', x: m.left - 6, y: y(t) + 4, 'text-anchor': 'end' }, String(t)),
    );
  }
  const step = plotW / Math.max(1, daily.length);
  daily.forEach((d, i) => {
    const x = m.left + i * step + 1;
    const g = svgEl('g', { class: 'point', 'data-date': d.date, 'data-value': d.inbound + d.outbound });
    const barW = Math.max(1, step - 2);
    g.appendChild(
      svgEl('rect', { class: 'in', x, width: barW, y: y(d.inbound), height: y(0) - y(d.inbound) }),
    );
    g.appendChild(
      svgEl('rect', {
        class: 'out',
        x,
        width: barW,
        y: y(d.inbound + d.outbound),
        height: y(d.inbound) - y(d.inbound + d.outbound),
      }),
    );
    g.appendChild(
      svgEl('title', {}, `${d.date}: ${d.inbound} in, ${d.outbound} out, ${d.newUsers} new users`),
    );
    svg.appendChild(g);
    if (i % 5 === 0 || i === daily.length - 1) {
      svg.appendChild(
        svgEl(
          'text',
          { class: 'tick x', x: x + barW / 2, y: h - m.bottom + 14, 'text-anchor': 'middle' },
          d.date.slice(5),
        ),
      );
    }
  });
  axes(svg, m, w, h, 'Day (UTC, month-day)');
  svg.appendChild(
    svgEl(
      'text',
      {
        class: 'axis-label y',
        x: -(m.top + plotH / 2),
        y: 12,
        transform: 'rotate(-90)',
        'text-anchor': 'middle',
      },
      'Messages',
    ),
  );
  // Legend, top right.
  const legend = svgEl('g', { class: 'legend' });
  [
    ['in', 'Inbound'],
    ['out', 'Outbound'],
  ].forEach(([cls, text], i) => {
    const lx = w - m.right - 170 + i * 90;
    legend.appendChild(svgEl('rect', { class: cls ?? '', x: lx, y: m.top, width: 10, height: 10 }));
    legend.appendChild(svgEl('text', { x: lx + 14, y: m.top + 9 }, text));
  });
  svg.appendChild(legend);
  return svg;
}

/** AI tokens per model: one horizontal bar per model, tokens on the x axis. */
export function modelsChart(models: NonNullable<Stats['ai']['models']>): SVGSVGElement {
  const rowH = 26;
  const w = 720;
  const m = { left: 160, right: 20, top: 8, bottom: 40 };
  const h = m.top + m.bottom + Math.max(1, models.length) * rowH;
  const plotW = w - m.left - m.right;
  const max = Math.max(1, ...models.map((x) => x.tokens));
  const xTicks = ticks(max);
  const right = xTicks[xTicks.length - 1] ?? max;
  const x = (v: number) => m.left + (plotW * v) / right;
  const svg = svgEl('svg', {
    viewBox: `0 0 ${w} ${h}`,
    class: 'chart',
    role: 'img',
    'aria-label': 'AI tokens per model',
  });
  for (const t of xTicks) {
    svg.appendChild(svgEl('line', { class: 'grid', x1: x(t), x2: x(t), y1: m.top, y2: h - m.bottom }));
    svg.appendChild(
      svgEl('text', { class: 'tick x', x: x(t), y: h - m.bottom + 14, 'text-anchor': 'middle' }, String(t)),
    );
  }
  models.forEach((model, i) => {
    const top = m.top + i * rowH + 4;
    const g = svgEl('g', { class: 'model', 'data-model': model.model, 'data-tokens': model.tokens });
    g.appendChild(
      svgEl('rect', { class: 'bar', x: m.left, y: top, width: x(model.tokens) - m.left, height: rowH - 8 }),
    );
    g.appendChild(
      svgEl('text', { class: 'tick y', x: m.left - 6, y: top + rowH / 2, 'text-anchor': 'end' }, model.model),
    );
    g.appendChild(svgEl('title', {}, `${model.model}: ${model.tokens} tokens in ${model.requests} requests`));
    svg.appendChild(g);
  });
  if (models.length === 0) {
    svg.appendChild(svgEl('text', { x: m.left + 8, y: m.top + rowH / 2 + 4 }, 'No AI answers yet'));
  }
  axes(svg, m, w, h, 'Tokens');
  svg.appendChild(
    svgEl('text', { class: 'axis-label y', x: 8, y: m.top + 10, 'text-anchor': 'start' }, 'Model'),
  );
  return svg;
}
