// Horizontal bar charts drawn as inline SVG: no library, nothing to download.
// Drawn at the container's pixel width (not scaled through a viewBox) so text stays
// readable on a phone; app.js redraws on resize.

const SVG = "http://www.w3.org/2000/svg";
const ROW_GAP = 14;
const BAR_H = 18;
const LABEL_W = 124; // outcome names ("shared in flight")
const VALUE_W = 78; // the number printed after a bar

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Linear for counts; log for latencies, which span a Redis GET (~1 ms) to an LLM call
// (seconds): on a linear axis every cache hit would be an invisible sliver.
function scaleOf(kind, values, width) {
  const max = Math.max(...values, 0);
  if (kind !== "log") {
    return { x: (v) => (max > 0 ? (v / max) * width : 0), ticks: [] };
  }
  const positive = values.filter((v) => v > 0);
  const lo = 10 ** Math.floor(Math.log10(Math.min(...positive, 1)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(max, lo * 10)));
  const span = Math.log10(hi) - Math.log10(lo);
  const x = (v) => (v > 0 ? Math.max(2, ((Math.log10(v) - Math.log10(lo)) / span) * width) : 0);
  const ticks = [];
  for (let e = Math.log10(lo); e <= Math.log10(hi); e += 1) ticks.push(10 ** e);
  return { x, ticks };
}

/**
 * rows:   [{label, cls, values: [number|null per series], texts: [string per series]}]
 * series: [{name, cls}] — one bar per series and row; a legend when there are several
 * opts:   {scale: "linear"|"log", tickText: (v) => string, title: string}
 */
export function barChart(container, rows, series, opts = {}) {
  const width = Math.max(container.clientWidth || 0, 280);
  const plotW = width - LABEL_W - VALUE_W;
  const legendH = series.length > 1 ? 24 : 0;
  const rowH = series.length * BAR_H + ROW_GAP;
  const axisH = opts.scale === "log" ? 18 : 0;
  const height = legendH + rows.length * rowH + axisH;
  const all = rows.flatMap((r) => r.values.filter((v) => v !== null && v !== undefined));
  const { x, ticks } = scaleOf(opts.scale, all, plotW);

  const svg = el("svg", { width, height, role: "img", class: "chart" });
  const summary = rows
    .map((r) => `${r.label}: ${series.map((s, i) => `${s.name} ${r.texts[i]}`).join(", ")}`)
    .join("; ");
  svg.append(el("title", {}, `${opts.title || "chart"}. ${summary}`));

  series.forEach((s, i) => {
    if (series.length < 2) return;
    const lx = LABEL_W + i * 90;
    svg.append(el("rect", { x: lx, y: 4, width: 12, height: 12, class: s.cls }));
    svg.append(el("text", { x: lx + 16, y: 14, class: "legend" }, s.name));
  });

  const top = legendH;
  // On a narrow screen every other tick label is left out, so they do not run together.
  const labelEvery = ticks.length > 1 && plotW / (ticks.length - 1) < 52 ? 2 : 1;
  ticks.forEach((t, i) => {
    const tx = LABEL_W + x(t);
    svg.append(el("line", { x1: tx, x2: tx, y1: top, y2: height - axisH, class: "grid" }));
    if (i % labelEvery) return;
    const attrs = { x: tx, y: height - 4, class: "tick", "text-anchor": "middle" };
    svg.append(el("text", attrs, opts.tickText(t)));
  });

  rows.forEach((row, r) => {
    const y0 = top + r * rowH + ROW_GAP / 2;
    const midY = y0 + (series.length * BAR_H) / 2;
    svg.append(el("text", { x: 0, y: midY + 4, class: "label" }, row.label));
    series.forEach((s, i) => {
      const v = row.values[i];
      const y = y0 + i * BAR_H;
      const w = v === null || v === undefined ? 0 : x(v);
      svg.append(
        el("rect", { x: LABEL_W, y: y + 2, width: w, height: BAR_H - 4, class: `${row.cls} ${s.cls}` }),
      );
      svg.append(el("text", { x: LABEL_W + w + 6, y: y + BAR_H - 5, class: "value" }, row.texts[i]));
    });
  });
  container.replaceChildren(svg);
}
