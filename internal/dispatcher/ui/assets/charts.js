// cpvrefresh charts: the Charts page (the latest runs, the fleet by status)
// and a tenant's timeline. Drawn as SVG with DOM calls: no library, nothing
// inline, so the page's Content-Security-Policy holds. Every chart has its
// numbers as a table under a "Numbers" toggle. app.js calls
// cpvCharts.page(ui) and cpvCharts.timeline(history, ui); ui carries the
// few helpers of app.js used here (see chartsUI there).
'use strict';

window.cpvCharts = (function () {
  const NS = 'http://www.w3.org/2000/svg';
  const RUNS = 30;
  // The stacked parts of a run's bar, bottom up, and the fleet's states.
  const PARTS = ['succeeded', 'partial', 'failed', 'pending'];
  const STATES = [['succeeded', 'succeeded'], ['partial', 'partial'], ['failed', 'failed'], ['running', 'running'], ['never', 'never refreshed']];
  const W = 720;
  const PAD = { left: 48, right: 12, top: 12, bottom: 28 };

  // svg builds an SVG element as h builds HTML ones; text is text.
  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null && v !== false) el.setAttribute(k, String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  let uid = 0;

  // frame is a chart: an SVG of the given height, labelled by its title.
  function frame(title, height) {
    const id = 'chart-title-' + (++uid);
    return svg('svg', { viewBox: '0 0 ' + W + ' ' + height, class: 'chart-svg', role: 'img', 'aria-labelledby': id, preserveAspectRatio: 'xMinYMin meet' },
      svg('title', { id }, title));
  }

  // niceMax rounds a maximum up to 1, 2 or 5 times a power of ten.
  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // yAxis draws three grid lines with their labels (fmt formats a value).
  function yAxis(el, height, max, fmt) {
    const inner = height - PAD.top - PAD.bottom;
    for (const f of [0, 0.5, 1]) {
      const y = PAD.top + inner * (1 - f);
      el.append(svg('line', { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: 'grid' }),
        svg('text', { x: PAD.left - 6, y: y + 4, class: 'axis', 'text-anchor': 'end' }, fmt(max * f)));
    }
  }

  function shortDate(s) {
    const d = s ? new Date(s) : null;
    if (!d || isNaN(d.getTime())) return '';
    return d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
  }

  // details is a chart's "Numbers" toggle; key names it for app.js's
  // keepFocus, and it stays open across redraws.
  function details(key, table) {
    const was = document.querySelector('[data-focus="' + key + '"]');
    return h_('details', { class: 'chart-numbers', open: !!(was && was.parentElement.open) },
      h_('summary', { dataset: { focus: key } }, 'Numbers'), h_('div', { class: 'table-wrap' }, table));
  }

  // h_ is app.js's h, set by page and timeline.
  let h_ = null;

  function legend(items) {
    return h_('ul', { class: 'chart-legend' }, items.map(([k, label]) =>
      h_('li', {}, svg('svg', { viewBox: '0 0 10 10', class: 'swatch', 'aria-hidden': 'true' }, svg('rect', { width: 10, height: 10, class: 'seg-' + k })), label)));
  }

  // ---------- the latest runs ----------

  function runLabel(r) {
    return (r.kind === 'nightly' ? 'Nightly ' : 'Refresh all ') + shortDate(r.started);
  }

  function runsChart(runs, ui) {
    const height = 240;
    const el = frame('Tenants of the last ' + runs.length + ' runs by outcome, oldest first', height);
    const max = niceMax(Math.max(0, ...runs.map((r) => r.enqueued)));
    yAxis(el, height, max, (v) => String(Math.round(v)));
    const inner = height - PAD.top - PAD.bottom;
    const step = (W - PAD.left - PAD.right) / Math.max(runs.length, 1);
    const bw = Math.max(2, Math.min(28, step * 0.7));
    runs.forEach((r, i) => {
      const x = PAD.left + i * step + (step - bw) / 2;
      let y = PAD.top + inner;
      const g = svg('g', { class: 'bar', 'data-run': r.id });
      for (const part of PARTS) {
        const v = r[part] || 0;
        if (!v) continue;
        const hgt = inner * v / max;
        y -= hgt;
        g.append(svg('rect', { x: x.toFixed(1), y: y.toFixed(1), width: bw.toFixed(1), height: Math.max(hgt, 0.5).toFixed(1), class: 'seg seg-' + part, 'data-part': part, 'data-value': v },
          svg('title', {}, runLabel(r) + ': ' + v + ' ' + part)));
      }
      el.append(g);
      if (runs.length <= 12 || i % Math.ceil(runs.length / 10) === 0 || i === runs.length - 1) {
        el.append(svg('text', { x: (x + bw / 2).toFixed(1), y: height - 8, class: 'axis', 'text-anchor': 'middle' }, shortDate(r.started)));
      }
    });
    return el;
  }

  function durationChart(runs, ui) {
    const height = 160;
    const el = frame('Duration of the last ' + runs.length + ' runs, from the start to the latest result, oldest first', height);
    const max = niceMax(Math.max(0, ...runs.map((r) => r.durationMs)));
    yAxis(el, height, max, (v) => (v ? ui.duration(Math.round(v)) : '0'));
    const inner = height - PAD.top - PAD.bottom;
    const step = (W - PAD.left - PAD.right) / Math.max(runs.length, 1);
    const bw = Math.max(2, Math.min(28, step * 0.7));
    runs.forEach((r, i) => {
      if (!r.durationMs) return;
      const x = PAD.left + i * step + (step - bw) / 2;
      const hgt = Math.max(inner * r.durationMs / max, 0.5);
      el.append(svg('rect', { x: x.toFixed(1), y: (PAD.top + inner - hgt).toFixed(1), width: bw.toFixed(1), height: hgt.toFixed(1), class: 'seg seg-duration', 'data-run': r.id, 'data-value': r.durationMs },
        svg('title', {}, runLabel(r) + ': ' + ui.duration(r.durationMs))));
    });
    return el;
  }

  function runsTable(runs, ui) {
    const h = h_;
    return h('table', { id: 'runs-table' },
      h('caption', { class: 'visually-hidden' }, 'The last ' + runs.length + ' runs, newest first'),
      h('thead', {}, h('tr', {}, ['Run', 'Started', 'Enqueued', 'Succeeded', 'Partial', 'Failed', 'Pending', 'Duration'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, runs.slice().reverse().map((r) => h('tr', { dataset: { run: r.id } },
        h('th', { scope: 'row' }, h('code', {}, r.id), r.settled ? null : h('span', { class: 'sub' }, 'as its tenants stand now')),
        h('td', { class: 'nowrap' }, ui.exact(r.started)),
        ['enqueued', 'succeeded', 'partial', 'failed', 'pending'].map((k) => h('td', { class: 'num', dataset: { count: k } }, String(r[k]),
          k === 'pending' && r.running ? h('span', { class: 'sub' }, r.running + ' running') : null)),
        h('td', { class: 'nowrap', dataset: { count: 'duration' } }, ui.duration(r.durationMs))))));
  }

  // ---------- the fleet by status ----------

  function statusChart(fleet) {
    const by = fleet.byStatus || {};
    const rows = STATES.filter(([k]) => by[k]);
    const height = PAD.top + PAD.bottom + 26 * Math.max(rows.length, 1);
    const el = frame('Tenants by status now, of ' + fleet.total, height);
    const max = niceMax(Math.max(0, ...rows.map(([k]) => by[k])));
    const left = 130;
    const span = W - left - PAD.right - 60;
    rows.forEach(([k, label], i) => {
      const y = PAD.top + i * 26;
      const w = Math.max(span * by[k] / max, 1);
      el.append(svg('text', { x: left - 8, y: y + 15, class: 'axis', 'text-anchor': 'end' }, label),
        svg('rect', { x: left, y, width: w.toFixed(1), height: 20, class: 'seg seg-' + k, 'data-state': k, 'data-value': by[k] },
          svg('title', {}, label + ': ' + by[k])),
        svg('text', { x: (left + w + 6).toFixed(1), y: y + 15, class: 'axis' }, String(by[k])));
    });
    return el;
  }

  function statusTable(fleet) {
    const h = h_;
    const by = fleet.byStatus || {};
    return h('table', { id: 'status-table' },
      h('caption', { class: 'visually-hidden' }, 'Tenants by status now'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Tenants'))),
      h('tbody', {},
        STATES.map(([k, label]) => h('tr', { dataset: { state: k } }, h('th', { scope: 'row' }, label), h('td', { class: 'num' }, String(by[k] || 0)))),
        h('tr', { dataset: { state: 'excluded' } }, h('th', { scope: 'row' }, 'excluded (of these)'), h('td', { class: 'num' }, String(fleet.excluded || 0))),
        h('tr', { dataset: { state: 'total' } }, h('th', { scope: 'row' }, 'total'), h('td', { class: 'num' }, String(fleet.total || 0)))));
  }

  // ---------- the page ----------

  function page(ui) {
    h_ = ui.h;
    const h = h_;
    const token = ui.token;
    ui.page('Charts',
      h('div', { class: 'page-head' },
        h('div', {},
          h('h1', {}, 'Charts'),
          h('p', { class: 'sub' }, 'The last ' + RUNS + ' runs and the fleet as it stands. Each chart\'s numbers are in the table under it.'))),
      h('div', { id: 'charts-region' }, h('p', { class: 'empty' }, 'Loading…')));
    ui.reloadWith(() => { ui.stopPolling(); load(ui, token); });
    load(ui, token);
  }

  let drawn = '';

  async function load(ui, token) {
    const h = h_;
    let delay = 15000;
    const region = document.getElementById('charts-region');
    try {
      const v = await ui.api('GET', 'charts?limit=' + RUNS);
      if (token !== ui.currentToken() || !region) return;
      const runs = v.runs || [];
      // Redrawn only when a number changed, so a screen reader is not interrupted.
      if (runs.some((r) => !r.settled && r.pending > 0)) delay = 5000;
      const seen = JSON.stringify([runs, v.fleet]);
      const asOf = document.getElementById('charts-asof');
      if (seen === drawn && asOf) {
        ui.fill(asOf, 'As of ', ui.when(v.asOf), '.');
        ui.schedule(() => load(ui, token), delay);
        return;
      }
      drawn = seen;
      ui.keepFocus(() => ui.fill(region,
        h('section', { class: 'panel chart', 'aria-labelledby': 'runs-chart-title', id: 'runs-chart' },
          h('h2', { id: 'runs-chart-title' }, 'Last ' + RUNS + ' runs'),
          runs.length ? [
            legend(PARTS.map((k) => [k, k])),
            runsChart(runs, ui),
            h('h3', { class: 'small' }, 'Duration'),
            durationChart(runs, ui),
            details('runs-numbers', runsTable(runs, ui))] : h('p', { class: 'empty' }, 'No run has enqueued tenants yet.')),
        h('section', { class: 'panel chart', 'aria-labelledby': 'status-chart-title', id: 'status-chart' },
          h('h2', { id: 'status-chart-title' }, 'Tenants by status now'),
          statusChart(v.fleet || { total: 0, byStatus: {} }),
          details('status-numbers', statusTable(v.fleet || { total: 0, byStatus: {} })),
          h('p', { class: 'small muted', id: 'charts-asof' }, 'As of ', ui.when(v.asOf), '.'))));
    } catch (e) {
      if (e.status === 401 || token !== ui.currentToken()) return;
      if (region) ui.fill(region, ui.errorNotice(e));
      delay = 5000;
    }
    ui.schedule(() => load(ui, token), delay);
  }

  // ---------- a tenant's timeline ----------

  // timeline draws a tenant's attempts (its history rows, newest first) on
  // a time axis, one dot each, coloured by outcome.
  function timeline(history, ui) {
    h_ = ui.h;
    const h = h_;
    const xs = history.filter((x) => !isNaN(new Date(x.at).getTime())).slice().reverse();
    const section = h('section', { class: 'panel chart', 'aria-labelledby': 'timeline-title', id: 'timeline' },
      h('h2', { id: 'timeline-title' }, 'Timeline'));
    if (!xs.length) {
      section.append(h('p', { class: 'empty' }, 'No attempts yet.'));
      return section;
    }
    const height = 90;
    const el = frame('The last ' + xs.length + ' attempts of this tenant by outcome, oldest on the left', height);
    const t0 = new Date(xs[0].at).getTime();
    const t1 = new Date(xs[xs.length - 1].at).getTime();
    const left = PAD.left;
    const right = W - PAD.right - 8;
    const x = (t) => (t1 === t0 ? (left + right) / 2 : left + (right - left) * (t - t0) / (t1 - t0));
    const y = 36;
    el.append(svg('line', { x1: left, x2: right, y1: y, y2: y, class: 'grid' }));
    for (const a of xs) {
      const cx = x(new Date(a.at).getTime());
      el.append(svg('circle', { cx: cx.toFixed(1), cy: y, r: 7, class: 'seg seg-' + (a.state || 'never'), 'data-state': a.state, 'data-at': a.at },
        svg('title', {}, ui.exact(a.at) + ': ' + a.state + (a.durationMs ? ', ' + ui.duration(a.durationMs) : ''))));
    }
    el.append(svg('text', { x: left, y: height - 10, class: 'axis', 'text-anchor': 'start' }, ui.exact(xs[0].at)),
      xs.length > 1 ? svg('text', { x: right, y: height - 10, class: 'axis', 'text-anchor': 'end' }, ui.exact(xs[xs.length - 1].at)) : null);
    const seen = STATES.filter(([k]) => xs.some((a) => a.state === k));
    section.append(legend(seen), el,
      details('timeline-numbers', h('table', { id: 'timeline-table' },
        h('caption', { class: 'visually-hidden' }, 'Attempts, oldest first'),
        h('thead', {}, h('tr', {}, ['When', 'Status', 'Operation', 'Duration'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, xs.map((a) => h('tr', { dataset: { state: a.state || '' } },
          h('td', { class: 'nowrap' }, ui.exact(a.at)),
          h('td', {}, ui.badge(a.state)),
          h('td', {}, (a.op || 'refresh') + (a.reason ? ' · ' + a.reason : '')),
          h('td', { class: 'nowrap' }, ui.duration(a.durationMs))))))));
    return section;
  }

  return { page, timeline };
})();
