// cpvrefresh UI: the Notifications panel of the Settings page (Admin).
// app.js renders the panel's region and sends 'cpv:settings' with its
// helpers; this file fills the region from GET api/notify. URLs are
// shown as the API gives them (scheme and host only): a URL typed in is
// sent once and never shown again.
'use strict';

(function () {
  let ui = null; // the helpers of the settings page shown last

  document.addEventListener('cpv:settings', (e) => {
    ui = e.detail;
    load();
  });

  function region() { return document.querySelector('#notify-region'); }

  const ORIGIN = { environment: 'CPV_NOTIFY_URLS', settings: 'added here' };

  function view(v, results) {
    const { h } = ui;
    const chans = v.channels || [];
    const byKey = new Map((results || []).map((r) => [r.origin + ':' + r.index, r]));
    return [
      h('p', { class: 'muted' }, 'Digests of tenants newly failed, missing consent, recovered or onboarded, runs with failures, and alerts (credential expiry, rotation, webhook registration, checks), sent on changes only. URLs from CPV_NOTIFY_URLS and those added here are all used.'),
      chans.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'notify-channels' },
        h('thead', {}, h('tr', {}, ['Service', 'URL', 'From', results ? 'Test' : '', ''].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, chans.map((c) => {
          const r = byKey.get(c.origin + ':' + c.index);
          return h('tr', { 'data-origin': c.origin, 'data-index': String(c.index) },
            h('td', {}, c.service),
            h('td', {}, h('code', {}, c.url)),
            h('td', {}, ORIGIN[c.origin] || c.origin),
            h('td', { class: 'notify-result' }, r ? (r.delivered ? 'delivered' : 'failed: ' + (r.error || 'no answer')) : ''),
            h('td', {}, c.origin === 'settings' ? h('button', { type: 'button', class: 'button secondary', 'data-remove': String(c.index),
              onclick: () => act('DELETE', 'notify/urls/' + c.index, undefined, 'Notification URL removed.') }, 'Remove') : ''));
        })))) : h('p', { class: 'empty', id: 'notify-none' }, 'No notification URL: nothing is sent.'),
      h('form', { id: 'notify-add', onsubmit: (e) => { e.preventDefault(); add(); } },
        h('label', { for: 'notify-url' }, 'Add a shoutrrr URL (teams://, slack://, smtp://, generic://…)'),
        h('input', { id: 'notify-url', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true }),
        ' ',
        h('button', { type: 'submit', class: 'button', id: 'notify-add-button' }, 'Add')),
      h('p', {},
        h('button', { type: 'button', class: 'button secondary', id: 'notify-test', disabled: !chans.length,
          onclick: () => test() }, 'Send test')),
      results ? h('p', { class: 'notice' + (results.every((r) => r.delivered) ? '' : ' warn'), id: 'notify-test-result', role: 'status' },
        results.filter((r) => r.delivered).length + ' of ' + results.length + ' channels took the test message.') : null,
    ];
  }

  async function load(results) {
    const u = ui;
    const el = region();
    if (!u || !el) return;
    try {
      const v = await u.api('GET', 'notify');
      if (!u.current() || !region()) return;
      u.fill(region(), ...view(v, results));
    } catch (e) {
      if (e.status === 401 || !u.current()) return;
      u.fill(el, u.errorNotice(e));
    }
  }

  async function act(method, path, body, done) {
    const u = ui;
    try {
      await u.api(method, path, body);
      u.announce(done);
      await load();
    } catch (e) {
      if (e.status === 401 || !u.current()) return;
      const el = region();
      if (el) el.prepend(u.errorNotice(e));
    }
  }

  function add() {
    const input = document.querySelector('#notify-url');
    const url = input ? input.value.trim() : '';
    if (!url) return;
    act('POST', 'notify/urls', { url }, 'Notification URL added.');
  }

  async function test() {
    const u = ui;
    const btn = document.querySelector('#notify-test');
    if (btn) btn.disabled = true;
    try {
      const res = await u.api('POST', 'notify/test');
      const results = res.results || [];
      u.announce(results.filter((r) => r.delivered).length + ' of ' + results.length + ' channels took the test message.');
      await load(results);
    } catch (e) {
      if (e.status === 401 || !u.current()) return;
      const el = region();
      if (el) el.prepend(u.errorNotice(e));
      if (btn) btn.disabled = false;
    }
  }
})();
