// cpvrefresh UI: one page, hash routes, plain DOM. Talks only to the
// dispatcher's JSON API on the same origin (see the ui package comment).
'use strict';

(function () {
  const CREDENTIAL_KEY = 'cpvrefresh.credential';
  const PAGE_SIZE = 50;
  const ZERO_TIME = '0001-01-01T00:00:00Z';
  const FINAL = new Set(['succeeded', 'partial', 'failed']);

  // app is the page's whole state; nothing else is kept between renders.
  const app = {
    credential: sessionStorage.getItem(CREDENTIAL_KEY) || '',
    me: null,           // GET api/me once signed in: name, role, via, canOperate, canAdminister
    microsoft: false,   // sign-in with Microsoft is configured (GET auth/config)
    activity: null,     // the activity page: {items, continuation, filter}
    pollTimer: 0,
    renderToken: 0, // bumped on every route change: stale async renders give up
    tenants: [],        // the page of tenants shown (GET api/tenants?limit=…: sorted and filtered by the server)
    tenantsLoaded: false,
    listing: null,      // that answer's continuation, matched and summary (counts of the whole fleet)
    // The list's filters and sort, and the continuation tokens of the pages
    // seen (tokens[i] fetches page i), so Previous goes back.
    list: { search: '', filter: 'all', exclusion: 'all', manifest: 'all', profile: '', sort: 'status', dir: 1, page: 0, tokens: [''] }, // problems first
    run: null,          // the run shown on the tenants page (RunView with progress)
    runError: '',
    requests: [],       // requests made in this tab: {requestId, runId, op, tenantId, tenantName, state, detail, error}
    backend: null,
    reload: null,       // polls the current page at once (set by each page)
    previews: {},       // tenant id -> the preview asked for in this tab: {requestId, at, error}
    profileChoice: null, // {tenant, value}: the profile chosen on a tenant page, kept across its redraws
    profileEdit: null,  // the profile being edited on the permissions page: {name, resources}
  };

  // ---------- DOM helpers ----------

  // h builds an element: h('a', {href: '#/x', class: 'y'}, 'text', child, ...).
  // Text is always set as text, never parsed as HTML.
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
    append(el, kids);
    return el;
  }

  function append(el, kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  // fill replaces el's children, skipping empty ones as h does.
  function fill(el, ...kids) {
    el.replaceChildren();
    return append(el, kids);
  }

  function $(sel, root) { return (root || document).querySelector(sel); }

  function announce(text) {
    const el = $('#announcer');
    el.textContent = '';
    // A separate task so that repeating the same text is announced again.
    setTimeout(() => { el.textContent = text; }, 50);
  }

  // ---------- formatting ----------

  function validTime(s) {
    if (!s || s === ZERO_TIME) return null;
    const d = new Date(s);
    return isNaN(d.getTime()) || d.getUTCFullYear() < 2000 ? null : d;
  }

  const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  const relFmt = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

  function relative(d) {
    const secs = Math.round((d.getTime() - Date.now()) / 1000);
    const abs = Math.abs(secs);
    if (abs < 45) return secs <= 0 ? 'just now' : 'in a few seconds';
    if (abs < 3600) return relFmt.format(Math.round(secs / 60), 'minute');
    if (abs < 86400) return relFmt.format(Math.round(secs / 3600), 'hour');
    return relFmt.format(Math.round(secs / 86400), 'day');
  }

  // when renders a time as <time> with the exact value in its title.
  function when(s, empty) {
    const d = validTime(s);
    if (!d) return h('span', { class: 'muted' }, empty || 'never');
    return h('time', { datetime: d.toISOString(), title: dateFmt.format(d) }, relative(d));
  }

  function exact(s, tz) {
    const d = validTime(s);
    if (!d) return '—';
    if (tz) {
      try {
        return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short', timeZone: tz }).format(d) + ' (' + tz + ')';
      } catch (e) { /* unknown zone for this browser: fall through */ }
    }
    return dateFmt.format(d);
  }

  function duration(ms) {
    if (!ms) return '—';
    if (ms < 1000) return ms + ' ms';
    return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + ' s';
  }

  function plural(n, one, many) { return n + ' ' + (n === 1 ? one : (many || one + 's')); }

  function badge(state, label) {
    const s = state || 'never';
    return h('span', { class: 'badge ' + s }, label || (s === 'never' ? 'never refreshed' : s));
  }

  function tenantName(t) { return (t && (t.displayName || t.defaultDomain)) || (t && t.id) || ''; }

  // ---------- API ----------

  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    if (!app.me && path !== 'me') {
      // Signed out meanwhile (the sign-in form is showing): give up quietly.
      throw new APIError(401, 'unauthorized', 'not signed in');
    }
    const used = app.me;
    // A signed-in session rides in its HttpOnly cookie; a key or token in the header.
    const init = { method, headers: { Accept: 'application/json' }, cache: 'no-store', credentials: 'same-origin' };
    if (app.credential) init.headers.Authorization = 'Bearer ' + app.credential;
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch('api/' + path, init);
    } catch (e) {
      throw new APIError(0, 'network', 'The dispatcher did not answer (' + e.message + ').');
    }
    let data = null;
    const text = await res.text();
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (res.status === 401) {
      // Several requests may fail together: sign out once, and never undo
      // a newer sign-in.
      if (used && app.me === used) signOut(used.via === 'session' ? 'Your session has ended. Sign in again.' : 'The dispatcher did not accept your key or token (it may have expired). Sign in again.', true);
      throw new APIError(401, 'unauthorized', 'not signed in');
    }
    if (!res.ok) {
      const err = data && data.error;
      let msg = (err && err.message) || ('The dispatcher answered ' + res.status + '.');
      if (res.status === 403) msg = 'Not allowed: ' + msg;
      throw new APIError(res.status, (err && err.code) || 'http' + res.status, msg);
    }
    return data;
  }

  // ---------- sign-in ----------

  // canOperate and canAdminister say what the signed-in role may do; the
  // page hides what it may not (the API refuses it anyway).
  function canOperate() { return !!(app.me && app.me.canOperate); }
  function canAdminister() { return !!(app.me && app.me.canAdminister); }

  // signOut forgets the key or token, or ends the session on the server
  // (its cookie then no longer works), and shows the sign-in form.
  async function signOut(message, expired) {
    const me = app.me;
    app.me = null;
    if (me && me.via === 'session' && !expired) {
      try {
        await fetch('auth/logout', { method: 'POST', credentials: 'same-origin', cache: 'no-store' });
      } catch (e) { /* the cookie is cleared by the answer; a lost answer leaves a session that expires */ }
    }
    drawWhoami();
    app.credential = '';
    sessionStorage.removeItem(CREDENTIAL_KEY);
    app.requests = [];
    app.tenants = [];
    app.tenantsLoaded = false;
    app.listing = null;
    app.backend = null;
    app.run = null;
    showSignIn(message);
  }

  function showSignIn(message) {
    stopPolling();
    app.renderToken++;
    app.reload = null;
    $('#nav').hidden = true;
    $('#sign-out').hidden = true;
    document.title = 'Sign in · cpvrefresh';
    const input = h('input', { type: 'password', id: 'credential', name: 'credential', autocomplete: 'off', required: true, spellcheck: 'false', 'aria-describedby': 'credential-hint' + (message ? ' signin-message' : '') });
    const back = location.hash && location.hash !== '#/' && location.hash !== '#/signin' ? location.hash : '#/tenants';
    const form = h('form', { class: 'panel signin', id: 'signin-form', novalidate: true },
      h('h1', { tabindex: '-1' }, 'Sign in'),
      message ? h('p', { id: 'signin-message', class: 'error-text', role: 'alert' }, message) : null,
      app.microsoft ? [
        h('p', {}, h('a', { class: 'button', id: 'signin-microsoft', href: 'auth/login?return=' + encodeURIComponent(back) }, 'Sign in with Microsoft')),
        h('p', { class: 'hint' }, 'With your work account in the partner tenant. What you may do depends on the role assigned to you: Reader, Operator or Admin.'),
        h('h2', { class: 'small' }, 'Or use an API key')] : null,
      h('div', { class: 'field' },
        h('label', { for: 'credential' }, 'API key or bearer token'),
        input,
        h('p', { class: 'hint', id: 'credential-hint' }, 'The same credential as the refresh API. It is kept in this browser tab only and sent as an Authorization header.')),
      h('button', { type: 'submit', class: 'button', id: 'signin-submit' }, 'Sign in'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      let v = input.value.trim();
      if (/^bearer\s+/i.test(v)) v = v.replace(/^bearer\s+/i, '');
      if (!v) {
        showSignIn('Enter an API key or a bearer token.');
        return;
      }
      app.credential = v;
      sessionStorage.setItem(CREDENTIAL_KEY, v);
      input.value = '';
      if (!location.hash || location.hash === '#/' || location.hash === '#/signin') location.hash = '#/tenants';
      route();
    });
    const main = $('#main');
    fill(main, form);
    input.focus();
  }

  // ---------- routing ----------

  function stopPolling() {
    clearTimeout(app.pollTimer);
    app.pollTimer = 0;
  }

  function schedule(fn, ms) {
    stopPolling();
    const token = app.renderToken;
    app.pollTimer = setTimeout(() => {
      if (token === app.renderToken && document.visibilityState !== 'hidden') fn();
      else if (token === app.renderToken) schedule(fn, ms);
    }, ms);
  }

  // whoAmI asks who the key, the token or the session cookie belongs to.
  async function whoAmI() {
    try {
      app.me = await api('GET', 'me');
    } catch (e) {
      app.me = null;
      return e.status === 401 || e.status === 403 ? e : null;
    }
    drawWhoami();
    return null;
  }

  // drawWhoami shows who is signed in and their role, and the pages the
  // role may see.
  function drawWhoami() {
    const el = $('#whoami');
    const me = app.me;
    $('#nav-settings').hidden = !canAdminister();
    if (!me) { el.hidden = true; fill(el); return; }
    el.hidden = false;
    el.dataset.role = me.role;
    fill(el, h('span', { class: 'who' }, me.displayName || me.name.replace(/^user:/, '')), ' ',
      h('span', { class: 'badge role', id: 'whoami-role' }, me.role));
  }

  function route() {
    stopPolling();
    app.renderToken++;
    app.reload = null;
    if (!app.me) {
      const token = app.renderToken;
      whoAmI().then((refused) => {
        if (token !== app.renderToken) return;
        if (app.me) { route(); return; }
        const tried = !!app.credential;
        app.credential = '';
        sessionStorage.removeItem(CREDENTIAL_KEY);
        let msg = '';
        if (tried && refused) msg = refused.status === 403 ? refused.message : 'The dispatcher did not accept your key or token.';
        else if (refused && refused.status === 403) msg = refused.message;
        else if (!refused) msg = 'The dispatcher did not answer. Try again.';
        showSignIn(msg);
      });
      return;
    }
    $('#nav').hidden = false;
    $('#sign-out').hidden = false;
    const hash = location.hash || '#/tenants';
    let m;
    if ((m = hash.match(/^#\/tenants\/([0-9a-fA-F-]{36})$/))) {
      setNav('tenants');
      renderTenantPage(m[1].toLowerCase());
    } else if (hash === '#/charts' && window.cpvCharts) {
      setNav('charts');
      window.cpvCharts.page(chartsUI());
    } else if (hash === '#/backend') {
      setNav('backend');
      renderBackendPage();
    } else if (hash === '#/poison') {
      setNav('poison');
      renderPoisonPage();
    } else if (hash === '#/activity') {
      setNav('activity');
      renderActivityPage();
    } else if (hash === '#/settings' && canAdminister()) {
      setNav('settings');
      renderSettingsPage();
    } else if (hash === '#/permissions') {
      setNav('permissions');
      renderPermissionsPage();
    } else if (pages[hash]) {
      setNav(pages[hash].nav);
      pages[hash].render();
    } else {
      setNav('tenants');
      if (hash !== '#/tenants') history.replaceState(null, '', '#/tenants');
      renderTenantsPage();
    }
  }

  function setNav(name) {
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === name) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
  }

  // page replaces the main content and moves focus to its heading, so a
  // screen reader announces the new page.
  function page(title, ...kids) {
    document.title = title + ' · cpvrefresh';
    const main = $('#main');
    fill(main, ...kids.flat().filter(Boolean));
    const h1 = $('h1', main);
    if (h1) {
      h1.setAttribute('tabindex', '-1');
      h1.focus({ preventScroll: false });
    }
  }

  // keepFocus re-renders part of a page and puts focus back on the element
  // with the same data-focus key, if it still exists.
  function keepFocus(fn) {
    const active = document.activeElement;
    const key = active && active.dataset ? active.dataset.focus : '';
    fn();
    if (key) {
      const again = document.querySelector('[data-focus="' + CSS.escape(key) + '"]');
      if (again && again !== document.activeElement) again.focus({ preventScroll: true });
    }
  }

  function errorNotice(e) {
    return h('p', { class: 'notice error', role: 'alert' }, e && e.message ? e.message : String(e));
  }

  // ---------- confirmation dialog ----------

  // confirmDialog opens the modal dialog and resolves true when confirmed
  // ({reason} with opts.reasonField), false when not.
  // opts: title, body (nodes), ok, danger, typeToConfirm (text the user
  // must type before the confirm button works), reasonField (a label: an
  // optional free-text reason).
  function confirmDialog(opts) {
    const dlg = $('#confirm-dialog');
    const form = $('#confirm-form');
    const okBtn = $('#confirm-ok');
    const cancelBtn = $('#confirm-cancel');
    const opener = document.activeElement;
    const openerKey = opener && opener.dataset ? opener.dataset.focus : '';
    $('#confirm-title').textContent = opts.title;
    const body = $('#confirm-body');
    fill(body, ...[].concat(opts.body || []));
    okBtn.textContent = opts.ok || 'Confirm';
    okBtn.className = 'button' + (opts.danger ? ' danger' : '');
    let input = null;
    if (opts.typeToConfirm) {
      input = h('input', { type: 'text', id: 'confirm-text', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'confirm-text-hint' });
      body.append(h('div', { class: 'field' },
        h('label', { for: 'confirm-text' }, 'Type ', h('strong', {}, opts.typeToConfirm), ' to confirm'),
        input,
        h('p', { class: 'hint', id: 'confirm-text-hint' }, 'The confirm button works once the text matches.')));
      const sync = () => {
        const ok = input.value.trim().toLowerCase() === opts.typeToConfirm.trim().toLowerCase();
        okBtn.disabled = !ok;
      };
      input.addEventListener('input', sync);
      sync();
    } else {
      okBtn.disabled = false;
    }
    let reason = null;
    if (opts.reasonField) {
      reason = h('textarea', { id: 'confirm-reason', rows: '3', maxlength: '500', spellcheck: 'true', 'aria-describedby': 'confirm-reason-hint' });
      body.append(h('div', { class: 'field' },
        h('label', { for: 'confirm-reason' }, opts.reasonField),
        reason,
        h('p', { class: 'hint', id: 'confirm-reason-hint' }, 'Optional. Kept with the tenant, with your name and the time.')));
    }
    return new Promise((resolve) => {
      let done = false;
      const finish = (v) => {
        if (done) return;
        done = true;
        form.removeEventListener('submit', onSubmit);
        cancelBtn.removeEventListener('click', onCancel);
        dlg.removeEventListener('close', onClose);
        if (dlg.open) dlg.close();
        // Back to the button that opened the dialog, or to its successor
        // if polling re-rendered it meanwhile.
        let back = opener && opener.isConnected ? opener : null;
        if (!back && openerKey) back = document.querySelector('[data-focus="' + CSS.escape(openerKey) + '"]');
        if (!back) back = $('#main h1');
        if (back && typeof back.focus === 'function') back.focus();
        resolve(v);
      };
      const onSubmit = (ev) => {
        ev.preventDefault();
        if (okBtn.disabled) return;
        finish(reason ? { reason: reason.value.trim() } : true);
      };
      const onCancel = () => finish(false);
      const onClose = () => finish(false); // Escape
      form.addEventListener('submit', onSubmit);
      cancelBtn.addEventListener('click', onCancel);
      dlg.addEventListener('close', onClose);
      dlg.showModal();
      if (input) input.focus();
      else if (reason) reason.focus();
      else if (opts.danger) cancelBtn.focus();
      else okBtn.focus();
    });
  }

  // ---------- requests (refresh / reset / refresh all) ----------

  async function requestTenantOp(tenant, op) {
    const name = tenantName(tenant);
    let ok;
    if (op === 'reset') {
      ok = await confirmDialog({
        title: 'Reset ' + name + '?',
        body: [
          h('p', { class: 'warning' },
            h('strong', {}, 'The service principal will be deleted and re-added. '),
            'The application\'s consent and its service principal in ' + name + ' are removed, then the application is consented again through Partner Center and every permission is applied from scratch.'),
          h('p', {}, 'Until the reset finishes, anything that signs in to this tenant as the application fails. Use a reset when a refresh cannot repair the consent (for example AADSTS65001).'),
        ],
        ok: 'Delete and re-add',
        danger: true,
        typeToConfirm: name,
      });
    } else {
      ok = await confirmDialog({
        title: 'Refresh the CPV permissions of ' + name + '?',
        body: [h('p', {}, 'The application\'s consent, application permissions and delegated permissions in ' + name + ' are checked, and whatever is missing is added. Nothing is removed.')],
        ok: 'Refresh',
      });
    }
    if (!ok) return;
    const req = { requestId: '', op, tenantId: tenant.id, tenantName: name, state: 'pending', detail: null, error: '', at: new Date() };
    try {
      const res = await api('POST', 'tenants/' + encodeURIComponent(tenant.id) + '/' + op);
      req.requestId = res.requestId;
      app.requests.unshift(req);
      app.requests.length = Math.min(app.requests.length, 20);
      announce((op === 'reset' ? 'Reset' : 'Refresh') + ' of ' + name + ' requested: pending.');
    } catch (e) {
      if (e.status === 401) return;
      req.state = 'error';
      req.error = e.message;
      app.requests.unshift(req);
      announce('The ' + op + ' of ' + name + ' could not be requested: ' + e.message);
    }
    reload();
  }

  function reload() {
    if (app.reload) app.reload();
    else route();
  }

  // requestExclusion excludes a tenant (or includes it again) after a
  // confirmation; the tenant page shows the result.
  async function requestExclusion(tenant, exclude) {
    const name = tenantName(tenant);
    const answer = await confirmDialog(exclude ? {
      title: 'Exclude ' + name + '?',
      body: [h('p', {}, 'Nightly runs and "refresh all" leave ' + name + ' out, and refreshes and resets of it are refused until it is included again. Nothing changes in the tenant itself.')],
      ok: 'Exclude',
      reasonField: 'Reason',
    } : {
      title: 'Include ' + name + ' again?',
      body: [h('p', {}, 'Nightly runs and "refresh all" refresh ' + name + ' again, and it can be refreshed or reset by hand.')],
      ok: 'Include',
    });
    if (!answer) return;
    const region = $('#exclusion-error');
    if (region) fill(region);
    try {
      await api('POST', 'tenants/' + encodeURIComponent(tenant.id) + '/' + (exclude ? 'exclude' : 'include'),
        exclude && answer.reason ? { reason: answer.reason } : undefined);
      announce(name + (exclude ? ' is excluded.' : ' is included again.'));
    } catch (e) {
      if (e.status === 401) return;
      announce('The exclusion of ' + name + ' was not changed: ' + e.message);
      const again = $('#exclusion-error');
      if (again) fill(again, errorNotice(e));
      return;
    }
    reload();
  }

  // exclusionText says who excluded (or included) a tenant, when and why.
  function exclusionText(t) {
    if (!t.excluded && !t.exclusionBy) return 'included';
    const parts = [t.excluded ? 'excluded' : 'included again'];
    if (t.exclusionBy) parts.push(' by ', h('span', { class: 'mono' }, t.exclusionBy));
    if (validTime(t.exclusionAt)) parts.push(' ', when(t.exclusionAt));
    if (t.excluded && t.exclusionReason) parts.push(h('span', { class: 'sub', id: 'exclusion-reason' }, 'Reason: ' + t.exclusionReason));
    return parts;
  }

  async function requestRefreshAll() {
    const n = app.listing ? app.listing.summary.total : 0;
    const ok = await confirmDialog({
      title: 'Refresh the CPV permissions of every tenant?',
      body: [h('p', {}, 'Every tenant that is not excluded and whose GDAP relationship is active' + (n ? ' (' + plural(n, 'tenant') + ' are listed)' : '') + ' gets a refresh. The run\'s progress shows on the tenants page.')],
      ok: 'Refresh all',
    });
    if (!ok) return;
    try {
      const res = await api('POST', 'refresh');
      app.requests.unshift({ requestId: res.requestId, runId: res.runId, op: 'refresh all', tenantId: '', tenantName: 'every tenant', state: 'enqueued', at: new Date() });
      app.run = { id: res.runId, kind: 'bulk', progress: null };
      announce('Refresh of every tenant requested as run ' + res.runId + '.');
    } catch (e) {
      if (e.status === 401) return;
      app.requests.unshift({ requestId: '', op: 'refresh all', tenantId: '', tenantName: 'every tenant', state: 'error', error: e.message, at: new Date() });
      announce('Refresh of every tenant not started: ' + e.message);
    }
    reload();
  }

  // RETRY_WATCH is how long a request that failed with a retryable error is
  // still watched: the worker tries it again after a backoff.
  const RETRY_WATCH = 10 * 60 * 1000;

  // watched says whether a tenant request may still change: pending until
  // a worker picks it up (the tenant's status row names its request id),
  // then running, then final; a retryable failure is tried again.
  function watched(r) {
    if (!r.tenantId) return false;
    if (r.state === 'pending' || r.state === 'running') return true;
    return r.state === 'failed' && r.retryable && Date.now() - r.at.getTime() < RETRY_WATCH;
  }

  // settleRequests updates the watched requests from the tenants list (or
  // one tenant's detail) and fetches the result of those that finished.
  async function settleRequests(statusOf) {
    for (const req of app.requests.filter(watched)) {
      const st = statusOf(req.tenantId);
      if (!st || st.requestId !== req.requestId) continue; // not picked up yet
      const state = st.state === 'running' ? 'running' : st.state;
      const attempt = st.lastAttempt || '';
      if (state === req.state && attempt === req.attempt) continue;
      req.state = state;
      req.attempt = attempt;
      req.retryable = state === 'failed' && !!st.errorClass && st.errorClass !== 'permanent';
      const verb = req.op === 'reset' ? 'Reset' : 'Refresh';
      if (!FINAL.has(state)) {
        announce(verb + ' of ' + req.tenantName + ' is running.');
        continue;
      }
      try {
        req.detail = await api('GET', 'tenants/' + encodeURIComponent(req.tenantId) + '?limit=5');
      } catch (e) {
        if (e.status === 401) return;
      }
      announce(verb + ' of ' + req.tenantName + ': ' + state + '. ' + appliedSummary(req));
    }
  }

  function openRequests() {
    return app.requests.some(watched);
  }

  // historyFor finds the attempt that answered req in a tenant's detail.
  function historyFor(req, detail) {
    if (!detail || !detail.history) return null;
    return detail.history.find((x) => x.requestId === req.requestId) || null;
  }

  function resultOf(entry) {
    if (!entry || !entry.detail || typeof entry.detail !== 'object') return null;
    return entry.detail;
  }

  function appliedSummary(req) {
    const res = resultOf(historyFor(req, req.detail));
    if (!res) return req.state === 'failed' ? '' : 'Nothing needed to change.';
    const a = (res.appRoles && res.appRoles.applied) || 0;
    const d = (res.delegated && res.delegated.applied) || 0;
    if (!a && !d) return req.state === 'failed' ? 'Nothing was applied.' : 'Nothing needed to change.';
    return plural(a, 'application permission') + ' and ' + plural(d, 'delegated permission') + ' applied.';
  }

  function renderRequests() {
    if (!app.requests.length) return null;
    const done = app.requests.filter((r) => !watched(r)).length;
    return h('section', { class: 'panel', 'aria-labelledby': 'requests-title', id: 'requests' },
      h('div', { class: 'panel-head' },
        h('h2', { id: 'requests-title' }, 'Your requests'),
        done ? h('button', { type: 'button', class: 'button secondary small', id: 'clear-requests', dataset: { focus: 'clear-requests' },
          onclick: () => {
            app.requests = app.requests.filter(watched);
            drawRequests();
            announce('Finished requests cleared.');
            const h1 = $('#main h1');
            if (h1) h1.focus();
          } }, 'Clear finished') : null),
      h('ul', { class: 'requests' }, app.requests.map((r) => renderRequest(r, true))));
  }

  function renderRequest(req, withPermissions) {
    const verb = req.op === 'reset' ? 'Reset' : req.op === 'refresh all' ? 'Refresh all' : 'Refresh';
    const target = req.tenantId ? h('a', { href: '#/tenants/' + req.tenantId }, req.tenantName) : req.tenantName;
    const stateLabel = req.state === 'error' ? 'not sent' : req.state;
    const li = h('li', { class: 'request', dataset: { request: req.requestId || '', tenant: req.tenantId || '' } },
      h('div', { class: 'request-head' },
        badge(req.state === 'error' ? 'failed' : req.state, stateLabel),
        h('span', {}, verb, ' of ', target),
        h('span', { class: 'muted small' }, 'requested ', when(req.at.toISOString()))));
    if (req.error) li.append(h('p', { class: 'err' }, req.error));
    if (req.runId) li.append(h('p', { class: 'small muted' }, 'Run ', h('code', {}, req.runId), ': progress shows above while it runs.'));
    if (req.state === 'pending') li.append(h('p', { class: 'small muted' }, 'Waiting for a worker to pick the request up…'));
    if (req.state === 'running') li.append(h('p', { class: 'small muted' }, 'A worker is applying the permissions…'));
    if (FINAL.has(req.state) && req.detail) {
      const entry = historyFor(req, req.detail);
      const res = resultOf(entry);
      const st = req.detail.status || {};
      if (req.state === 'failed' && st.lastError) li.append(errorBlock(st.lastError, st.advice));
      if (watched(req)) li.append(h('p', { class: 'small muted' }, 'The error may be temporary: a worker tries again after a pause, and this page keeps watching.'));
      if (!res) {
        if (req.state !== 'failed') li.append(h('p', { class: 'small' }, 'Nothing needed to change: the tenant already held every permission it can have.'));
      } else if (withPermissions) li.append(permissionsSummary(res, 'h3'));
      else li.append(h('p', { class: 'small' }, appliedSummary(req), ' The permissions are listed under "Permissions of the latest attempt".'));
    }
    return li;
  }

  // errorBlock shows an error and the advice on what to do. Compact (in
  // the tenants table) puts the advice first and folds a long error.
  function errorBlock(error, advice, compact) {
    const adv = advice ? h('div', { class: 'advice' }, h('strong', {}, 'What to do: '), advice) : null;
    if (!compact || error.length <= 140) {
      return h('div', {}, h('div', { class: 'err' }, error), adv);
    }
    return h('div', {}, adv,
      h('details', { class: 'err-details' },
        h('summary', {}, h('span', { class: 'err' }, error.slice(0, 100).trimEnd() + '…'), ' ', h('span', { class: 'small' }, 'full error')),
        h('div', { class: 'err' }, error)));
  }

  // ---------- permissions of a result ----------

  const APP_KINDS = new Set(['addAppRole', 'removeAppRole']);
  const DELEGATED_KINDS = new Set(['createGrant', 'updateGrant', 'deleteGrant']);

  function permItem(d) {
    const li = permItemInner(d);
    li.dataset.perm = [d.kind, d.resourceName || d.resourceAppId || '', d.permission || ''].join('|');
    return li;
  }

  function permItemInner(d) {
    const res = d.resourceName || d.resourceAppId || '';
    if (DELEGATED_KINDS.has(d.kind)) {
      const scopes = (d.permission || '').split(/\s+/).filter(Boolean);
      return h('li', {},
        h('span', { class: 'res' }, res + ': '),
        d.kind === 'deleteGrant' ? 'duplicate grant removed' : (d.kind === 'updateGrant' ? 'grant updated' : 'grant created'),
        scopes.length ? h('details', { class: 'scope-list' },
          h('summary', {}, d.kind === 'createGrant' ? plural(scopes.length, 'scope') : 'now ' + plural(scopes.length, 'scope') + ' in all'),
          h('span', { class: 'scopes' }, scopes.map((s) => h('code', {}, s)))) : null,
        d.message ? h('div', { class: 'err' }, d.message) : null);
    }
    if (d.kind === 'createServicePrincipal') {
      return h('li', {}, h('span', { class: 'res' }, res + ': '), 'service principal created',
        d.message ? h('div', { class: 'err' }, d.message) : null);
    }
    if (d.kind === 'deleteServicePrincipal') {
      return h('li', {}, 'application service principal deleted (reset)', d.message ? h('div', { class: 'err' }, d.message) : null);
    }
    return h('li', {}, h('span', { class: 'res' }, res + ': '), h('code', {}, d.permission || ''),
      d.kind === 'removeAppRole' ? ' (removed)' : null,
      d.message ? h('div', { class: 'err' }, d.message) : null);
  }

  function list(items, empty, group) {
    if (!items.length) return empty ? h('p', { class: 'muted small', dataset: { group } }, empty) : null;
    return h('ul', { class: 'perm-list', dataset: { group } }, items.map(permItem));
  }

  // permissionsSummary shows which application and delegated permissions a
  // refresh applied, which were already there and which could not be.
  function permissionsSummary(res, hTag) {
    const changes = res.changes || [];
    const by = (kinds, outcomes) => changes.filter((c) => kinds.has(c.kind) && outcomes.includes(c.outcome));
    const other = changes.filter((c) => !APP_KINDS.has(c.kind) && !DELEGATED_KINDS.has(c.kind));
    const ar = res.appRoles || {};
    const dl = res.delegated || {};
    const notes = [];
    if (res.consented) notes.push('The application was consented through Partner Center.');
    if (res.noChange) notes.push('Nothing needed to change.');
    return h('div', { class: 'perm-summary' },
      notes.length ? h('p', { class: 'small' }, notes.join(' ')) : null,
      h('div', { class: 'perm-groups' },
        h('section', { class: 'perm-group', 'aria-label': 'Applied' },
          h(hTag, {}, 'Applied'),
          h('p', { class: 'small muted' }, plural(ar.applied || 0, 'application permission') + ', ' + plural(dl.applied || 0, 'delegated permission') + ' (scopes)'),
          h('h4', { class: 'small' }, 'Application permissions'),
          list(by(APP_KINDS, ['applied']), 'None.', 'applied-app'),
          h('h4', { class: 'small' }, 'Delegated permissions'),
          list(by(DELEGATED_KINDS, ['applied']), 'None.', 'applied-delegated'),
          other.filter((c) => c.outcome === 'applied').length ? [h('h4', { class: 'small' }, 'Service principals'), list(other.filter((c) => c.outcome === 'applied'), '', 'applied-other')] : null),
        h('section', { class: 'perm-group', 'aria-label': 'Already there' },
          h(hTag, {}, 'Already there'),
          h('p', { class: 'small' }, plural(ar.alreadyPresent || 0, 'application permission') + ' of ' + (ar.wanted || 0)),
          h('p', { class: 'small' }, plural(dl.alreadyPresent || 0, 'delegated permission') + ' of ' + (dl.wanted || 0)),
          by(new Set([...APP_KINDS, ...DELEGATED_KINDS, 'createServicePrincipal']), ['alreadyPresent']).length
            ? list(by(new Set([...APP_KINDS, ...DELEGATED_KINDS, 'createServicePrincipal']), ['alreadyPresent']), '', 'already') : null),
        h('section', { class: 'perm-group', 'aria-label': 'Could not be applied' },
          h(hTag, {}, 'Could not be applied'),
          h('p', { class: 'small' }, plural((ar.unavailable || 0) + (ar.failed || 0), 'application permission') + ', ' +
            plural((dl.unavailable || 0) + (dl.failed || 0), 'delegated permission')),
          (res.notices || []).length ? h('ul', { class: 'notices' }, res.notices.map((n) => h('li', {}, n))) : null,
          list(changes.filter((c) => c.outcome === 'unavailable' || c.outcome === 'failed' || c.outcome === 'planned'), (res.notices || []).length ? '' : 'None.', 'not-applied'))));
  }

  // ---------- tenants page ----------

  function statusKey(t) {
    return (t.status && t.status.state) || 'never';
  }

  // listQuery is the api/tenants query of the list's filters, sort and page.
  function listQuery() {
    const l = app.list;
    const q = new URLSearchParams({ limit: String(PAGE_SIZE), sort: l.sort, dir: l.dir > 0 ? 'asc' : 'desc' });
    if (l.filter !== 'all') q.set('state', l.filter);
    if (l.exclusion !== 'all') q.set('excluded', String(l.exclusion === 'excluded'));
    if (l.manifest !== 'all') q.set('manifest', l.manifest);
    if (l.profile) q.set('profile', l.profile);
    if (l.search) q.set('q', l.search);
    if (l.tokens[l.page]) q.set('continuation', l.tokens[l.page]);
    return 'tenants?' + q.toString();
  }

  // relist goes back to the first page after a change of filter or sort
  // and fetches it at once.
  function relist() {
    app.list.page = 0;
    app.list.tokens = [''];
    if (app.reload) app.reload();
  }

  function renderTenantsPage() {
    const token = app.renderToken;
    const search = h('input', { type: 'search', id: 'tenant-search', value: app.list.search, placeholder: 'Name, domain, tenant id, error…', 'aria-controls': 'tenant-results', autocomplete: 'off' });
    let typing = 0;
    search.addEventListener('input', () => {
      clearTimeout(typing);
      typing = setTimeout(() => { app.list.search = search.value.trim(); relist(); }, 250);
    });
    const filter = h('select', { id: 'status-filter', 'aria-controls': 'tenant-results' },
      [['all', 'All statuses'], ['succeeded', 'Succeeded'], ['partial', 'Partial'], ['failed', 'Failed'], ['running', 'Running'], ['never', 'Never refreshed']]
        .map(([v, label]) => h('option', { value: v, selected: app.list.filter === v }, label)));
    filter.addEventListener('change', () => { app.list.filter = filter.value; relist(); });
    const exclusion = h('select', { id: 'exclusion-filter', 'aria-controls': 'tenant-results' },
      [['all', 'All tenants'], ['included', 'Included'], ['excluded', 'Excluded']]
        .map(([v, label]) => h('option', { value: v, selected: app.list.exclusion === v }, label)));
    exclusion.addEventListener('change', () => { app.list.exclusion = exclusion.value; relist(); });
    const manifest = h('select', { id: 'manifest-filter', 'aria-controls': 'tenant-results' },
      [['all', 'Any manifest'], ['older', 'Older than current'], ['current', 'Current']]
        .map(([v, label]) => h('option', { value: v, selected: app.list.manifest === v }, label)));
    manifest.addEventListener('change', () => { app.list.manifest = manifest.value; relist(); });
    const profile = h('select', { id: 'profile-filter', 'aria-controls': 'tenant-results' });
    profileOptions(profile, []);
    profile.addEventListener('change', () => { app.list.profile = profile.value; relist(); });

    page('Tenants',
      h('div', { class: 'page-head' },
        h('div', {},
          h('h1', {}, 'Tenants'),
          h('p', { class: 'sub' }, 'The SAM application\'s consent and permissions in every customer tenant.')),
        canOperate() ? h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'button', id: 'refresh-all', onclick: requestRefreshAll }, 'Refresh all')) : null),
      h('div', { id: 'run-region' }),
      h('div', { id: 'requests-region' }),
      h('section', { class: 'panel', 'aria-labelledby': 'list-title' },
        h('h2', { id: 'list-title', class: 'visually-hidden' }, 'Tenant list'),
        h('div', { class: 'toolbar', role: 'search' },
          h('div', { class: 'field' }, h('label', { for: 'tenant-search' }, 'Search'), search),
          h('div', { class: 'field' }, h('label', { for: 'status-filter' }, 'Status'), filter),
          h('div', { class: 'field' }, h('label', { for: 'exclusion-filter' }, 'Runs'), exclusion),
          h('div', { class: 'field' }, h('label', { for: 'manifest-filter' }, 'Manifest'), manifest),
          h('div', { class: 'field' }, h('label', { for: 'profile-filter' }, 'Profile'), profile)),
        h('div', { id: 'tenant-results' }, h('p', { class: 'empty' }, 'Loading tenants…'))));
    drawRequests();
    drawRun();
    app.reload = () => { stopPolling(); keepFocus(() => { drawRequests(); drawRun(); drawTable(); }); loadTenants(token); };
    loadTenants(token);
  }

  // profileOptions fills the profile filter: every profile tenants are
  // assigned to (from the summary), and the one selected.
  function profileOptions(select, names) {
    const all = [...new Set([...names, app.list.profile].filter((n) => n && n !== '(none)'))].sort();
    const want = [['', 'All profiles'], ['(none)', 'No profile (full set)'], ...all.map((n) => [n, n])];
    const have = [...select.options].map((o) => o.value);
    if (have.join('\n') === want.map(([v]) => v).join('\n')) return;
    fill(select, want.map(([v, label]) => h('option', { value: v, selected: app.list.profile === v }, label)));
  }

  async function loadTenants(token) {
    let delay = 15000;
    try {
      const query = listQuery();
      // The run's progress reads more than a page of tenants: the rows are drawn without waiting for it.
      const run = loadRun().then(() => null, (e) => e);
      const listing = await api('GET', query);
      if (token !== app.renderToken || query !== listQuery()) return;
      app.listing = listing;
      app.tenants = listing.items || [];
      app.tenantsLoaded = true;
      keepFocus(drawTable);
      const byId = new Map(app.tenants.map((t) => [t.id, t.status || null]));
      // Requests for tenants on other pages are followed one by one.
      for (const req of app.requests.filter(watched)) {
        if (byId.has(req.tenantId)) continue;
        try {
          const t = await api('GET', 'tenants/' + encodeURIComponent(req.tenantId) + '?limit=1');
          byId.set(req.tenantId, t.status || null);
        } catch (e) {
          if (e.status === 401) throw e;
        }
      }
      await settleRequests((id) => (byId.has(id) ? byId.get(id) : undefined));
      const runError = await run;
      if (runError) throw runError;
      if (token !== app.renderToken) return;
      keepFocus(() => { drawTable(); drawRequests(); drawRun(); });
      // Poll faster while something is moving.
      if (openRequests()) delay = 1500;
      else if (runActive() || (listing.summary.byStatus.running || 0) > 0) delay = 3000;
    } catch (e) {
      if (e.status === 401 || token !== app.renderToken) return;
      const region = $('#tenant-results');
      if (region) fill(region, errorNotice(e));
      delay = 5000;
    }
    schedule(() => loadTenants(token), delay);
  }

  function runActive() {
    const r = app.run;
    if (!r) return false;
    if (r.skipped) return false;
    if (!validTime(r.finished)) return true;
    return !!(r.progress && r.progress.pending > 0);
  }

  // loadRun finds the run to show: the newest run, if it is still
  // enqueueing or has tenants pending, or the bulk run started here.
  async function loadRun() {
    try {
      let id = app.run && app.run.id;
      if (!id || !runActive()) {
        const runs = await api('GET', 'runs?limit=5');
        const newest = (runs || []).find((r) => !r.skipped);
        id = newest ? newest.id : (app.run && app.run.id);
      }
      if (!id) { app.run = null; return; }
      app.run = await api('GET', 'runs/' + encodeURIComponent(id));
      app.runError = '';
    } catch (e) {
      if (e.status === 401) throw e;
      app.runError = e.message;
    }
  }

  function drawRun() {
    const region = $('#run-region');
    if (!region) return;
    const r = app.run;
    if (!r) { fill(region); return; }
    const p = r.progress || { enqueued: r.enqueued || 0, succeeded: 0, partial: 0, failed: 0, running: 0, pending: r.enqueued || 0 };
    const done = p.succeeded + p.partial + p.failed;
    const active = runActive();
    const label = (r.kind === 'nightly' ? 'Nightly run' : 'Refresh of every tenant');
    const enqueueing = !validTime(r.finished);
    fill(region, h('section', { class: 'panel run', 'aria-labelledby': 'run-title', id: 'run-progress' },
      h('h2', { id: 'run-title' }, active ? label + ' in progress' : 'Last run: ' + label.toLowerCase()),
      h('p', { class: 'small muted' }, h('code', {}, r.id), ' · started ', when(r.started),
        enqueueing ? ' · still enqueueing (' + (r.enqueued || 0) + ' so far)' : ' · ' + plural(p.enqueued, 'tenant') + ' enqueued',
        !active && validTime(r.finished) ? [' · enqueued ', when(r.finished)] : null),
      h('label', { for: 'run-bar', class: 'visually-hidden' }, 'Run progress'),
      h('progress', { id: 'run-bar', max: String(Math.max(p.enqueued, 1)), value: String(Math.min(done, Math.max(p.enqueued, 1))) }, done + ' of ' + p.enqueued),
      h('div', { class: 'counts', 'aria-live': active ? 'polite' : 'off' },
        h('span', { dataset: { count: 'succeeded' } }, badge('succeeded', 'succeeded'), ' ', p.succeeded),
        h('span', { dataset: { count: 'partial' } }, badge('partial', 'partial'), ' ', p.partial),
        h('span', { dataset: { count: 'failed' } }, badge('failed', 'failed'), ' ', p.failed),
        h('span', { dataset: { count: 'pending' } }, badge('pending', 'pending'), ' ', p.pending, p.running ? ' (' + p.running + ' running)' : '')),
      app.runError ? h('p', { class: 'err' }, app.runError) : null));
  }

  function drawRequests() {
    const region = $('#requests-region');
    if (region) fill(region, renderRequests());
  }

  function sortHeader(key, label) {
    const active = app.list.sort === key;
    const th = h('th', { scope: 'col', 'aria-sort': active ? (app.list.dir > 0 ? 'ascending' : 'descending') : 'none' },
      h('button', { type: 'button', class: 'linklike sort', dataset: { focus: 'sort:' + key },
        onclick: () => {
          if (app.list.sort === key) app.list.dir = -app.list.dir;
          else { app.list.sort = key; app.list.dir = key === 'last' ? -1 : 1; }
          relist();
        } },
      label, h('span', { class: 'arrow', 'aria-hidden': 'true' }, active ? (app.list.dir > 0 ? '▲' : '▼') : '')));
    return th;
  }

  function pendingFor(id) {
    return app.requests.find((r) => r.tenantId === id && (r.state === 'pending' || r.state === 'running'));
  }

  function drawTable() {
    const region = $('#tenant-results');
    if (!region || !app.tenantsLoaded) return;
    const shown = app.tenants;
    const sum = app.listing.summary;
    const counts = sum.byStatus || {};
    const matched = app.listing.matched;
    const pages = Math.max(1, Math.ceil(matched / PAGE_SIZE));

    const pf = $('#profile-filter');
    if (pf) profileOptions(pf, Object.keys(sum.byProfile || {}));
    const summary = h('ul', { class: 'summary', 'aria-label': 'Tenants by status' },
      h('li', {}, h('strong', {}, sum.total), 'tenants'),
      ['succeeded', 'partial', 'failed', 'running', 'never'].filter((s) => counts[s]).map((s) =>
        h('li', {}, h('strong', {}, counts[s]), badge(s, s === 'never' ? 'never refreshed' : s))),
      sum.excluded ? h('li', {}, h('strong', {}, sum.excluded), badge('excluded', 'excluded')) : null,
      sum.manifestVersion ? h('li', { id: 'older-count', title: 'Current manifest version ' + sum.manifestVersion },
        h('strong', {}, sum.older || 0),
        sum.older && app.list.manifest !== 'older' ? h('button', { type: 'button', class: 'linklike', id: 'show-older', dataset: { focus: 'show-older' },
          onclick: () => { app.list.manifest = 'older'; const mf = $('#manifest-filter'); if (mf) mf.value = 'older'; relist(); } }, 'on an older manifest')
          : 'on an older manifest') : null);

    if (!sum.total) {
      fill(region, summary, h('p', { class: 'empty' }, 'No tenants yet. Tenants appear when the dispatcher reads the partner\'s GDAP relationships (at the next run) or when a refresh is requested.'));
      return;
    }
    const table = h('table', { id: 'tenants-table' },
      h('caption', { class: 'visually-hidden' }, 'Tenants, ' + shown.length + ' of ' + matched + ' shown, sorted by ' + app.list.sort),
      h('thead', {}, h('tr', {},
        sortHeader('name', 'Tenant'),
        sortHeader('status', 'Status'),
        h('th', { scope: 'col' }, 'Access'),
        h('th', { scope: 'col' }, 'Profile'),
        sortHeader('last', 'Last refresh'),
        sortHeader('permissions', 'In place'),
        sortHeader('notices', 'Notices'),
        sortHeader('error', 'Last error'),
        h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
      h('tbody', {}, shown.map(tenantRow)));
    const next = app.listing.continuation;
    const pager = app.list.page > 0 || next ? h('nav', { class: 'pager', 'aria-label': 'Pages' },
      h('button', { type: 'button', class: 'button secondary small', disabled: app.list.page === 0, dataset: { focus: 'page:prev' },
        onclick: () => { app.list.page--; if (app.reload) app.reload(); } }, 'Previous'),
      h('span', {}, 'Page ' + (app.list.page + 1) + ' of ' + pages + ' · ' + matched + ' match'),
      h('button', { type: 'button', class: 'button secondary small', disabled: !next, dataset: { focus: 'page:next' },
        onclick: () => { app.list.tokens[app.list.page + 1] = next; app.list.page++; if (app.reload) app.reload(); } }, 'Next'))
      : h('p', { class: 'small muted pager' }, matched + ' of ' + sum.total + ' shown');
    fill(region, summary, shown.length ? h('div', { class: 'table-wrap' }, table) : h('p', { class: 'empty' }, 'No tenant matches the search and filter.'), pager);
  }

  // inPlace says how many of the manifest's permissions the tenant holds.
  function inPlace(st) {
    if (!st || (st.state === 'failed' && !st.appRolesApplied && !st.delegatedApplied) || st.state === 'running' && !st.appRolesTotal) {
      return h('span', { class: 'muted' }, '—');
    }
    return [st.appRolesApplied + ' / ' + st.appRolesTotal + ' application', h('br'), st.delegatedApplied + ' / ' + st.delegatedTotal + ' delegated'];
  }

  function tenantRow(t) {
    const st = t.status;
    const pend = pendingFor(t.id);
    const name = tenantName(t);
    let statusCell;
    if (pend && pend.state === 'pending') statusCell = badge('pending', 'pending');
    else statusCell = badge(statusKey(t));
    const sub = [];
    if (t.defaultDomain && t.displayName) sub.push(t.defaultDomain);
    if (t.excluded) sub.push('excluded');
    if (t.relationshipStatus && t.relationshipStatus !== 'active') sub.push('GDAP ' + t.relationshipStatus);
    return h('tr', { dataset: { tenant: t.id, state: pend ? pend.state : statusKey(t) } },
      h('td', { class: 'tenant-cell' },
        h('a', { href: '#/tenants/' + t.id }, name),
        sub.length ? h('span', { class: 'sub' }, sub.join(' · ')) : null,
        h('span', { class: 'sub mono' }, t.id)),
      h('td', {}, statusCell, t.excluded ? [' ', badge('excluded', 'excluded')] : null, st && st.attempts > 1 ? h('span', { class: 'sub' }, st.attempts + ' failed attempts') : null,
        t.outdated ? h('span', { class: 'sub', dataset: { outdated: 'true' } }, 'older manifest') : null),
      h('td', { class: 'access-cell', dataset: { access: (t.access && t.access.status) || 'unknown' } }, accessBadge(t.access)),
      h('td', { dataset: { profile: t.profile || '' } }, t.profile ? h('code', {}, t.profile) : h('span', { class: 'muted' }, 'full set')),
      h('td', { class: 'nowrap' }, when(st && st.lastAttempt), st && st.lastSuccess && st.state === 'failed' ? h('span', { class: 'sub' }, 'last success ', when(st.lastSuccess)) : null),
      h('td', { class: 'nowrap small' }, inPlace(st)),
      h('td', {}, st && st.notices && st.notices.length ? h('ul', { class: 'notices' }, st.notices.map((n) => h('li', {}, n))) : h('span', { class: 'muted' }, '—')),
      h('td', {}, st && st.lastError ? errorBlock(st.lastError, st.advice, true) : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'actions-cell' }, canOperate() ? [
        h('button', { type: 'button', class: 'button small', dataset: { focus: 'refresh:' + t.id, action: 'refresh' }, 'aria-label': 'Refresh ' + name,
          disabled: !!t.excluded, title: t.excluded ? 'Excluded: include it again to refresh it' : null,
          onclick: () => requestTenantOp(t, 'refresh') }, 'Refresh'),
        h('button', { type: 'button', class: 'button secondary small', dataset: { focus: 'reset:' + t.id, action: 'reset' }, 'aria-label': 'Reset ' + name,
          disabled: !!t.excluded, title: t.excluded ? 'Excluded: include it again to reset it' : null,
          onclick: () => requestTenantOp(t, 'reset') }, 'Reset')] : null));
  }

  // ---------- tenant page ----------

  function renderTenantPage(id) {
    const token = app.renderToken;
    page('Tenant',
      h('p', { class: 'small' }, h('a', { href: '#/tenants' }, '← All tenants')),
      h('h1', {}, 'Tenant'),
      h('div', { id: 'tenant-region' }, h('p', { class: 'empty' }, 'Loading…')));
    app.reload = () => { stopPolling(); loadTenant(id, token, false); };
    loadTenant(id, token, true);
  }

  async function loadTenant(id, token, first) {
    let delay = 15000;
    try {
      const [t, act, plan, profiles] = await Promise.all([
        api('GET', 'tenants/' + encodeURIComponent(id) + '?limit=25'),
        api('GET', 'activity?limit=10&tenant=' + encodeURIComponent(id)).catch((e) => { if (e.status === 401) throw e; return { error: e.message }; }),
        api('GET', 'tenants/' + encodeURIComponent(id) + '/plan').catch((e) => { if (e.status === 401) throw e; return e.status === 404 ? null : { error: e.message }; }),
        canAdminister() ? api('GET', 'profiles').catch((e) => { if (e.status === 401) throw e; return null; }) : null]);
      t.activity = act;
      t.plan = plan;
      t.profiles = profiles ? profiles.profiles.map((p) => p.name) : null;
      if (token !== app.renderToken) return;
      await settleRequests((tid) => (tid === id ? (t.status || null) : undefined));
      if (token !== app.renderToken) return;
      keepFocus(() => drawTenant(t, first));
      if (openRequests() || (t.status && t.status.state === 'running') || previewPending(t)) delay = 1500;
    } catch (e) {
      if (e.status === 401 || token !== app.renderToken) return;
      const region = $('#tenant-region');
      if (region) fill(region, e.status === 404 ? h('p', { class: 'notice' }, 'No such tenant: it has not been discovered or refreshed yet.') : errorNotice(e));
      if (e.status === 404) return;
      delay = 5000;
    }
    schedule(() => loadTenant(id, token, false), delay);
  }

  function drawTenant(t, first) {
    const region = $('#tenant-region');
    if (!region) return;
    const name = tenantName(t);
    const h1 = $('#main h1');
    if (h1) h1.textContent = name;
    document.title = name + ' · cpvrefresh';
    const st = t.status;
    const pend = pendingFor(t.id);
    const latest = (t.history || [])[0];
    const latestResult = resultOf(latest);
    const mine = app.requests.filter((r) => r.tenantId === t.id);

    fill(region,
      h('div', { class: 'page-head' },
        h('p', { class: 'sub' }, t.defaultDomain ? t.defaultDomain + ' · ' : '', h('span', { class: 'mono' }, t.id)),
        canOperate() || canAdminister() ? h('div', { class: 'actions' },
          canOperate() ? h('button', { type: 'button', class: 'button', id: 'tenant-refresh', dataset: { focus: 'tenant-refresh' }, disabled: !!t.excluded,
            'aria-describedby': t.excluded ? 'excluded-note' : null, onclick: () => requestTenantOp(t, 'refresh') }, 'Refresh') : null,
          canOperate() ? h('button', { type: 'button', class: 'button secondary', id: 'tenant-reset', dataset: { focus: 'tenant-reset' }, disabled: !!t.excluded,
            'aria-describedby': t.excluded ? 'excluded-note' : null, onclick: () => requestTenantOp(t, 'reset') }, 'Reset') : null,
          canAdminister() && t.known && !t.excluded ? h('button', { type: 'button', class: 'button secondary', id: 'tenant-exclude', dataset: { focus: 'tenant-exclusion' },
            onclick: () => requestExclusion(t, true) }, 'Exclude') : null,
          canAdminister() && t.known && t.excluded ? h('button', { type: 'button', class: 'button', id: 'tenant-include', dataset: { focus: 'tenant-exclusion' },
            onclick: () => requestExclusion(t, false) }, 'Include') : null,
          canOperate() ? h('button', { type: 'button', class: 'button secondary', id: 'tenant-preview', dataset: { focus: 'tenant-preview' },
            onclick: () => requestPreview(t) }, 'Preview changes') : null) : null),
      h('div', { id: 'exclusion-error' }),
      t.excluded ? h('p', { class: 'notice warn', id: 'excluded-note' }, 'This tenant is excluded: runs leave it out and refreshes and resets are refused. Include it again to refresh it.') : null,
      mine.length ? h('section', { class: 'panel', 'aria-labelledby': 'requests-title', id: 'requests' },
        h('h2', { id: 'requests-title' }, 'Your requests'),
        h('ul', { class: 'requests' }, mine.map((r) => renderRequest(r, false)))) : null,
      h('div', { class: 'grid' },
        h('section', { class: 'panel', 'aria-labelledby': 'status-title', id: 'tenant-status' },
          h('h2', { id: 'status-title' }, 'Status'),
          h('dl', { class: 'kv' },
            h('dt', {}, 'Last status'), h('dd', {}, pend && pend.state === 'pending' ? badge('pending') : badge(st && st.state)),
            h('dt', {}, 'Last attempt'), h('dd', {}, when(st && st.lastAttempt)),
            h('dt', {}, 'Last success'), h('dd', {}, when(st && st.lastSuccess)),
            h('dt', {}, 'Permissions in place'), h('dd', {}, inPlace(st)),
            h('dt', {}, 'Manifest'), h('dd', { id: 'tenant-manifest' }, st && st.manifestVersion ? h('code', {}, st.manifestVersion) : '—',
              t.outdated ? h('span', { class: 'sub', dataset: { outdated: 'true' } }, 'older than current (', h('code', {}, t.currentVersion), '): the next refresh applies it') : null),
            h('dt', {}, 'Last request'), h('dd', {}, st && st.op ? st.op + ' (' + (st.reason || 'unknown') + ')' + (st.runId ? ', run ' + st.runId : '') : '—'),
            h('dt', {}, 'Duration'), h('dd', {}, st ? duration(st.durationMs) + (st.roundTrips ? ', ' + plural(st.roundTrips, 'round trip') : '') : '—'),
            st && st.checks ? [h('dt', {}, 'Checks since'), h('dd', {}, plural(st.checks, 'refresh', 'refreshes') + ' found nothing to change since the latest attempt below')] : null)),
        h('section', { class: 'panel', 'aria-labelledby': 'tenant-info-title' },
          h('h2', { id: 'tenant-info-title' }, 'Tenant'),
          h('dl', { class: 'kv' },
            h('dt', {}, 'Display name'), h('dd', {}, t.displayName || '—'),
            h('dt', {}, 'Default domain'), h('dd', {}, t.defaultDomain || '—'),
            h('dt', {}, 'GDAP relationship'), h('dd', {}, t.relationshipStatus ? t.relationshipStatus : '—', t.relationshipId ? h('span', { class: 'sub mono' }, t.relationshipId) : null),
            h('dt', {}, 'Nightly runs'), h('dd', { id: 'tenant-exclusion' }, exclusionText(t)),
            h('dt', {}, 'Profile'), h('dd', { id: 'tenant-profile' }, profileField(t)),
            h('dt', {}, 'First seen'), h('dd', {}, when(t.firstSeen, 'unknown'))))),
      planPanel(t),
      st && (st.lastError || (st.notices && st.notices.length)) ? h('section', { class: 'panel', 'aria-labelledby': 'problems-title' },
        h('h2', { id: 'problems-title' }, 'Notices and errors'),
        st.notices && st.notices.length ? h('ul', { class: 'notices' }, st.notices.map((n) => h('li', {}, n))) : null,
        st.lastError ? errorBlock(st.lastError, st.advice) : null) : null,
      h('section', { class: 'panel', 'aria-labelledby': 'latest-title', id: 'latest-permissions' },
        h('h2', { id: 'latest-title' }, 'Permissions of the latest attempt'),
        latest ? h('p', { class: 'small muted' }, latest.op || 'refresh', ' ', when(latest.at), ' · ', badge(latest.state)) : null,
        latestResult ? permissionsSummary(latestResult, 'h3') : h('p', { class: 'empty' }, latest ? 'This attempt recorded no detail.' : 'No attempt recorded yet.')),
      window.cpvCharts ? window.cpvCharts.timeline(t.history || [], chartsUI()) : null,
      h('section', { class: 'panel', 'aria-labelledby': 'history-title', id: 'history' },
        h('h2', { id: 'history-title' }, 'History'),
        (t.history || []).length ? historyTable(t.history) : h('p', { class: 'empty' }, 'No attempts yet.')),
      h('section', { class: 'panel', 'aria-labelledby': 'tenant-activity-title', id: 'tenant-activity' },
        h('h2', { id: 'tenant-activity-title' }, 'Activity'),
        t.activity && t.activity.error ? errorNotice(t.activity.error)
          : t.activity && t.activity.items.length ? activityTable(t.activity.items, false)
            : h('p', { class: 'empty' }, 'Nobody has refreshed or reset this tenant by hand yet.'),
        h('p', { class: 'small' }, h('a', { href: '#/activity' }, 'All activity'))));
    if (first) {
      const hd = $('#main h1');
      if (hd) hd.focus();
    }
  }

  // ---------- preview (dry-run plan) and profile of a tenant ----------

  // requestPreview asks a worker to plan the tenant's next refresh; the
  // plan panel shows it when the worker has stored it.
  async function requestPreview(t) {
    const name = tenantName(t);
    const p = { requestId: '', at: new Date(), error: '' };
    try {
      const res = await api('POST', 'tenants/' + encodeURIComponent(t.id) + '/plan');
      p.requestId = res.requestId;
      announce('Preview of ' + name + ' requested: a worker reads the tenant and plans.');
    } catch (e) {
      if (e.status === 401) return;
      p.error = e.message;
      announce('The preview of ' + name + ' was not requested: ' + e.message);
    }
    app.previews[t.id] = p;
    reload();
  }

  // previewPending says whether the preview asked for here has no plan yet.
  function previewPending(t) {
    const p = app.previews[t.id];
    return !!(p && p.requestId && !(t.plan && t.plan.requestId === p.requestId));
  }

  function planPanel(t) {
    const plan = t.plan && !t.plan.error ? t.plan : null;
    const asked = app.previews[t.id];
    const pending = previewPending(t);
    const res = plan && plan.detail && typeof plan.detail === 'object' ? plan.detail : null;
    const planned = res ? (res.changes || []).filter((c) => c.outcome === 'planned') : [];
    const by = (kinds) => planned.filter((c) => kinds.has(c.kind));
    const other = planned.filter((c) => !APP_KINDS.has(c.kind) && !DELEGATED_KINDS.has(c.kind));
    let body;
    if (asked && asked.error) body = errorNotice(asked.error);
    else if (t.plan && t.plan.error) body = errorNotice(t.plan.error);
    else if (!plan && !pending) body = h('p', { class: 'empty' }, 'No preview yet. ' + (canOperate() ? '"Preview changes" asks a worker to read the tenant and plan its next refresh, without writing anything.' : ''));
    return h('section', { class: 'panel', 'aria-labelledby': 'plan-title', id: 'plan', 'aria-busy': pending ? 'true' : 'false' },
      h('h2', { id: 'plan-title' }, 'Next refresh (preview)'),
      pending ? h('p', { class: 'small muted', id: 'plan-pending', role: 'status' }, 'A worker is reading the tenant and planning (requested ', when(asked.at.toISOString()), ')…') : null,
      body,
      plan ? [
        h('p', { class: 'small muted', id: 'plan-meta' }, 'Planned ', when(plan.at), ' (', exact(plan.at), ')',
          plan.manifestVersion ? [' against manifest ', h('code', {}, plan.manifestVersion)] : null,
          plan.requestedBy ? ' · asked by ' + plan.requestedBy : '',
          pending ? ' · an older preview: the new one is on its way' : ''),
        plan.state === 'failed' ? errorBlock(plan.error || 'The tenant could not be planned.', plan.advice) : null,
        res && (res.notices || []).length ? h('ul', { class: 'notices' }, res.notices.map((n) => h('li', {}, n))) : null,
        plan.state !== 'failed' && !planned.length ? h('p', { id: 'plan-empty' }, 'Nothing to change: the tenant holds everything its manifest asks for.') : null,
        planned.length ? h('div', { class: 'perm-groups' },
          h('section', { class: 'perm-group', 'aria-label': 'Application permissions to add or remove' },
            h('h3', {}, 'Application permissions'), list(by(APP_KINDS), 'None.', 'plan-app')),
          h('section', { class: 'perm-group', 'aria-label': 'Delegated permissions to grant' },
            h('h3', {}, 'Delegated permissions'), list(by(DELEGATED_KINDS), 'None.', 'plan-delegated')),
          other.length ? h('section', { class: 'perm-group', 'aria-label': 'Service principals' },
            h('h3', {}, 'Service principals'), list(other, '', 'plan-other')) : null) : null,
        plan.truncated ? h('p', { class: 'small muted' }, 'The plan was too long to keep whole.') : null] : null);
  }

  // profileField shows the tenant's profile and, for an Admin, a choice
  // of profile to assign (the tenant is then refreshed with it).
  function profileField(t) {
    const shown = t.profile ? h('code', {}, t.profile) : h('span', { class: 'muted' }, 'none (the full set)');
    if (!canAdminister() || !t.profiles) return shown;
    const names = [...new Set([...t.profiles, t.profile].filter(Boolean))].sort();
    const choice = app.profileChoice && app.profileChoice.tenant === t.id ? app.profileChoice.value : (t.profile || '');
    const select = h('select', { id: 'tenant-profile-select', 'aria-label': 'Profile to assign', dataset: { focus: 'tenant-profile-select' } },
      h('option', { value: '', selected: !choice }, 'None (the full set)'),
      names.map((n) => h('option', { value: n, selected: choice === n }, n)));
    select.addEventListener('change', () => { app.profileChoice = { tenant: t.id, value: select.value }; });
    const btn = h('button', { type: 'button', class: 'button secondary small', id: 'tenant-profile-assign', dataset: { focus: 'tenant-profile-assign' } }, 'Assign');
    btn.addEventListener('click', async () => {
      const want = select.value;
      btn.disabled = true;
      try {
        const res = await api('POST', 'tenants/' + encodeURIComponent(t.id) + '/profile', { profile: want });
        app.profileChoice = null;
        app.requests.unshift({ requestId: res.requestId, op: 'refresh', tenantId: t.id, tenantName: tenantName(t), state: 'pending', detail: null, error: '', at: new Date() });
        announce(tenantName(t) + (want ? ' is assigned to ' + want : ' has no profile now') + '; it is refreshed.');
      } catch (e) {
        if (e.status === 401) return;
        announce('The profile was not assigned: ' + e.message);
        btn.disabled = false;
        return;
      }
      reload();
    });
    return [shown, ' ', select, ' ', btn];
  }

  function historyTable(hist) {
    return h('div', { class: 'table-wrap' }, h('table', {},
      h('caption', { class: 'visually-hidden' }, 'Attempts, newest first'),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'When'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Operation'),
        h('th', { scope: 'col' }, 'Applied'), h('th', { scope: 'col' }, 'Duration'), h('th', { scope: 'col' }, 'Error'), h('th', { scope: 'col' }, 'Worker'))),
      h('tbody', {}, hist.map((x) => {
        const res = resultOf(x);
        return h('tr', { dataset: { request: x.requestId || '' } },
          h('td', { class: 'nowrap' }, when(x.at), h('span', { class: 'sub' }, exact(x.at))),
          h('td', {}, badge(x.state)),
          h('td', {}, (x.op || 'refresh') + ' · ' + (x.reason || ''), x.runId ? h('span', { class: 'sub mono' }, x.runId) : null),
          h('td', { class: 'small' }, res ? res.appRoles.applied + ' app, ' + res.delegated.applied + ' delegated' + (res.consented ? ', consented' : '') : '—'),
          h('td', { class: 'nowrap' }, duration(x.durationMs)),
          h('td', {}, x.error ? errorBlock(x.error, x.advice) : h('span', { class: 'muted' }, '—')),
          h('td', { class: 'small' }, x.worker || '—'));
      }))));
  }

  // ---------- charts (charts.js draws them) ----------

  // chartsUI is what charts.js may use of this page.
  function chartsUI() {
    return {
      h, fill, api, page, when, exact, duration, badge, errorNotice, keepFocus, schedule, stopPolling,
      token: app.renderToken,
      currentToken: () => app.renderToken,
      reloadWith: (fn) => { app.reload = fn; },
    };
  }

  // ---------- backend page ----------

  // ---------- permissions ----------

  function renderPermissionsPage() {
    const token = app.renderToken;
    const resource = h('input', { id: 'perm-resource', name: 'resourceAppId', required: true, value: '00000003-0000-0000-c000-000000000000', size: 38, spellcheck: 'false', autocomplete: 'off' });
    const type = h('select', { id: 'perm-type', name: 'type' }, h('option', { value: 'Role' }, 'Application (Role)'), h('option', { value: 'Scope' }, 'Delegated (Scope)'),
      h('option', { value: 'DirectoryRole' }, 'Directory role of the app (no resource; role name or template id)'));
    const perm = h('input', { id: 'perm-name', name: 'permission', required: true, placeholder: 'e.g. Directory.Read.All or its id', size: 40, spellcheck: 'false', autocomplete: 'off' });
    const result = h('div', { id: 'perm-result', 'aria-live': 'polite' });
    const form = h('form', { id: 'perm-add', class: 'panel' },
      h('h2', {}, 'Add a permission'),
      h('p', { class: 'sub' }, 'Checked against what the resource publishes before it is saved. A new permission set starts a refresh of every tenant.'),
      h('p', {}, h('label', { for: 'perm-resource' }, 'Resource app id '), resource),
      h('p', {}, h('label', { for: 'perm-type' }, 'Type '), type),
      h('p', {}, h('label', { for: 'perm-name' }, 'Permission '), perm),
      h('p', {}, h('button', { type: 'submit', class: 'primary', id: 'perm-submit' }, 'Add permission'), ' ',
        h('button', { type: 'button', id: 'perm-reset' }, 'Reset to defaults')),
      result);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      fill(result);
      try {
        const res = await api('POST', 'permissions', { resourceAppId: resource.value.trim(), type: type.value, permission: perm.value.trim() });
        announce('Permission added' + (res.runId ? '; refreshing every tenant.' : '.'));
        fill(result, h('p', { class: 'notice' }, 'Added. Manifest version ' + res.version + (res.runId ? '; run ' + res.runId + ' refreshes every tenant.' : ' (no change).')));
        perm.value = '';
        loadPermissions(token);
      } catch (e) {
        if (e.status === 401) return;
        fill(result, errorNotice(e));
      }
    });
    $('#perm-reset', form).addEventListener('click', async () => {
      const ok = await confirmDialog({ title: 'Reset to defaults?', body: [h('p', {}, 'Every added permission is removed, and every tenant is refreshed with the base set.')], ok: 'Reset', danger: true });
      if (!ok) return;
      fill(result);
      try {
        const res = await api('POST', 'permissions/reset');
        announce('Permissions reset to defaults.');
        fill(result, h('p', { class: 'notice' }, 'Reset. Manifest version ' + res.version + (res.runId ? '; run ' + res.runId + ' refreshes every tenant.' : '.')));
        loadPermissions(token);
      } catch (e) {
        if (e.status === 401) return;
        fill(result, errorNotice(e));
      }
    });
    page('Permissions',
      h('div', { class: 'page-head' },
        h('div', {},
          h('h1', {}, 'Permissions'),
          h('p', { class: 'sub' }, 'What every tenant is given: the base set, the app registration\'s (when followed) and the permissions added here, each with where it comes from.'))),
      canAdminister() ? form : null,
      h('div', { id: 'perm-region' }, h('p', { class: 'empty' }, 'Loading…')),
      profilesSection(token));
    app.reload = () => loadPermissions(token);
    loadPermissions(token);
  }

  async function loadPermissions(token) {
    const region = $('#perm-region');
    try {
      const p = await api('GET', 'permissions');
      if (token !== app.renderToken || !region) return;
      keepFocus(() => fill(region,
        h('p', { id: 'perm-summary' }, 'Manifest version ', h('code', {}, p.version), ' · ' + p.appRoles + ' application and ' + p.scopes + ' delegated permissions · ' + plural(p.directoryRoles || 0, 'directory role') + (p.followApp ? ' · following the app registration' : '')),
        h('div', { class: 'table-wrap' }, h('table', { id: 'perm-table' },
          h('thead', {}, h('tr', {}, ['Resource', 'Type', 'Permission', 'Source', 'Added', ''].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, p.lines.map((l) => h('tr', { dataset: { perm: l.value, type: l.type } },
            h('td', {}, l.resourceName || l.resourceAppId),
            h('td', {}, l.type === 'Role' ? 'Application' : l.type === 'DirectoryRole' ? 'Directory role' : 'Delegated'),
            h('td', {}, h('code', {}, l.value)),
            h('td', {}, l.sources.join(', ')),
            h('td', {}, l.addedBy ? l.addedBy + ' · ' + when(l.addedAt) : ''),
            h('td', {}, l.key && canAdminister() ? removeButton(l, token) : ''))))))));
    } catch (e) {
      if (e.status === 401 || token !== app.renderToken || !region) return;
      fill(region, errorNotice(e));
    }
  }

  function removeButton(l, token) {
    const btn = h('button', { type: 'button', class: 'small', dataset: { focus: 'remove-' + l.key } }, 'Remove', h('span', { class: 'visually-hidden' }, ' ' + l.value));
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      try {
        await api('DELETE', 'permissions/' + encodeURIComponent(l.key));
        announce(l.value + ' removed.');
        loadPermissions(token);
      } catch (e) {
        if (e.status === 401) return;
        btn.disabled = false;
        announce('Not removed: ' + e.message);
      }
    });
    return btn;
  }

  // ---------- permission profiles (on the permissions page) ----------

  // profilesSection lists the profiles (every role) and, for an Admin, a
  // form to create or edit one from the effective manifest's permissions.
  function profilesSection(token) {
    app.profileEdit = null;
    const section = h('section', { class: 'panel', 'aria-labelledby': 'profiles-title', id: 'profiles' },
      h('h2', { id: 'profiles-title' }, 'Profiles'),
      h('p', { class: 'sub' }, 'A profile is a named permission set that replaces the full set for the tenants assigned to it (e.g. least privilege for a customer who refuses mail access). Assign one on a tenant\'s page.'),
      h('div', { id: 'profiles-region' }, h('p', { class: 'empty' }, 'Loading…')),
      canAdminister() ? h('div', { id: 'profile-form-region' }) : null);
    loadProfiles(token);
    return section;
  }

  async function loadProfiles(token) {
    try {
      const [ps, perms] = await Promise.all([api('GET', 'profiles'), canAdminister() ? api('GET', 'permissions') : null]);
      if (token !== app.renderToken) return;
      const region = $('#profiles-region');
      if (!region) return;
      const profiles = ps.profiles || [];
      keepFocus(() => {
        fill(region, profiles.length ? profilesTable(profiles, token) : h('p', { class: 'empty' }, 'No profiles: every tenant gets the full set.'));
        if (perms) drawProfileForm(perms.lines || [], profiles, token);
      });
    } catch (e) {
      if (e.status === 401 || token !== app.renderToken) return;
      const region = $('#profiles-region');
      if (region) fill(region, errorNotice(e));
    }
  }

  function profileCounts(p) {
    let roles = 0;
    let scopes = 0;
    for (const r of p.resources || []) {
      roles += (r.appRoles || []).length;
      scopes += (r.scopes || []).length;
    }
    return [roles, scopes];
  }

  function profilesTable(profiles, token) {
    return h('div', { class: 'table-wrap' }, h('table', { id: 'profiles-table' },
      h('caption', { class: 'visually-hidden' }, 'Permission profiles'),
      h('thead', {}, h('tr', {}, ['Profile', 'Application', 'Delegated', 'Tenants', 'Saved'].map((c) => h('th', { scope: 'col' }, c)),
        canAdminister() ? h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')) : null)),
      h('tbody', {}, profiles.map((p) => {
        const [roles, scopes] = profileCounts(p);
        return h('tr', { dataset: { profile: p.name } },
          h('td', {}, h('code', {}, p.name)),
          h('td', {}, String(roles)),
          h('td', {}, String(scopes)),
          h('td', {}, p.tenants.length ? h('ul', { class: 'plain' }, p.tenants.map((id) => h('li', {}, h('a', { href: '#/tenants/' + id, class: 'mono small' }, id)))) : h('span', { class: 'muted' }, 'none')),
          h('td', { class: 'small' }, (p.updatedBy || '') + ' · ', when(p.updatedAt)),
          canAdminister() ? h('td', { class: 'actions-cell' },
            h('button', { type: 'button', class: 'button secondary small', dataset: { focus: 'profile-edit:' + p.name, action: 'edit' }, 'aria-label': 'Edit ' + p.name,
              onclick: () => { app.profileEdit = { name: p.name, resources: p.resources }; loadProfiles(token); const n = $('#profile-name'); if (n) n.focus(); } }, 'Edit'),
            h('button', { type: 'button', class: 'button secondary small', dataset: { focus: 'profile-delete:' + p.name, action: 'delete' }, 'aria-label': 'Delete ' + p.name,
              onclick: () => deleteProfile(p, token) }, 'Delete')) : null);
      }))));
  }

  async function deleteProfile(p, token) {
    const ok = await confirmDialog({
      title: 'Delete the profile ' + p.name + '?',
      body: [h('p', {}, p.tenants.length ? plural(p.tenants.length, 'tenant') + ' assigned to it get the full set again at their next refresh.' : 'No tenant is assigned to it.')],
      ok: 'Delete', danger: true,
    });
    if (!ok) return;
    try {
      await api('DELETE', 'profiles/' + encodeURIComponent(p.name));
      announce('Profile ' + p.name + ' deleted.');
    } catch (e) {
      if (e.status === 401) return;
      announce('The profile was not deleted: ' + e.message);
    }
    loadProfiles(token);
  }

  // inProfile says whether line l is in a profile's resources.
  function inProfile(resources, l) {
    const r = (resources || []).find((x) => x.appId === l.resourceAppId);
    if (!r) return false;
    if (l.type === 'Role') return (r.appRoles || []).some((x) => x.id === l.id || x.value === l.value);
    return (r.scopes || []).includes(l.value);
  }

  function drawProfileForm(lines, profiles, token) {
    const region = $('#profile-form-region');
    if (!region) return;
    const edit = app.profileEdit;
    const name = h('input', { id: 'profile-name', required: true, maxlength: '64', pattern: '[A-Za-z0-9_-]{1,64}', spellcheck: 'false', autocomplete: 'off',
      value: edit ? edit.name : '', 'aria-describedby': 'profile-name-hint' });
    const byRes = new Map();
    for (const l of lines) {
      if (!byRes.has(l.resourceAppId)) byRes.set(l.resourceAppId, { name: l.resourceName || l.resourceAppId, lines: [] });
      byRes.get(l.resourceAppId).lines.push(l);
    }
    const boxes = [];
    const groups = [...byRes.entries()].map(([appId, g]) => {
      const items = g.lines.map((l) => {
        const id = 'pl-' + boxes.length;
        const box = h('input', { type: 'checkbox', id, checked: !!(edit && inProfile(edit.resources, l)),
          dataset: { resource: appId, type: l.type, perm: l.value, id: l.id || '' } });
        boxes.push(box);
        return h('li', {}, box, ' ', h('label', { for: id }, h('span', { class: 'small muted' }, l.type === 'Role' ? 'Application ' : 'Delegated '), h('code', {}, l.value)));
      });
      const any = edit && g.lines.some((l) => inProfile(edit.resources, l));
      return h('details', { class: 'profile-resource', open: !!any, dataset: { resource: appId } },
        h('summary', {}, g.name + ' (' + g.lines.length + ')'),
        h('ul', { class: 'plain' }, items));
    });
    const result = h('div', { id: 'profile-result', 'aria-live': 'polite' });
    const form = h('form', { id: 'profile-form', novalidate: true },
      h('h3', {}, edit ? 'Edit the profile ' + edit.name : 'New profile'),
      h('div', { class: 'field' }, h('label', { for: 'profile-name' }, 'Name'), name,
        h('p', { class: 'hint', id: 'profile-name-hint' }, 'Letters, digits, "-" and "_". Saving under another name makes a new profile.')),
      h('fieldset', {}, h('legend', {}, 'Permissions (from the full set)'), h('div', { class: 'profile-lines' }, groups)),
      h('p', {}, h('button', { type: 'submit', class: 'button', id: 'profile-save' }, 'Save profile'), ' ',
        edit ? h('button', { type: 'button', class: 'button secondary', id: 'profile-cancel', onclick: () => { app.profileEdit = null; loadProfiles(token); } }, 'Cancel') : null),
      result);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      fill(result);
      const n = name.value.trim();
      const byApp = new Map();
      for (const b of boxes.filter((x) => x.checked)) {
        if (!byApp.has(b.dataset.resource)) byApp.set(b.dataset.resource, []);
        byApp.get(b.dataset.resource).push({ id: b.dataset.type === 'Role' && b.dataset.id ? b.dataset.id : b.dataset.perm, type: b.dataset.type });
      }
      if (!/^[A-Za-z0-9_-]{1,64}$/.test(n)) { fill(result, errorNotice('Name the profile: 1 to 64 letters, digits, "-" or "_".')); name.focus(); return; }
      if (!byApp.size) { fill(result, errorNotice('Pick at least one permission.')); return; }
      try {
        const res = await api('POST', 'profiles/' + encodeURIComponent(n),
          { requiredResourceAccess: [...byApp.entries()].map(([resourceAppId, resourceAccess]) => ({ resourceAppId, resourceAccess })) });
        app.profileEdit = null;
        announce('Profile ' + n + ' saved.');
        await loadProfiles(token);
        const r = $('#profile-result');
        if (r) fill(r, h('p', { class: 'notice' }, 'Saved ' + n + ': ' + plural(res.appRoles, 'application permission') + ', ' + plural(res.scopes, 'delegated permission') + ' (version ' + res.version + ').'));
      } catch (e) {
        if (e.status === 401) return;
        fill(result, errorNotice(e));
      }
    });
    fill(region, form);
  }

  // ---------- poison page ----------

  function renderPoisonPage() {
    const token = app.renderToken;
    page('Poison queue',
      h('div', { class: 'page-head' },
        h('div', {},
          h('h1', {}, 'Poison queue'),
          h('p', { class: 'sub' }, 'Messages the workers parked: invalid ones, and refreshes whose retries ran out. Re-drive one to try it again once its cause is fixed.')),
        canOperate() ? h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'button', id: 'redrive-all', onclick: () => poisonAction(null, 'redrive') }, 'Re-drive all')) : null),
      h('div', { id: 'poison-notice' }),
      h('div', { id: 'poison-region' }, h('p', { class: 'empty' }, 'Loading…')));
    app.reload = () => { stopPolling(); loadPoison(token); };
    loadPoison(token);
  }

  async function loadPoison(token) {
    let delay = 10000;
    try {
      const items = await api('GET', 'poison');
      if (token !== app.renderToken) return;
      keepFocus(() => drawPoison(items || []));
    } catch (e) {
      if (e.status === 401 || token !== app.renderToken) return;
      const region = $('#poison-region');
      if (region) fill(region, errorNotice(e));
      delay = 5000;
    }
    schedule(() => loadPoison(token), delay);
  }

  function drawPoison(items) {
    const region = $('#poison-region');
    if (!region) return;
    const all = $('#redrive-all');
    if (all) all.disabled = !items.length;
    if (!items.length) { fill(region, h('p', { class: 'empty' }, 'No parked messages.')); return; }
    fill(region, h('div', { class: 'table-wrap' }, h('table', { id: 'poison-table' },
      h('caption', { class: 'visually-hidden' }, 'Parked messages, ' + items.length + ' shown'),
      h('thead', {}, h('tr', {}, ['Tenant', 'Reason', 'Attempts', 'Parked', 'Message'].map((c) => h('th', { scope: 'col' }, c)),
        h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
      h('tbody', {}, items.map((m) => h('tr', { dataset: { message: m.messageId, tenant: m.tenantId || '' } },
        h('td', {}, m.tenantId ? h('a', { href: '#/tenants/' + m.tenantId, class: 'mono' }, m.tenantId) : h('span', { class: 'muted' }, 'not a message'),
          m.op ? h('span', { class: 'sub' }, m.op + (m.requestedBy ? ' · ' + m.requestedBy : '')) : null),
        h('td', {}, errorBlock(m.reason, '', true)),
        h('td', {}, String(m.attempts)),
        h('td', { class: 'nowrap' }, when(m.poisonedAt)),
        h('td', { class: 'mono small' }, m.messageId, m.truncated ? h('span', { class: 'sub' }, 'body truncated') : null),
        h('td', { class: 'actions-cell' }, canOperate() ? [
          h('button', { type: 'button', class: 'button small', dataset: { focus: 'redrive:' + m.messageId, action: 'redrive' },
            'aria-label': 'Re-drive ' + (m.tenantId || m.messageId), onclick: () => poisonAction(m, 'redrive') }, 'Re-drive'),
          h('button', { type: 'button', class: 'button secondary small', dataset: { focus: 'delete:' + m.messageId, action: 'delete' },
            'aria-label': 'Delete ' + (m.tenantId || m.messageId), onclick: () => poisonAction(m, 'delete') }, 'Delete')] : null)))))));
  }

  // poisonAction re-drives or deletes one parked message (m), or re-drives
  // them all (m null), after a confirmation.
  async function poisonAction(m, action) {
    const what = m ? 'the message of ' + (m.tenantId || m.messageId) : 'every parked message';
    const ok = await confirmDialog(action === 'delete' ? {
      title: 'Delete ' + what + '?', danger: true, ok: 'Delete',
      body: [h('p', {}, 'The message is removed for good; the tenant is refreshed again at the next run.')],
    } : {
      title: 'Re-drive ' + what + '?', ok: 'Re-drive',
      body: [h('p', {}, 'It goes back to the work queue as a first attempt; a worker picks it up shortly.')],
    });
    if (!ok) return;
    const notice = $('#poison-notice');
    try {
      const path = m ? 'poison/' + encodeURIComponent(m.messageId) + '/' + action : 'poison/redrive';
      const res = await api('POST', path);
      const text = m ? (action === 'delete' ? 'Deleted ' : 'Re-driven: ') + what + '.' : plural(res.redriven, 'message') + ' re-driven.';
      if (notice) fill(notice, h('p', { role: 'status' }, text));
      announce(text);
    } catch (e) {
      if (e.status === 401) return;
      if (notice) fill(notice, errorNotice(e));
    }
    reload();
  }

  function renderBackendPage() {
    const token = app.renderToken;
    page('Backend',
      h('div', { class: 'page-head' },
        h('div', {},
          h('h1', {}, 'Backend'),
          h('p', { class: 'sub' }, 'The resources the dispatcher and workers use, the workers seen recently and the pause switches.'))),
      h('div', { id: 'backend-region' }, h('p', { class: 'empty' }, 'Loading…')));
    app.reload = () => { stopPolling(); loadBackend(token); };
    loadBackend(token);
  }

  async function loadBackend(token) {
    let delay = 3000;
    try {
      const b = await api('GET', 'backend');
      if (token !== app.renderToken) return;
      app.backend = b;
      keepFocus(() => drawBackend(b));
    } catch (e) {
      if (e.status === 401 || token !== app.renderToken) return;
      const region = $('#backend-region');
      if (region) fill(region, errorNotice(e));
      delay = 5000;
    }
    schedule(() => loadBackend(token), delay);
  }

  // Hosts of a local stack: no Azure portal links for them.
  function isLocal(host) {
    return /^(localhost|127\.|\[?::1\]?|0\.0\.0\.0|10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|host\.docker\.internal)/i.test(host) ||
      /devstoreaccount1|azurite|m365sim|simulator/i.test(host);
  }

  function hostOf(v) {
    try { return new URL(v).host; } catch (e) { return ''; }
  }

  // portalLink returns a link into the Azure (or Entra / Partner Center)
  // portal for a real Microsoft resource, or null.
  function portalLink(key, value) {
    if (typeof value !== 'string' || !value) return null;
    const k = key.toLowerCase();
    if (/^\/subscriptions\/[^/]+\/resourcegroups\//i.test(value)) {
      return 'https://portal.azure.com/#resource' + value;
    }
    const host = hostOf(value);
    if (host && isLocal(host)) return null;
    if (/\.vault\.azure\.net$/i.test(host)) return 'https://portal.azure.com/#browse/Microsoft.KeyVault%2Fvaults';
    if (/\.(queue|table|blob)\.core\.windows\.net$/i.test(host)) return 'https://portal.azure.com/#browse/Microsoft.Storage%2FStorageAccounts';
    if (/\.servicebus\.windows\.net$/i.test(host)) return 'https://portal.azure.com/#browse/Microsoft.ServiceBus%2Fnamespaces';
    if (/^login\.microsoftonline\.(com|us)$/i.test(host)) return 'https://entra.microsoft.com/';
    if (/^graph\.microsoft\.(com|us)$/i.test(host)) return 'https://entra.microsoft.com/';
    if (/partnercenter|partner\.microsoft\.com/i.test(host)) return 'https://partner.microsoft.com/dashboard';
    if (!host && /storage|account/.test(k) && /^[a-z0-9]{3,24}$/.test(value) && value !== 'devstoreaccount1') {
      return 'https://portal.azure.com/#browse/Microsoft.Storage%2FStorageAccounts';
    }
    return null;
  }

  // A backend value that looks like a secret is never rendered.
  function looksSecret(key, value) {
    return /secret|password|accountkey|sharedaccess|token|credential|apikey|api_key/i.test(key) ||
      /AccountKey=|SharedAccessKey=|SharedAccessSignature=|sig=/i.test(String(value));
  }

  const GROUPS = [
    ['storage', 'Storage', /storage|account|queue|poison|table|servicebus|transport/i],
    ['microsoft', 'Microsoft endpoints', /graph|partner|authority|login|entra|tenant|app/i],
    ['vault', 'Key Vault', /vault/i],
  ];

  function humanize(key) {
    return key.replace(/([a-z0-9])([A-Z])/g, '$1 $2').replace(/[_.-]+/g, ' ').replace(/^./, (c) => c.toUpperCase());
  }

  function kvRow(key, value) {
    const secret = looksSecret(key, value);
    const link = secret ? null : portalLink(key, value);
    let shown = secret ? '(hidden)' : String(value);
    if (!secret && /tables$/i.test(key)) shown = shown.split(',').map((x) => x.trim()).filter(Boolean).join(', ');
    return [h('dt', {}, humanize(key)),
      h('dd', { dataset: { key } },
        /^https?:\/\//i.test(shown) ? h('code', {}, shown) : shown,
        link ? [' ', h('a', { href: link, target: '_blank', rel: 'noopener noreferrer', class: 'small' }, 'open in portal', h('span', { class: 'visually-hidden' }, ' (new tab)'))] : null)];
  }

  function drawBackend(b) {
    const region = $('#backend-region');
    if (!region) return;
    const endpoints = b.endpoints || {};
    const groups = { storage: [], microsoft: [], vault: [], other: [] };
    for (const key of Object.keys(endpoints).sort()) {
      if (key === 'queue' || key === 'poisonQueue') continue; // shown with their depths
      const g = GROUPS.find(([, , re]) => re.test(key));
      groups[g ? g[0] : 'other'].push(key);
    }
    const q = b.queue || { depth: 0, poison: 0 };
    const paused = b.paused || {};
    const sched = b.schedule || {};

    fill(region,
      (b.problems || []).length ? h('div', { class: 'notice warn', role: 'alert' }, 'Some facts could not be read: ', b.problems.join('; '), '.') : null,
      h('section', { class: 'panel', 'aria-labelledby': 'switches-title', id: 'switches' },
        h('h2', { id: 'switches-title' }, 'Pause switches'),
        switchRow('dispatch', 'Pause dispatching', 'Nightly runs and "refresh all" are recorded as skipped instead of enqueued. Requests for one tenant still go through.', paused.dispatch),
        switchRow('workers', 'Pause workers', 'Workers stop taking messages from the queue; what is queued stays there, nothing is lost. Resume to let them drain it.', paused.workers)),
      h('div', { class: 'grid' },
        h('section', { class: 'panel', 'aria-labelledby': 'queue-title', id: 'queues' },
          h('h2', { id: 'queue-title' }, 'Queues'),
          h('dl', { class: 'kv' },
            h('dt', {}, 'Work queue'), h('dd', {}, endpoints.queue ? h('code', {}, endpoints.queue) : '—'),
            h('dt', {}, 'Depth'), h('dd', { id: 'queue-depth', dataset: { depth: String(q.depth) } }, h('strong', {}, String(q.depth)), ' ', h('span', { class: 'muted small' }, (q.depth === 1 ? 'message' : 'messages') + ' waiting or at work (approximate)')),
            h('dt', {}, 'Poison queue'), h('dd', {}, endpoints.poisonQueue ? h('code', {}, endpoints.poisonQueue) : '—'),
            h('dt', {}, 'Depth'), h('dd', { id: 'poison-depth', dataset: { depth: String(q.poison) } }, h('strong', {}, String(q.poison)), ' ', h('span', { class: 'muted small' }, (q.poison === 1 ? 'message' : 'messages') + (q.poison ? ' that failed for good: see the worker logs' : '')))),
          (q.lanes || []).length ? h('div', { class: 'table-wrap' }, h('table', { id: 'queue-lanes' },
            h('caption', {}, 'By queue: workers serve the interactive queue (manual and event refreshes) before the work queue (runs)'),
            h('thead', {}, h('tr', {}, ['Queue', 'Depth', 'Poison queue', 'Poison'].map((c) => h('th', { scope: 'col' }, c)))),
            h('tbody', {}, q.lanes.map((l) => h('tr', { dataset: { queue: l.queue } },
              h('td', {}, h('code', {}, l.queue)), h('td', {}, String(l.depth)),
              h('td', {}, h('code', {}, l.poisonQueue)), h('td', {}, String(l.poison))))))) : null),
        h('section', { class: 'panel', 'aria-labelledby': 'schedule-title', id: 'schedule' },
          h('h2', { id: 'schedule-title' }, 'Nightly schedule'),
          h('dl', { class: 'kv' },
            h('dt', {}, 'Next run'), h('dd', { id: 'next-run' }, exact(sched.next, sched.timeZone), validTime(sched.next) ? [' · ', when(sched.next)] : null),
            h('dt', {}, 'Run id'), h('dd', {}, sched.nextRunId ? h('code', {}, sched.nextRunId) : '—'),
            h('dt', {}, 'Time zone'), h('dd', { id: 'time-zone' }, sched.timeZone || 'UTC'),
            h('dt', {}, 'Schedule'), h('dd', {}, sched.cron ? h('code', {}, sched.cron) : '—'),
            h('dt', {}, 'This dispatcher'), h('dd', {}, b.dispatcher || '—')))),
      credentialPanel(b.credential || {}, sched.timeZone),
      h('div', { class: 'grid' },
        endpointPanel('storage', 'Storage', groups.storage),
        endpointPanel('microsoft', 'Microsoft endpoints', groups.microsoft),
        groups.vault.length ? endpointPanel('vault', 'Key Vault', groups.vault) : null,
        groups.other.length ? endpointPanel('other', 'Other', groups.other) : null),
      h('section', { class: 'panel', 'aria-labelledby': 'workers-title', id: 'workers' },
        h('h2', { id: 'workers-title' }, 'Workers seen in the last 10 minutes'),
        (b.workers || []).length ? h('div', { class: 'table-wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, ['Worker', 'Host', 'Last heartbeat', 'Started', 'In flight', 'Processed'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, b.workers.map((w) => h('tr', {},
            h('td', {}, h('code', {}, w.id)), h('td', {}, w.host || '—'), h('td', {}, when(w.seen)), h('td', {}, when(w.started)),
            h('td', {}, String(w.inFlight || 0)), h('td', {}, String(w.processed || 0)))))))
          : h('p', { class: 'empty' }, 'No worker has sent a heartbeat recently. Messages wait in the queue until one runs.')));
    function endpointPanel(id, title, keys) {
      return h('section', { class: 'panel', 'aria-labelledby': 'ep-' + id },
        h('h2', { id: 'ep-' + id }, title),
        keys.length ? h('dl', { class: 'kv' }, keys.map((k) => kvRow(k, endpoints[k]))) : h('p', { class: 'muted' }, 'Not configured.'));
    }
  }

  // The app's credential: what it is and its rotation, never its value.
  function credentialPanel(c, tz) {
    const outcome = c.lastOutcome || '';
    const bad = outcome === 'failed';
    const rotate = c.rotates ? h('button', { type: 'button', class: 'button', id: 'rotate-now' }, 'Rotate now') : null;
    if (rotate) {
      rotate.addEventListener('click', async () => {
        rotate.disabled = true;
        try {
          await api('POST', 'credential/rotate', {});
          announce('Rotation requested; its outcome appears here when it is done.');
        } catch (e) {
          if (e.status === 401) return;
          announce('The rotation was not requested: ' + e.message);
        } finally {
          rotate.disabled = false;
        }
      });
    }
    return h('section', { class: 'panel', 'aria-labelledby': 'credential-title', id: 'credential' },
      h('h2', { id: 'credential-title' }, 'App credential'),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Kind'), h('dd', { id: 'credential-kind' }, c.kind || '—'),
        h('dt', {}, 'Source'), h('dd', {}, c.source ? h('code', {}, c.source) : '—'),
        h('dt', {}, 'Version'), h('dd', {}, c.version ? h('code', {}, c.version) : '—'),
        h('dt', {}, 'Expires'), h('dd', {}, validTime(c.expires) ? [exact(c.expires, tz), ' · ', when(c.expires)] : 'unknown'),
        h('dt', {}, 'Last rotation'), h('dd', {}, validTime(c.lastRotation) ? when(c.lastRotation) : '—'),
        h('dt', {}, 'Last run'), h('dd', { id: 'credential-outcome' }, outcome ? h('span', { class: 'badge ' + (bad ? 'failed' : 'succeeded') }, outcome) : '—',
          validTime(c.lastRun) ? [' ', when(c.lastRun)] : null, c.lastError ? h('p', { class: 'desc' }, c.lastError) : null),
        h('dt', {}, 'Next rotation'), h('dd', {}, c.rotates && validTime(c.nextRotation) ? [exact(c.nextRotation, tz), ' · ', when(c.nextRotation)] : 'not rotated here')),
      rotate);
  }

  function switchRow(component, label, desc, on) {
    const id = 'switch-' + component;
    const btn = h('button', { type: 'button', role: 'switch', class: 'switch', id, 'aria-checked': on ? 'true' : 'false', 'aria-describedby': id + '-desc', dataset: { focus: id } },
      h('span', { class: 'track', 'aria-hidden': 'true' }),
      h('span', {}, label));
    const state = h('span', { class: 'badge ' + (on ? 'failed' : 'succeeded'), id: id + '-state' }, on ? 'paused' : 'running');
    if (!canOperate()) {
      // The role may not switch: the state only.
      return h('div', { class: 'switch-row' }, h('div', {}, h('p', {}, label), h('p', { class: 'desc' }, desc)), state);
    }
    btn.addEventListener('click', async () => {
      const want = btn.getAttribute('aria-checked') !== 'true';
      btn.disabled = true;
      try {
        await api('POST', 'pause', { component, paused: want });
        btn.setAttribute('aria-checked', want ? 'true' : 'false');
        state.textContent = want ? 'paused' : 'running';
        state.className = 'badge ' + (want ? 'failed' : 'succeeded');
        announce((component === 'workers' ? 'Workers' : 'Dispatching') + (want ? ' paused.' : ' resumed.'));
      } catch (e) {
        if (e.status === 401) return;
        announce('The switch was not changed: ' + e.message);
        const region = $('#switches');
        if (region) region.append(errorNotice(e));
      } finally {
        btn.disabled = false;
      }
    });
    return h('div', { class: 'switch-row' },
      h('div', {}, btn, h('p', { class: 'desc', id: id + '-desc' }, desc)),
      state);
  }

  // ---------- activity page ----------

  const ACTIONS = [['', 'All actions'], ['refresh', 'Refresh'], ['reset', 'Reset'], ['refreshAll', 'Refresh all'], ['plan', 'Preview'], ['profile', 'Profile'],
    ['pause', 'Pause'], ['resume', 'Resume'], ['redrive', 'Re-drive'], ['deletePoison', 'Delete poison'], ['signIn', 'Sign-in'], ['signOut', 'Sign-out']];

  function actionLabel(a) {
    const known = ACTIONS.find(([v]) => v === a);
    return known && a ? known[1] : a;
  }

  function activityTable(items, withTenant) {
    const names = new Map(app.tenants.map((t) => [t.id, tenantName(t)]));
    return h('div', { class: 'table-wrap' }, h('table', { class: 'activity' },
      h('caption', { class: 'visually-hidden' }, 'Actions, newest first'),
      h('thead', {}, h('tr', {},
        ['When', 'Who', 'Action', withTenant ? 'Tenant' : null, 'Outcome', 'Request'].filter(Boolean).map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, items.map((a) => h('tr', { dataset: { action: a.action, actor: a.actor, tenant: a.tenantId || '', request: a.requestId || '' } },
        h('td', { class: 'nowrap' }, when(a.at), h('span', { class: 'sub' }, exact(a.at))),
        h('td', {}, a.actorName || a.actor.replace(/^user:/, ''), h('span', { class: 'sub' }, a.actor + (a.role ? ' · ' + a.role : ''))),
        h('td', {}, actionLabel(a.action), a.detail ? h('span', { class: 'sub' }, a.detail) : null),
        withTenant ? h('td', {}, a.tenantId ? h('a', { href: '#/tenants/' + a.tenantId }, names.get(a.tenantId) || a.tenantId) : h('span', { class: 'muted' }, '—')) : null,
        h('td', {}, h('span', { class: 'badge ' + (a.outcome === 'failed' ? 'failed' : a.outcome === 'skipped' ? 'partial' : 'succeeded') }, a.outcome)),
        h('td', { class: 'small mono' }, a.requestId || '—'))))));
  }

  function renderActivityPage() {
    const token = app.renderToken;
    const f = (app.activity && app.activity.filter) || { user: '', action: '', tenant: '' };
    const user = h('input', { type: 'search', id: 'activity-user', value: f.user, placeholder: 'user:someone@example.com or apikey:1', autocomplete: 'off' });
    const action = h('select', { id: 'activity-action' }, ACTIONS.map(([v, label]) => h('option', { value: v, selected: f.action === v }, label)));
    const tenant = h('input', { type: 'search', id: 'activity-tenant', value: f.tenant, placeholder: 'tenant id', autocomplete: 'off' });
    const form = h('form', { class: 'toolbar', role: 'search', id: 'activity-filter' },
      h('div', { class: 'field' }, h('label', { for: 'activity-user' }, 'Who'), user),
      h('div', { class: 'field' }, h('label', { for: 'activity-action' }, 'Action'), action),
      h('div', { class: 'field' }, h('label', { for: 'activity-tenant' }, 'Tenant'), tenant),
      h('button', { type: 'submit', class: 'button secondary' }, 'Filter'));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      app.activity = { items: [], continuation: '', filter: { user: user.value.trim(), action: action.value, tenant: tenant.value.trim() } };
      loadActivity(token, false);
    });
    page('Activity',
      h('div', { class: 'page-head' },
        h('div', {},
          h('h1', {}, 'Activity'),
          h('p', { class: 'sub' }, 'Every refresh, reset, refresh of all tenants, pause switch and sign-in: who, when, and what came of it.'))),
      h('section', { class: 'panel', 'aria-labelledby': 'activity-title' },
        h('h2', { id: 'activity-title', class: 'visually-hidden' }, 'Activity log'),
        form,
        h('div', { id: 'activity-region' }, h('p', { class: 'empty' }, 'Loading…'))));
    app.activity = { items: [], continuation: '', filter: f };
    app.reload = () => { stopPolling(); app.activity.items = []; app.activity.continuation = ''; loadActivity(token, false); };
    loadActivity(token, false);
  }

  async function loadActivity(token, more) {
    const a = app.activity;
    const q = new URLSearchParams({ limit: '50' });
    if (a.filter.user) q.set('user', a.filter.user);
    if (a.filter.action) q.set('action', a.filter.action);
    if (a.filter.tenant) q.set('tenant', a.filter.tenant.toLowerCase());
    if (more && a.continuation) q.set('continuation', a.continuation);
    const region = $('#activity-region');
    try {
      const res = await api('GET', 'activity?' + q.toString());
      if (token !== app.renderToken) return;
      a.items = more ? a.items.concat(res.items || []) : (res.items || []);
      a.continuation = res.continuation || '';
      if (!region) return;
      fill(region,
        a.items.length ? activityTable(a.items, true) : h('p', { class: 'empty' }, 'Nothing recorded matches.'),
        a.continuation ? h('p', {}, h('button', { type: 'button', class: 'button secondary', id: 'activity-more', onclick: () => loadActivity(token, true) }, 'Older entries')) : null);
    } catch (e) {
      if (e.status === 401 || token !== app.renderToken) return;
      if (region) fill(region, errorNotice(e));
    }
  }

  // ---------- settings page (Admin) ----------

  function renderSettingsPage() {
    const token = app.renderToken;
    page('Settings',
      h('div', { class: 'page-head' },
        h('div', {},
          h('h1', {}, 'Settings'),
          h('p', { class: 'sub' }, 'How people and automation are let in, and what each role may do.'))),
      h('div', { id: 'settings-region' }, h('p', { class: 'empty' }, 'Loading…')));
    (async () => {
      const region = $('#settings-region');
      try {
        const v = await api('GET', 'settings');
        if (token !== app.renderToken || !region) return;
        const si = v.signIn || {};
        fill(region,
          h('div', { class: 'grid' },
            h('section', { class: 'panel', 'aria-labelledby': 'signin-title', id: 'settings-signin' },
              h('h2', { id: 'signin-title' }, 'Sign-in with Microsoft'),
              si.enabled ? h('dl', { class: 'kv' },
                h('dt', {}, 'Issuer'), h('dd', {}, h('code', {}, si.issuer)),
                h('dt', {}, 'Application (client) id'), h('dd', {}, h('code', {}, si.clientId)),
                h('dt', {}, 'Redirect URI'), h('dd', {}, h('code', {}, si.redirectUrl)),
                h('dt', {}, 'Session lifetime'), h('dd', {}, si.sessionLifetime)) : h('p', { class: 'muted' }, 'Not configured: set CPV_SIGNIN_CLIENT_ID and CPV_PUBLIC_URL.')),
            h('section', { class: 'panel', 'aria-labelledby': 'bearer-title' },
              h('h2', { id: 'bearer-title' }, 'Bearer tokens for the API'),
              v.bearer && v.bearer.issuer ? h('dl', { class: 'kv' },
                h('dt', {}, 'Issuer'), h('dd', {}, h('code', {}, v.bearer.issuer)),
                h('dt', {}, 'Audience'), h('dd', {}, h('code', {}, v.bearer.audience))) : h('p', { class: 'muted' }, 'Not configured.'))),
          h('section', { class: 'panel', 'aria-labelledby': 'keys-title', id: 'settings-keys' },
            h('h2', { id: 'keys-title' }, 'API keys'),
            (v.apiKeys || []).length ? h('ul', {}, v.apiKeys.map((k) => h('li', {}, h('code', {}, 'apikey:' + k.number), ' · ' + k.role)))
              : h('p', { class: 'muted' }, 'None.')),
          h('section', { class: 'panel', 'aria-labelledby': 'roles-title', id: 'settings-roles' },
            h('h2', { id: 'roles-title' }, 'Roles'),
            h('div', { class: 'table-wrap' }, h('table', {},
              h('thead', {}, h('tr', {}, ['Role', 'App role', 'May'].map((c) => h('th', { scope: 'col' }, c)))),
              h('tbody', {}, (v.roles || []).map((r) => h('tr', {}, h('td', {}, r.name), h('td', {}, h('code', {}, r.appRole)), h('td', {}, r.allows))))))),
          h('section', { class: 'panel', 'aria-labelledby': 'webhook-title', id: 'settings-webhook' },
            h('h2', { id: 'webhook-title' }, 'Partner Center webhook'),
            h('div', { id: 'webhook-region' }, h('p', { class: 'empty' }, 'Loading…'))),
          h('section', { class: 'panel', 'aria-labelledby': 'notify-title', id: 'settings-notify' },
            h('h2', { id: 'notify-title' }, 'Notifications'),
            h('div', { id: 'notify-region' }, h('p', { class: 'empty' }, 'Loading…'))));
        loadWebhook(token);
        // notify.js fills the notifications panel with the page's helpers.
        document.dispatchEvent(new CustomEvent('cpv:settings', { detail: {
          h, fill, api, announce, errorNotice, current: () => token === app.renderToken } }));
      } catch (e) {
        if (e.status === 401 || token !== app.renderToken) return;
        if (region) fill(region, errorNotice(e));
      }
    })();
  }

  // The webhook registration panel: Partner Center's registration, a
  // button to point it here and one to send Partner Center's test event.
  function webhookView(v, test) {
    const events = v.webhookEvents || [];
    return [
      (v.warnings || []).map((w) => h('p', { class: 'notice warn', role: 'alert' }, w)),
      v.registered ? h('dl', { class: 'kv' },
        h('dt', {}, 'Registered URL'), h('dd', {}, h('code', { id: 'webhook-url' }, v.webhookUrl)),
        h('dt', {}, 'This dispatcher'), h('dd', {}, v.expectedUrl ? h('code', {}, v.expectedUrl) : h('span', { class: 'muted' }, 'CPV_PUBLIC_URL is not set')),
        h('dt', {}, 'Events'), h('dd', {}, events.length ? events.join(', ') : '—')) : null,
      h('p', {},
        h('button', { type: 'button', class: 'button', id: 'webhook-register', disabled: !v.expectedUrl,
          onclick: () => webhookAction('POST', 'webhook/registration') }, v.registered ? 'Register this dispatcher again' : 'Register this dispatcher'),
        ' ',
        h('button', { type: 'button', class: 'button secondary', id: 'webhook-test', disabled: !v.registered,
          onclick: () => webhookAction('POST', 'webhook/test') }, 'Send test event')),
      test ? h('p', { class: 'notice' + (test.verified ? '' : ' warn'), id: 'webhook-test-result', role: 'status' },
        test.verified ? 'The test event arrived and its signature verified (' + test.responseCode + ').'
          : test.delivered ? 'The test event reached ' + (test.callbackUrl || 'the registered URL') + ' but was refused (' + test.responseCode + '): ' + (test.responseMessage || 'no message')
            : 'The test event was not delivered: ' + (test.responseMessage || test.status || 'no answer')) : null,
    ];
  }

  async function loadWebhook(token, test) {
    const region = $('#webhook-region');
    try {
      const v = await api('GET', 'webhook/registration');
      if (token !== app.renderToken || !region) return;
      fill(region, ...webhookView(v, test));
    } catch (e) {
      if (e.status === 401 || token !== app.renderToken) return;
      if (region) fill(region, errorNotice(e));
    }
  }

  async function webhookAction(method, path) {
    const token = app.renderToken;
    const region = $('#webhook-region');
    try {
      const res = await api(method, path);
      const test = path === 'webhook/test' ? res : undefined;
      announce(test ? (test.verified ? 'Test event verified.' : 'Test event not verified.') : 'Webhook registered.');
      await loadWebhook(token, test);
    } catch (e) {
      if (e.status === 401 || token !== app.renderToken) return;
      if (region) region.prepend(errorNotice(e));
    }
  }

  // accessBadge shows a tenant's access check (from its status row).
  function accessBadge(a) {
    const s = (a && a.status) || 'unknown';
    return h('span', { class: 'badge check-' + s, title: (a && a.reason) || null }, s === 'unknown' ? 'not checked' : s);
  }

  // pages are the pages other scripts add (access.js): hash -> {nav, render}.
  const pages = {};

  // cpvUI is what those scripts may use of this one.
  window.cpvUI = {
    h, fill, $, api, page, when, exact, badge, announce, keepFocus, schedule, stopPolling, errorNotice, confirmDialog,
    canOperate, canAdminister, accessBadge,
    renderToken: () => app.renderToken,
    addPage(hash, nav, render) { pages[hash] = { nav, render }; if (app.me && location.hash === hash) route(); },
  };

  // ---------- start ----------

  async function start() {
    $('#sign-out').addEventListener('click', () => signOut('You are signed out.'));
    try {
      const res = await fetch('auth/config', { cache: 'no-store', credentials: 'same-origin' });
      app.microsoft = !!(res.ok && (await res.json()).microsoft);
    } catch (e) { app.microsoft = false; }
    $('#skip-link').addEventListener('click', (ev) => {
      ev.preventDefault();
      $('#main').focus();
    });
    window.addEventListener('hashchange', route);
    route();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
