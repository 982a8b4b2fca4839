// cpvrefresh UI: the Access page (#/access), the access checks' latest
// results (GET api/checks) and, for an Operator, "Run checks"
// (POST api/checks/run). Uses app.js's helpers (window.cpvUI).
'use strict';

(function () {
  const ui = window.cpvUI;
  if (!ui) return;
  const { h, fill, $, api, page, when, exact, announce, keepFocus, schedule, stopPolling, errorNotice, canOperate } = ui;

  const AREAS = [['partner', 'Partner app'], ['gdap', 'GDAP'], ['tenants', 'Tenants'], ['webhook', 'Webhook']];
  const LABELS = { ok: 'ok', warn: 'warning', fail: 'failing' };
  const RANK = { fail: 0, warn: 1, ok: 2 };

  // requestedAt is when this tab last asked for a run: the page polls
  // faster until results newer than it arrive.
  let requestedAt = 0;

  function renderAccessPage() {
    const token = ui.renderToken();
    page('Access',
      h('div', { class: 'page-head' },
        h('h1', {}, 'Access'),
        canOperate() ? h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'button', id: 'checks-run', dataset: { focus: 'checks-run' }, onclick: runChecks }, 'Run checks')) : null),
      h('p', { class: 'muted' }, 'Whether the partner app can still do what a refresh needs: its permissions and consent, its credential, Partner Center, the GDAP relationships, each tenant\'s access and the webhook. The checks run daily on one dispatcher and on demand.'),
      h('div', { id: 'checks-notice' }),
      h('div', { id: 'checks-region' }, h('p', { class: 'empty' }, 'Loading…')));
    loadChecks(token);
  }

  async function loadChecks(token) {
    let delay = 30000;
    try {
      const v = await api('GET', 'checks');
      if (token !== ui.renderToken()) return;
      keepFocus(() => drawChecks(v));
      const newest = Math.max(0, ...(v.checks || []).map((c) => new Date(c.checkedAt).getTime() || 0));
      if (requestedAt && newest >= requestedAt - 1000) {
        requestedAt = 0;
        const notice = $('#checks-notice');
        if (notice) fill(notice);
        announce('Access checks finished.');
      }
      if (requestedAt) delay = 1000;
    } catch (e) {
      if (e.status === 401 || token !== ui.renderToken()) return;
      fill($('#checks-region'), errorNotice(e));
    }
    schedule(() => loadChecks(token), delay);
  }

  function drawChecks(v) {
    const region = $('#checks-region');
    if (!region) return;
    const cs = v.checks || [];
    if (!cs.length) {
      fill(region, h('p', { class: 'empty' }, v.configured
        ? 'The checks have not run yet. They run within a minute of the dispatcher starting, or now with "Run checks".'
        : 'The access checks are not configured on this dispatcher.'));
      return;
    }
    const counts = { ok: 0, warn: 0, fail: 0 };
    for (const c of cs) counts[c.status] = (counts[c.status] || 0) + 1;
    const summary = h('ul', { class: 'summary', 'aria-label': 'Checks by status' },
      ['fail', 'warn', 'ok'].filter((s) => counts[s]).map((s) =>
        h('li', {}, h('strong', {}, counts[s]), h('span', { class: 'badge check-' + s }, LABELS[s]))));
    const sections = AREAS.map(([area, title]) => {
      // Problems first, then by id (the server's order).
      const mine = cs.filter((c) => c.area === area).sort((a, b) => (RANK[a.status] ?? 3) - (RANK[b.status] ?? 3));
      if (!mine.length) return null;
      return h('section', { 'aria-labelledby': 'area-' + area },
        h('h2', { id: 'area-' + area }, title),
        h('ul', { class: 'checks' }, mine.map(checkItem)));
    });
    fill(region, summary, sections);
  }

  function checkItem(c) {
    return h('li', { id: 'check-' + c.id, dataset: { check: c.id, status: c.status } },
      h('h3', {}, h('span', { class: 'badge check-' + c.status }, LABELS[c.status] || c.status), ' ', c.title),
      c.summary ? h('p', { class: 'check-summary' }, c.summary) : null,
      c.evidence && c.evidence.length ? h('ul', { class: 'evidence', 'aria-label': 'Evidence' }, c.evidence.map((e) => h('li', {}, e))) : null,
      c.advice ? h('div', { class: 'advice' }, h('strong', {}, 'What to do: '), c.advice) : null,
      c.id === 'tenant-access' && c.status !== 'ok' ? h('p', { class: 'small' }, h('a', { href: '#/tenants' }, 'Tenants page'), ' (the Access column shows each tenant\'s)') : null,
      h('p', { class: 'small muted' }, 'Checked ', when(c.checkedAt), ' · ', c.status, ' since ', h('span', { title: exact(c.changedAt) }, when(c.changedAt)),
        c.previous ? ' (was ' + c.previous + ')' : ''));
  }

  async function runChecks() {
    const notice = $('#checks-notice');
    const button = $('#checks-run');
    if (button) button.disabled = true;
    try {
      requestedAt = Date.now();
      await api('POST', 'checks/run');
      if (notice) fill(notice, h('p', { class: 'notice' }, 'The checks are running; the results appear here when they finish.'));
      announce('Access checks started.');
    } catch (e) {
      if (e.status === 401) return;
      if (e.status !== 409) requestedAt = 0;
      if (notice) fill(notice, errorNotice(e));
    } finally {
      if (button) button.disabled = false;
    }
    stopPolling();
    loadChecks(ui.renderToken());
  }

  ui.addPage('#/access', 'access', renderAccessPage);
})();
