// The dashboard: a page of our own over the documented insights API.
// Signed in with a read or root client (kept in sessionStorage, sent as the
// openpanel-client-* headers, never in URLs), or opened read-only through a
// share link (/share/<id>#<token>: the token travels in a header). The view,
// range, time zone, interval and filters live in the URL, so a view can be
// reloaded, bookmarked and passed on. Every panel asks its own question and
// renders when its answer arrives; charts are SVG drawn here.
'use strict';
(() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const app = document.getElementById('app');
  const store = window.sessionStorage;
  const shareMatch = location.pathname.match(/\/share\/([^/]+)$/);
  const BASE = location.pathname.replace(/\/(dashboard|share\/[^/]+)$/, '');
  const share = shareMatch ? { id: decodeURIComponent(shareMatch[1]) } : null;
  const VIEWS = [
    ['overview', 'Overview'], ['live', 'Live'], ['funnel', 'Funnel'],
    ['retention', 'Retention'], ['events', 'Events'], ['profile', 'Profile'],
  ];
  const KPIS = [
    ['unique_visitors', 'Visitors', 'count'],
    ['total_sessions', 'Sessions', 'count'],
    ['total_screen_views', 'Page views', 'count'],
    ['total_events', 'Events', 'count'],
    ['avg_session_duration', 'Avg. session', 'duration'],
    ['bounce_rate', 'Bounce rate', 'percent', true],
    ['views_per_session', 'Views per session', 'ratio'],
  ];
  const SERIES = [
    ['unique_visitors', 'Visitors'], ['total_sessions', 'Sessions'],
    ['total_screen_views', 'Page views'], ['total_events', 'Events'],
  ];
  // Top-list panels: [dimension, tab label, filter key].
  const PANELS = [
    ['Pages', [['pages', 'Pages', 'path'], ['entry_pages', 'Entry', 'path'], ['exit_pages', 'Exit', 'path']]],
    ['Sources', [['referrers', 'Referrers', 'referrer_name'], ['referrer_types', 'Types', 'referrer_type'],
      ['utm_source', 'UTM source', 'utm_source'], ['utm_campaign', 'UTM campaign', 'utm_campaign']]],
    ['Locations', [['countries', 'Countries', 'country'], ['regions', 'Regions', 'region'], ['cities', 'Cities', 'city']]],
    ['Technology', [['browsers', 'Browsers', 'browser'], ['os', 'OS', 'os'], ['devices', 'Devices', 'device']]],
  ];
  const PRESETS = [
    ['today', 'Today'], ['yesterday', 'Yesterday'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days'],
    ['month', 'This month'], ['lastmonth', 'Last month'], ['custom', 'Custom range'],
  ];
  const OPERATORS = ['eq', 'neq', 'contains', 'gt', 'lt', 'exists'];
  const OP_TEXT = { eq: '=', neq: '≠', contains: 'contains', gt: '>', lt: '<', exists: 'exists' };

  let auth = null; // { id, secret } of a client
  let projects = [];
  let generation = 0; // answers for an older render are dropped
  let liveTimer = 0;
  let signingOut = false;

  // ---- DOM helpers ----
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    set(el, attrs);
    append(el, kids);
    return el;
  }
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG, tag);
    set(el, attrs);
    append(el, kids);
    return el;
  }
  function set(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  function append(el, kids) {
    for (const kid of kids.flat(3)) {
      if (kid == null || kid === false) continue;
      el.append(kid.nodeType ? kid : document.createTextNode(String(kid)));
    }
  }
  function clear(el, ...kids) {
    el.replaceChildren();
    append(el, kids);
    return el;
  }

  // ---- formatting ----
  const nf = new Intl.NumberFormat('en-US');
  const regionNames = Intl.DisplayNames ? new Intl.DisplayNames(['en'], { type: 'region' }) : null;
  function fmt(value, kind) {
    if (value == null || Number.isNaN(value)) return '–';
    if (kind === 'duration') {
      const t = Math.round(value);
      if (t < 60) return `${t}s`;
      const m = Math.floor(t / 60), sec = t % 60;
      return m < 60 ? `${m}m ${sec}s` : `${Math.floor(m / 60)}h ${m % 60}m`;
    }
    if (kind === 'percent') return `${value.toFixed(1)}%`;
    if (kind === 'ratio') return value.toFixed(2);
    return nf.format(value);
  }
  function compact(n) {
    if (n >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
    if (n >= 1e4) return `${+(n / 1e3).toFixed(1)}k`;
    return nf.format(n);
  }
  function label(dimension, value) {
    if (value === '') return dimension === 'referrers' ? '(direct)' : '(none)';
    if (dimension === 'countries' && regionNames && /^[A-Z]{2}$/.test(value)) {
      try { return `${regionNames.of(value)} (${value})`; } catch (e) { return value; }
    }
    return value;
  }
  function when(unix, tz) {
    return new Date(unix * 1000).toLocaleString('en-GB', { timeZone: tz, dateStyle: 'medium', timeStyle: 'medium' });
  }

  // ---- URL state ----
  function params() { return new URLSearchParams(location.search); }
  function param(name, fallback) { return params().get(name) || fallback; }
  function go(changes, push = true) {
    const p = params();
    for (const [k, v] of Object.entries(changes)) {
      if (v == null || v === '') p.delete(k); else p.set(k, v);
    }
    const url = `${location.pathname}?${p}${location.hash}`;
    if (push) history.pushState(null, '', url); else history.replaceState(null, '', url);
    render();
  }
  function filters() {
    try {
      const f = JSON.parse(param('filters', '[]'));
      return Array.isArray(f) ? f : [];
    } catch (e) { return []; }
  }
  function setFilters(list) { go({ filters: list.length ? JSON.stringify(list) : null }); }
  function timezone() {
    return param('tz', Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC');
  }

  // ---- dates (YYYY-MM-DD strings, computed in UTC to stay calendar-exact) ----
  const day = (text) => new Date(`${text}T00:00:00Z`);
  const iso = (date) => date.toISOString().slice(0, 10);
  const addDays = (text, n) => { const d = day(text); d.setUTCDate(d.getUTCDate() + n); return iso(d); };
  const daysBetween = (a, b) => Math.round((day(b) - day(a)) / 86400000);
  function today(tz) {
    try {
      return new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date());
    } catch (e) { return iso(new Date()); }
  }
  function range() {
    const tz = timezone();
    const t = today(tz);
    const preset = param('range', '7d');
    const month = t.slice(0, 8) + '01';
    switch (preset) {
      case 'today': return { preset, start: t, end: t, tz };
      case 'yesterday': return { preset, start: addDays(t, -1), end: addDays(t, -1), tz };
      case '30d': return { preset, start: addDays(t, -29), end: t, tz };
      case 'month': return { preset, start: month, end: t, tz };
      case 'lastmonth': {
        const end = addDays(month, -1);
        return { preset, start: end.slice(0, 8) + '01', end, tz };
      }
      case 'custom': {
        const ok = (v) => /^\d{4}-\d{2}-\d{2}$/.test(v || '');
        let start = param('from'), end = param('to');
        if (!ok(start)) start = addDays(t, -6);
        if (!ok(end)) end = t;
        if (end < start) [start, end] = [end, start];
        return { preset, start, end, tz };
      }
      default: return { preset: '7d', start: addDays(t, -6), end: t, tz };
    }
  }
  function previous(r) {
    const n = daysBetween(r.start, r.end) + 1;
    return { start: addDays(r.start, -n), end: addDays(r.start, -1), tz: r.tz };
  }
  function rangeQuery(r, extra) {
    const q = { startDate: r.start, endDate: r.end, timezone: r.tz };
    const f = filters();
    if (f.length) q.filters = JSON.stringify(f);
    return Object.assign(q, extra || {});
  }

  // ---- the API ----
  class Failure extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  function shareSecret(kind) { return store.getItem(`analytics:share:${share.id}:${kind}`) || ''; }
  function headers() {
    if (share) {
      const h = { 'x-share-token': shareSecret('token') };
      const key = shareSecret('key');
      if (key) h['x-share-key'] = key;
      return h;
    }
    return auth ? { 'openpanel-client-id': auth.id, 'openpanel-client-secret': auth.secret } : {};
  }
  function project() {
    if (share) return share.project && share.project.id;
    const wanted = param('project');
    return (projects.find((p) => p.id === wanted) || projects[0] || {}).id;
  }
  function endpointUrl(endpoint, query) {
    const p = encodeURIComponent(project());
    const root = share ? `${BASE}/share/${encodeURIComponent(share.id)}/insights/${p}` : `${BASE}/insights/${p}`;
    return `${root}/${endpoint}${query ? `?${new URLSearchParams(query)}` : ''}`;
  }
  // `quiet`: a refusal is the caller's to show (login and share forms).
  async function request(url, options = {}, quiet = false) {
    let res;
    try {
      res = await fetch(url, Object.assign({ cache: 'no-store', credentials: 'omit' }, options,
        { headers: Object.assign(headers(), options.headers || {}) }));
    } catch (e) {
      throw new Failure(0, 'Cannot reach the server. Check the connection and retry.');
    }
    if (!res.ok) throw await failure(res, quiet);
    return res;
  }
  async function api(endpoint, query, body, quiet) {
    const options = body ? { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {};
    const res = await request(endpointUrl(endpoint, query), options, quiet);
    return res.json();
  }
  async function failure(res, quiet) {
    let body = {};
    try { body = await res.json(); } catch (e) { /* not JSON */ }
    const said = body.error || res.statusText || 'no reason given';
    let message;
    switch (res.status) {
      case 400: message = `The request was refused: ${said}${body.field ? ` (${body.field})` : ''}.`; break;
      case 401: message = share ? `This share link was refused: ${said}.`
        : `Your credentials were refused (${said}). They may have expired or been revoked: sign in again.`; break;
      case 403: message = `Not allowed: ${said}.`; break;
      case 404: message = share ? 'This share link does not exist or was revoked.' : `Not found: ${said}.`; break;
      case 429: message = `Rate limited: ${said}. Wait a moment, then retry.`; break;
      case 503: message = `The server is busy or its database is unavailable (${said}). Retry shortly.`; break;
      case 504: message = `The query timed out (${said}). Try a shorter range or fewer filters.`; break;
      default: message = `The server answered ${res.status}: ${said}.`;
    }
    const error = new Failure(res.status, message);
    if (!quiet && (res.status === 401 || (share && res.status === 404))) setTimeout(() => refused(error));
    return error;
  }
  // Credentials that stopped working: back to the login (or password) form, once.
  function refused(error) {
    if (signingOut) return;
    signingOut = true;
    generation++;
    clearInterval(liveTimer);
    if (share) {
      store.removeItem(`analytics:share:${share.id}:key`);
      startShare();
    } else {
      signOut(error.message);
    }
  }

  // ---- panels ----
  function state(text, kind) { return h('p', { class: `state${kind ? ` ${kind}` : ''}`, role: kind === 'error' ? 'alert' : 'status', text }); }
  // Runs `ask`, then `show` with its answer in `body`; a loading line meanwhile,
  // an error with a retry button on failure.
  function load(body, ask, show) {
    const gen = generation;
    body.setAttribute('data-state', 'loading');
    clear(body, state('Loading…'));
    ask().then((answer) => {
      if (gen !== generation) return;
      clear(body);
      show(answer);
      if (body.getAttribute('data-state') === 'loading') body.setAttribute('data-state', 'ready');
    }, (error) => {
      if (gen !== generation) return;
      body.setAttribute('data-state', 'error');
      const p = state(error.message, 'error');
      if (error.status !== 401) p.append(h('button', { type: 'button', text: 'Retry', onclick: () => load(body, ask, show) }));
      clear(body, p);
    });
  }
  function empty(body, text) {
    body.setAttribute('data-state', 'empty');
    body.append(state(text || 'No data for this range and these filters.'));
  }
  function card(title, attrs, ...kids) {
    return h('section', Object.assign({ class: 'card', 'aria-label': title }, attrs || {}), kids);
  }
  function download(name, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = h('a', { href: url, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  }
  function csv(rows) {
    const cell = (v) => (/[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
    return ['value,views,unique_visitors,sessions']
      .concat(rows.map((r) => [r.value, r.views, r.unique_visitors, r.sessions].map(cell).join(',')))
      .join('\n') + '\n';
  }

  // ---- login ----
  function startClient() {
    auth = store.getItem('analytics:client') ? JSON.parse(store.getItem('analytics:client')) : null;
    if (!auth) return showLogin();
    request(`${BASE}/insights/projects`).then((res) => res.json()).then((answer) => {
      projects = answer.projects;
      auth.type = answer.client_type;
      render();
    }, (error) => {
      if (error.status !== 401) showLogin(error.message);
    });
  }
  function showLogin(message) {
    generation++;
    const error = h('p', { class: 'error', role: 'alert', id: 'login-error', text: message || '' });
    const id = h('input', { id: 'client-id', name: 'client-id', required: true, autocomplete: 'username', spellcheck: 'false' });
    const secret = h('input', { id: 'client-secret', name: 'client-secret', type: 'password', required: true, autocomplete: 'current-password' });
    const submit = h('button', { class: 'primary', type: 'submit', text: 'Sign in' });
    const form = h('form', {
      onsubmit: (e) => {
        e.preventDefault();
        submit.disabled = true;
        error.textContent = '';
        auth = { id: id.value.trim(), secret: secret.value.trim() };
        request(`${BASE}/insights/projects`, {}, true).then((res) => res.json()).then((answer) => {
          store.setItem('analytics:client', JSON.stringify(auth));
          projects = answer.projects;
          signingOut = false;
          render();
        }, (failed) => {
          auth = null;
          submit.disabled = false;
          error.textContent = failed.status === 403
            ? 'This client may not read insights: sign in with a read or root client (write clients only send events).'
            : failed.status === 401 ? 'Wrong client id or secret.' : failed.message;
        });
      },
    },
    h('label', { class: 'field', for: 'client-id' }, 'Client id', id),
    h('label', { class: 'field', for: 'client-secret' }, 'Client secret', secret),
    submit, error);
    clear(app, h('main', { class: 'login' }, card('Sign in',
      null, h('h1', { text: 'Analytics' }),
      h('p', { text: 'Sign in with a read or root client of your project. The secret stays in this tab (sessionStorage) and is sent only as a request header.' }),
      form)));
    id.focus();
  }
  function signOut(message) {
    store.removeItem('analytics:client');
    auth = null;
    projects = [];
    showLogin(message);
  }

  // ---- share links ----
  function startShare() {
    const fromHash = location.hash.slice(1);
    if (fromHash) store.setItem(`analytics:share:${share.id}:token`, fromHash);
    if (!shareSecret('token')) {
      clear(app, h('main', { class: 'login' }, card('Share link', null,
        h('p', { class: 'error', role: 'alert', text: 'This share link is incomplete: it needs the part after “#”.' }))));
      return;
    }
    request(`${BASE}/share/${encodeURIComponent(share.id)}/info`, {}, true).then((res) => res.json()).then((info) => {
      if (info.unlocked) {
        share.project = info.project;
        signingOut = false;
        render();
      } else {
        showPassword();
      }
    }, (error) => showShareError(error.message));
  }
  function showShareError(message) {
    generation++;
    clear(app, h('main', { class: 'login' }, card('Share link', null,
      h('h1', { text: 'Analytics' }), h('p', { class: 'error', role: 'alert', text: message }))));
  }
  function showPassword(message) {
    generation++;
    const error = h('p', { class: 'error', role: 'alert', id: 'password-error', text: message || '' });
    const password = h('input', { id: 'share-password', type: 'password', required: true, autocomplete: 'current-password' });
    const submit = h('button', { class: 'primary', type: 'submit', text: 'Open' });
    const form = h('form', {
      onsubmit: (e) => {
        e.preventDefault();
        submit.disabled = true;
        request(`${BASE}/share/${encodeURIComponent(share.id)}/unlock`, {
          method: 'POST', body: JSON.stringify({ password: password.value }), headers: { 'content-type': 'application/json' },
        }, true).then((res) => res.json()).then((answer) => {
          store.setItem(`analytics:share:${share.id}:key`, answer.key);
          startShare();
        }, (failed) => {
          submit.disabled = false;
          error.textContent = failed.status === 401 ? 'Wrong password.' : failed.message;
        });
      },
    }, h('label', { class: 'field', for: 'share-password' }, 'Password', password), submit, error);
    clear(app, h('main', { class: 'login' }, card('Share link', null,
      h('h1', { text: 'Analytics' }), h('p', { text: 'This shared dashboard is protected by a password.' }), form)));
    password.focus();
  }

  // ---- the frame: header, toolbar, filters ----
  function view() {
    const v = param('view', 'overview');
    return VIEWS.some(([id]) => id === v) ? v : 'overview';
  }
  function header() {
    const current = view();
    const name = share ? (share.project && share.project.name) : (projects.find((p) => p.id === project()) || {}).name;
    const nav = h('nav', { class: 'views', 'aria-label': 'Views' }, VIEWS.map(([id, text]) => h('button', {
      type: 'button', text, 'aria-current': id === current ? 'page' : null, 'data-view': id,
      onclick: () => go({ view: id === 'overview' ? null : id }),
    })));
    const right = [];
    if (!share && projects.length > 1) {
      const select = h('select', { id: 'project', onchange: () => go({ project: select.value, filters: null }) },
        projects.map((p) => h('option', { value: p.id, text: p.name, selected: p.id === project() })));
      right.push(h('label', { class: 'field', for: 'project' }, 'Project', select));
    }
    if (share) right.push(h('span', { class: 'project', text: 'Read-only shared view' }));
    else right.push(h('button', { type: 'button', text: 'Sign out', onclick: () => signOut() }));
    return h('header', { class: 'top' },
      h('h1', null, 'Analytics', name ? h('span', { class: 'project', text: ` · ${name}` }) : null),
      nav, h('span', { class: 'spacer' }), right);
  }
  function timezones(current) {
    let zones = [];
    try { zones = Intl.supportedValuesOf('timeZone'); } catch (e) { /* older browsers */ }
    return [...new Set(['UTC', current, ...zones])];
  }
  function toolbar(withRange = true) {
    const r = range();
    const bar = h('div', { class: 'toolbar' });
    if (!withRange) return bar;
    const preset = h('select', { id: 'range', onchange: () => go(preset.value === 'custom'
      ? { range: 'custom', from: r.start, to: r.end } : { range: preset.value, from: null, to: null }) },
    PRESETS.map(([id, text]) => h('option', { value: id, text, selected: id === r.preset })));
    bar.append(h('label', { for: 'range' }, 'Dates', preset));
    if (r.preset === 'custom') {
      const from = h('input', { id: 'from', type: 'date', value: r.start, onchange: () => from.value && go({ from: from.value }) });
      const to = h('input', { id: 'to', type: 'date', value: r.end, onchange: () => to.value && go({ to: to.value }) });
      bar.append(h('label', { for: 'from' }, 'From', from), h('label', { for: 'to' }, 'To', to));
    }
    const tz = h('select', { id: 'tz', class: 'tz', onchange: () => go({ tz: tz.value }) },
      timezones(r.tz).map((z) => h('option', { value: z, text: z, selected: z === r.tz })));
    bar.append(h('label', { for: 'tz' }, 'Time zone', tz));
    bar.append(h('span', { class: 'sr', role: 'status', text: `${r.start} to ${r.end}, ${r.tz}` }));
    return bar;
  }
  function chips() {
    const list = filters();
    const wrap = h('div', { class: 'chips', 'aria-label': 'Filters' });
    list.forEach((f, i) => {
      const text = `${f.key} ${OP_TEXT[f.operator || 'eq'] || f.operator}${f.operator === 'exists' ? '' : ` ${f.value}`}`;
      wrap.append(h('span', { class: 'chip', 'data-filter': f.key },
        text, h('button', { type: 'button', 'aria-label': `Remove filter ${text}`, text: '×',
          onclick: () => setFilters(list.filter((_, j) => j !== i)) })));
    });
    const key = h('input', { id: 'filter-key', placeholder: 'properties.plan', 'aria-label': 'Filter key: name, a column or properties.<key>', title: 'name, a column such as country, or properties.<key>', required: true });
    const op = h('select', { id: 'filter-op', 'aria-label': 'Operator' }, OPERATORS.map((o) => h('option', { value: o, text: OP_TEXT[o] })));
    const value = h('input', { id: 'filter-value', placeholder: 'value', 'aria-label': 'Filter value' });
    const note = h('span', { class: 'error-text', role: 'alert' });
    wrap.append(h('form', {
      class: 'add-filter',
      onsubmit: (e) => {
        e.preventDefault();
        const k = key.value.trim();
        if (!/^(properties\.[^\s]+|[a-z_]+)$/.test(k)) { note.textContent = 'Use name, a column such as country, or properties.<key>.'; return; }
        let v = value.value;
        if (op.value === 'gt' || op.value === 'lt') {
          v = Number(v);
          if (!Number.isFinite(v)) { note.textContent = '> and < compare numbers.'; return; }
        }
        const f = { key: k, operator: op.value };
        if (op.value !== 'exists') f.value = v;
        setFilters(list.concat([f]));
      },
    }, h('span', { class: 'legend-text', 'aria-hidden': 'true', text: 'Filter' }), key, op, value, h('button', { type: 'submit', text: 'Add filter' }), note));
    return wrap;
  }
  function addFilter(key, value) {
    const list = filters().filter((f) => !(f.key === key && (f.operator || 'eq') === 'eq'));
    setFilters(list.concat([{ key, operator: 'eq', value }]));
  }

  // ---- overview ----
  function overview(main) {
    const r = range();
    const kpis = h('div', { class: 'kpis', id: 'kpis', 'data-state': 'loading' });
    main.append(kpis);
    load(kpis, () => api('metrics', rangeQuery(r)), (m) => {
      kpis.setAttribute('data-state', 'ready');
      for (const [key, text, kind, lowerIsBetter] of KPIS) {
        const now = m.current[key], before = m.previous[key];
        let change = 'no previous data', cls = '';
        if (before > 0) {
          const pct = ((now - before) / before) * 100;
          if (Math.abs(pct) < 0.05) change = 'no change vs previous period';
          else {
            change = `${pct > 0 ? '▲' : '▼'} ${Math.abs(pct).toFixed(1)}% vs previous period`;
            cls = (pct > 0) !== !!lowerIsBetter ? 'good' : 'bad';
          }
        } else if (now > 0) change = 'new in this period';
        kpis.append(h('div', { class: 'card kpi', 'data-kpi': key, 'data-value': now },
          h('h2', { text }), h('div', { class: 'value', text: fmt(now, kind) }),
          h('div', { class: `change ${cls}`, text: change, title: `previous period: ${fmt(before, kind)}` })));
      }
    });
    main.append(chart(r));
    const grid = h('div', { class: 'grid' });
    PANELS.forEach(([title, tabs], i) => grid.append(topPanel(r, title, tabs, i)));
    main.append(grid);
  }

  function chart(r) {
    const days = daysBetween(r.start, r.end) + 1;
    let interval = param('interval', days <= 2 ? 'hour' : 'day');
    if (interval === 'hour' && days > 31) interval = 'day';
    const metric = SERIES.some(([k]) => k === param('metric')) ? param('metric') : 'unique_visitors';
    const body = h('div', { class: 'chart', id: 'chart' });
    const intervals = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Interval' },
      ['hour', 'day', 'week', 'month'].map((i) => h('button', {
        type: 'button', text: i, 'aria-pressed': String(i === interval), disabled: i === 'hour' && days > 31,
        onclick: () => go({ interval: i }, false),
      })));
    const pick = h('select', { id: 'metric', 'aria-label': 'Chart metric', onchange: () => go({ metric: pick.value }, false) },
      SERIES.map(([k, text]) => h('option', { value: k, text, selected: k === metric })));
    const section = card('Over time', { id: 'timeseries' },
      h('header', null, h('h2', { text: 'Over time' }), h('div', { class: 'tabs' }, pick, intervals)),
      body,
      h('div', { class: 'legend' }, h('span', null, h('span', { class: 'swatch' }), 'This period'),
        h('span', null, h('span', { class: 'swatch faint' }), 'Previous period')));
    const before = previous(r);
    load(body, () => Promise.all([
      api('timeseries', rangeQuery(r, { interval })),
      api('timeseries', rangeQuery(before, { interval })).catch(() => ({ series: [] })),
    ]), ([now, then]) => {
      const draw = () => drawChart(body, now.series, then.series, metric, interval);
      draw();
      if (window.ResizeObserver) {
        let width = body.clientWidth;
        new ResizeObserver(() => { if (Math.abs(body.clientWidth - width) > 8) { width = body.clientWidth; draw(); } }).observe(body);
      }
    });
    return section;
  }

  function drawChart(body, series, earlier, metric, interval) {
    const W = Math.max(280, body.clientWidth || 600), H = 240, L = 44, R = 12, T = 12, B = 28;
    const values = series.map((b) => b[metric]);
    const before = earlier.slice(0, series.length).map((b) => b[metric]);
    const max = Math.max(1, ...values, ...before);
    const step = Math.pow(10, Math.floor(Math.log10(max)));
    const top = Math.ceil(max / step) * step;
    const x = (i) => L + (series.length > 1 ? (i * (W - L - R)) / (series.length - 1) : (W - L - R) / 2);
    const y = (v) => T + (H - T - B) * (1 - v / top);
    const line = (vals) => vals.map((v, i) => `${i ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join('');
    const name = (SERIES.find(([k]) => k === metric) || [])[1];
    const total = values.reduce((a, b) => a + b, 0);
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${name} per ${interval}: ${nf.format(total)} in all over ${series.length} buckets` });
    for (let k = 0; k <= 4; k++) {
      const v = (top * k) / 4;
      svg.append(s('line', { class: 'grid-line', x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        s('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end', text: compact(v) }));
    }
    const labels = Math.min(series.length, Math.max(2, Math.floor((W - L - R) / 90)));
    for (let k = 0; k < labels; k++) {
      const i = labels > 1 ? Math.round((k * (series.length - 1)) / (labels - 1)) : 0;
      const b = series[i];
      if (!b) continue;
      const text = interval === 'hour' ? b.date.slice(5, 13).replace('T', ' ') + 'h' : interval === 'month' ? b.date.slice(0, 7) : b.date.slice(5);
      svg.append(s('text', { x: x(i), y: H - 8, 'text-anchor': k === 0 && labels > 1 ? 'start' : k === labels - 1 && labels > 1 ? 'end' : 'middle', text }));
    }
    if (before.length) svg.append(s('path', { class: 'before', d: line(before) }));
    if (values.length) {
      svg.append(s('path', { class: 'area', d: `${line(values)}L${x(values.length - 1)},${y(0)}L${x(0)},${y(0)}Z` }),
        s('path', { class: 'now', d: line(values) }));
      if (values.length <= 62) {
        series.forEach((b, i) => svg.append(s('circle', { class: 'dot', cx: x(i), cy: y(values[i]), r: 3 },
          s('title', { text: `${b.date}: ${nf.format(values[i])}${before[i] != null ? ` (previous period ${nf.format(before[i])})` : ''}` }))));
      }
    }
    clear(body, svg);
    if (!total && !before.some((v) => v > 0)) empty(body, 'No events in this range.');
  }

  function topPanel(r, title, tabs, index) {
    const wanted = param(`tab${index}`);
    const active = tabs.find(([d]) => d === wanted) || tabs[0];
    const [dimension, , key] = active;
    const body = h('div', { 'data-dimension': dimension });
    const tabBar = h('div', { class: 'tabs', role: 'tablist', 'aria-label': title }, tabs.map(([d, text]) => h('button', {
      type: 'button', role: 'tab', text, 'aria-selected': String(d === dimension),
      onclick: () => go({ [`tab${index}`]: d === tabs[0][0] ? null : d }, false),
    })));
    const more = h('button', { type: 'button', text: 'More', 'aria-haspopup': 'dialog', onclick: () => moreDialog(r, active) });
    const section = card(title, { id: `panel-${dimension}` },
      h('header', null, h('h2', { text: title }), tabBar), body, h('div', { class: 'list-foot' }, more));
    load(body, () => api(`top/${dimension}`, rangeQuery(r, { limit: 10 })), (answer) => {
      if (!answer.rows.length) return empty(body);
      body.append(rows(answer.rows, dimension, key));
    });
    return section;
  }

  function rows(list, dimension, key) {
    const max = Math.max(1, ...list.map((row) => row.views));
    return h('ol', { class: 'rows' }, list.map((row) => {
      const bar = h('span', { class: 'bar' });
      bar.style.width = `${(100 * row.views) / max}%`;
      const text = label(dimension, row.value);
      return h('li', null, h('button', {
        type: 'button', class: 'row', 'data-value': row.value, 'data-views': row.views,
        title: `${text}: ${nf.format(row.views)} views, ${nf.format(row.unique_visitors)} visitors. Click to filter.`,
        'aria-label': `${text}, ${nf.format(row.views)} views. Filter by this value`,
        onclick: () => { const d = document.querySelector('dialog[open]'); if (d) d.close(); addFilter(key, row.value); },
      }, bar, h('span', { class: 'label', text }), h('span', { class: 'num', text: nf.format(row.views) })));
    }));
  }

  function moreDialog(r, [dimension, text, key]) {
    const body = h('div', { 'data-dimension': dimension });
    const save = h('button', { type: 'button', text: 'Download CSV', disabled: true });
    const close = h('button', { type: 'button', text: 'Close', onclick: () => dialog.close() });
    const dialog = h('dialog', { 'aria-label': `${text}: top 100` },
      h('header', { class: 'card-head' }, h('h2', { text: `${text} · ${r.start} to ${r.end}` })), body,
      h('div', { class: 'list-foot' }, save, close));
    dialog.addEventListener('close', () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
    load(body, () => api(`top/${dimension}`, rangeQuery(r, { limit: 100 })), (answer) => {
      if (!answer.rows.length) return empty(body);
      body.append(rows(answer.rows, dimension, key));
      save.disabled = false;
      save.onclick = () => download(`${dimension}-${r.start}-${r.end}.csv`, 'text/csv', csv(answer.rows));
    });
    close.focus();
  }

  // ---- live ----
  function live(main) {
    const body = h('div', { id: 'live', 'aria-live': 'polite' });
    const counts = [];
    main.append(card('Live', null, h('h2', { text: 'Visitors in the last 5 minutes' }), body,
      h('p', { class: 'state', text: 'Refreshed every 10 seconds.' })));
    const tick = () => load(body, () => api('live'), (answer) => {
      counts.push(answer.count);
      if (counts.length > 30) counts.shift();
      const W = 300, H = 40, max = Math.max(1, ...counts);
      const d = counts.map((v, i) => `${i ? 'L' : 'M'}${(i * W) / 29},${H - 2 - ((H - 4) * v) / max}`).join('');
      body.append(h('div', { class: 'big', 'data-value': answer.count, text: nf.format(answer.count) }),
        h('div', { class: 'chart' }, s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Recent counts', class: 'spark' },
          s('path', { class: 'now', d }))),
        h('p', { class: 'state', text: `Updated ${new Date().toLocaleTimeString()}` }));
    });
    tick();
    liveTimer = setInterval(tick, 10000);
  }

  // ---- funnel ----
  function funnelSpec() {
    try {
      const f = JSON.parse(param('funnel', ''));
      if (f && Array.isArray(f.steps)) return f;
    } catch (e) { /* none yet */ }
    return { steps: [{ name: 'screen_view' }, { name: '' }], window: 86400, groupBy: 'session' };
  }
  function funnel(main) {
    const r = range();
    const spec = funnelSpec();
    const stepsBox = h('div', { class: 'steps' });
    const stepRow = (step, i) => {
      const f = (step.filters || [])[0] || {};
      return h('div', { class: 'step-row', 'data-step': i },
        h('label', { class: 'field' }, `Step ${i + 1} event`, h('input', { name: 'name', required: true, value: step.name || '', placeholder: 'event name' })),
        h('label', { class: 'field' }, 'Property (optional)', h('input', { name: 'key', value: f.key ? f.key.replace(/^properties\./, '') : '', placeholder: 'plan' })),
        h('label', { class: 'field' }, 'equals', h('input', { name: 'value', value: f.value == null ? '' : f.value, placeholder: 'pro' })),
        h('button', { type: 'button', 'aria-label': `Remove step ${i + 1}`, text: 'Remove', onclick: (e) => {
          if (stepsBox.children.length > 2) { e.target.closest('.step-row').remove(); renumber(); }
        } }));
    };
    const renumber = () => [...stepsBox.children].forEach((row, i) => {
      row.querySelector('label').firstChild.textContent = `Step ${i + 1} event`;
    });
    spec.steps.forEach((step, i) => stepsBox.append(stepRow(step, i)));
    const windowSelect = h('select', { id: 'funnel-window' }, [[3600, '1 hour'], [86400, '1 day'], [604800, '7 days'], [2592000, '30 days']]
      .map(([v, t]) => h('option', { value: v, text: t, selected: Number(spec.window) === v })));
    const group = h('select', { id: 'funnel-group' }, [['session', 'Same session'], ['profile', 'Same person']]
      .map(([v, t]) => h('option', { value: v, text: t, selected: spec.groupBy === v })));
    const note = h('p', { class: 'error-text', role: 'alert' });
    const form = h('form', {
      onsubmit: (e) => {
        e.preventDefault();
        const steps = [...stepsBox.children].map((row) => {
          const name = row.querySelector('[name=name]').value.trim();
          const key = row.querySelector('[name=key]').value.trim();
          const value = row.querySelector('[name=value]').value;
          return key ? { name, filters: [{ key: `properties.${key}`, operator: 'eq', value }] } : { name };
        });
        if (steps.length < 2 || steps.length > 10) { note.textContent = 'A funnel has 2 to 10 steps.'; return; }
        go({ funnel: JSON.stringify({ steps, window: Number(windowSelect.value), groupBy: group.value }) });
      },
    }, stepsBox,
    h('div', { class: 'toolbar' },
      h('button', { type: 'button', text: 'Add step', onclick: () => {
        if (stepsBox.children.length < 10) stepsBox.append(stepRow({}, stepsBox.children.length));
        else note.textContent = 'At most 10 steps.';
      } }),
      h('label', { for: 'funnel-window' }, 'Within', windowSelect),
      h('label', { for: 'funnel-group' }, 'Counted per', group),
      h('button', { class: 'primary', type: 'submit', text: 'Show funnel' })), note);
    const body = h('div', { id: 'funnel', class: 'funnel' });
    main.append(card('Funnel', null, h('h2', { text: 'Funnel' }), form),
      card('Funnel result', null, h('h2', { text: `Result · ${r.start} to ${r.end}` }), body));
    if (!param('funnel')) return clear(body, state('Pick the steps, then “Show funnel”.'));
    load(body, () => api('funnel', null, { startDate: r.start, endDate: r.end, timezone: r.tz, steps: spec.steps, window: Number(spec.window), groupBy: spec.groupBy }), (answer) => {
      const first = Math.max(1, answer.steps[0] ? answer.steps[0].count : 0);
      if (!answer.steps[0] || !answer.steps[0].count) empty(body, 'Nobody took the first step in this range.');
      answer.steps.forEach((step, i) => {
        const fill = h('div', { class: 'fill' });
        fill.style.width = `${(100 * step.count) / first}%`;
        const prev = i ? answer.steps[i - 1].count : 0;
        const lost = prev - step.count;
        body.append(h('div', { class: 'step', 'data-step': i, 'data-count': step.count },
          h('div', null, h('strong', { text: `${i + 1}. ${step.name}` }), h('br'),
            h('span', { text: `${nf.format(step.count)} · ${step.conversion_rate.toFixed(1)}%` })),
          h('div', { class: 'track', 'aria-hidden': 'true' }, fill),
          i ? h('div', { class: 'drop', text: `▼ ${nf.format(lost)} dropped off (${prev ? ((100 * lost) / prev).toFixed(1) : '0.0'}% of step ${i})` }) : null));
      });
    });
  }

  // ---- retention ----
  function retention(main) {
    const r = range();
    const period = param('period', 'day') === 'week' ? 'week' : 'day';
    const pick = h('div', { class: 'tabs', role: 'group', 'aria-label': 'Cohort period' }, ['day', 'week'].map((p) => h('button', {
      type: 'button', text: `By ${p}`, 'aria-pressed': String(p === period), onclick: () => go({ period: p === 'day' ? null : p }, false),
    })));
    const body = h('div', { id: 'retention', class: 'scroll retention' });
    main.append(card('Retention', null, h('header', null, h('h2', { text: 'Retention: visitors coming back' }), pick), body));
    load(body, () => api('retention', rangeQuery(r, { period })), (answer) => {
      if (!answer.cohorts.length) return empty(body);
      const width = Math.max(...answer.cohorts.map((c) => c.retained.length));
      const table = h('table', null, h('thead', null, h('tr', null, h('th', { text: 'Cohort' }), h('th', { class: 'num', text: 'Visitors' }),
        Array.from({ length: width }, (_, i) => h('th', { class: 'num', text: `${period === 'day' ? 'Day' : 'Week'} ${i}` })))));
      const tbody = h('tbody');
      for (const c of answer.cohorts) {
        const tr = h('tr', { 'data-cohort': c.date }, h('th', { text: c.date }), h('td', { class: 'num', text: nf.format(c.size) }));
        c.retained.forEach((n, i) => {
          const rate = c.size ? n / c.size : 0;
          const td = h('td', { class: rate > 0.55 ? 'cell strong' : 'cell', 'data-period': i, 'data-value': n, title: `${nf.format(n)} of ${nf.format(c.size)}`, text: `${(100 * rate).toFixed(0)}%` });
          td.style.background = `rgba(var(--shade), ${(0.08 + 0.8 * rate).toFixed(2)})`;
          tr.append(td);
        });
        tbody.append(tr);
      }
      table.append(tbody);
      body.append(table);
    });
  }

  // ---- events and profiles ----
  function eventTable(body, query, onProfile) {
    const tz = timezone();
    const tbody = h('tbody');
    const detail = (e) => {
      let props = e.properties;
      try { props = JSON.parse(props); } catch (err) { /* as stored */ }
      return h('tr', { class: 'detail' }, h('td', { colspan: 5 }, h('pre', { text: JSON.stringify(Object.assign({}, e, { properties: props }), null, 2) })));
    };
    const more = h('button', { type: 'button', text: 'Load more' });
    const table = h('div', { class: 'scroll' }, h('table', { class: 'events' },
      h('thead', null, h('tr', null, ['Time', 'Event', 'Path', 'Where', 'Who'].map((t) => h('th', { text: t })))), tbody));
    const page = (cursor) => load(foot, () => api('events', Object.assign({}, query, cursor ? { cursor } : {}, { limit: 50 })), (answer) => {
      if (!answer.events.length && !cursor) { empty(foot, 'No events in this range.'); return; }
      for (const e of answer.events) {
        const who = e.profile_id
          ? h('button', { type: 'button', text: e.profile_id, onclick: (ev) => { ev.stopPropagation(); onProfile(e.profile_id); } })
          : h('span', { text: `device ${String(e.device_id).slice(0, 10)}` });
        const tr = h('tr', { class: 'event', tabindex: 0, 'data-id': e.id, 'aria-expanded': 'false' },
          h('td', { text: when(e.created_at, tz) }), h('td', { text: e.name }), h('td', { text: e.path }),
          h('td', { text: [e.country, e.browser].filter(Boolean).join(' · ') }), h('td', null, who));
        const toggle = () => {
          const open = tr.nextSibling && tr.nextSibling.classList && tr.nextSibling.classList.contains('detail');
          if (open) tr.nextSibling.remove(); else tr.after(detail(e));
          tr.setAttribute('aria-expanded', String(!open));
        };
        tr.addEventListener('click', toggle);
        tr.addEventListener('keydown', (k) => { if (k.key === 'Enter' || k.key === ' ') { k.preventDefault(); toggle(); } });
        tbody.append(tr);
      }
      if (answer.next) { more.onclick = () => page(answer.next); foot.append(more); }
    });
    const foot = h('div', { class: 'list-foot' });
    body.append(table, foot);
    page(null);
  }
  function events(main) {
    const r = range();
    const exporting = h('span', { class: 'state', role: 'status' });
    const exportButton = h('button', {
      type: 'button', text: 'Export NDJSON',
      onclick: () => {
        exporting.textContent = 'Exporting…';
        request(endpointUrl('events', rangeQuery(r, { format: 'ndjson' }))).then((res) => res.text()).then((text) => {
          download(`events-${r.start}-${r.end}.ndjson`, 'application/x-ndjson', text);
          exporting.textContent = `Exported ${nf.format(text.split('\n').filter(Boolean).length)} events.`;
        }, (error) => { exporting.textContent = error.message; });
      },
    });
    const body = h('div', { id: 'events' });
    main.append(card('Events', null, h('header', null, h('h2', { text: 'Events, newest first' }), h('div', null, exportButton, exporting)), body));
    eventTable(body, rangeQuery(r), (id) => go({ view: 'profile', profile: id }));
  }
  function profile(main) {
    const r = range();
    const id = param('profile', '');
    const input = h('input', { id: 'profile-id', value: id, required: true, placeholder: 'user-42' });
    main.append(card('Profile', null, h('h2', { text: 'Profile' }), h('form', {
      class: 'toolbar', onsubmit: (e) => { e.preventDefault(); go({ profile: input.value.trim() }); },
    }, h('label', { for: 'profile-id' }, 'Profile id', input), h('button', { class: 'primary', type: 'submit', text: 'Look up' }))));
    if (!id) return;
    const body = h('div', { id: 'profile' });
    main.append(card('Profile details', null, body));
    load(body, () => api(`profiles/${encodeURIComponent(id)}`, null, null, true).catch((e) => {
      if (e.status === 404) return null;
      throw e;
    }), (p) => {
      if (!p) return empty(body, `No profile ${id} in this project.`);
      let props = p.properties;
      if (typeof props === 'string') { try { props = JSON.parse(props); } catch (e) { /* as stored */ } }
      const name = [p.first_name, p.last_name].filter(Boolean).join(' ');
      const rowsOf = [['Id', p.id], ['Name', name || '–'], ['Email', p.email || '–'],
        ['First seen', p.first_seen ? when(p.first_seen, r.tz) : '–'], ['Last seen', p.last_seen ? when(p.last_seen, r.tz) : '–'],
        ['Events', nf.format(p.event_count)], ['Aliases', p.aliases.length ? p.aliases.join(', ') : '–']];
      body.append(h('dl', { class: 'traits' }, rowsOf.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])),
        h('h2', { text: 'Traits' }), h('pre', { text: JSON.stringify(props || {}, null, 2) }));
    });
    const list = h('div');
    main.append(card('Profile events', null, h('h2', { text: `Events of ${id} (${r.start} to ${r.end})` }), list));
    const f = filters().concat([{ key: 'profile_id', operator: 'eq', value: id }]);
    eventTable(list, Object.assign(rangeQuery(r), { filters: JSON.stringify(f) }), (other) => go({ profile: other }));
  }

  // ---- render ----
  function render() {
    generation++;
    signingOut = false;
    clearInterval(liveTimer);
    if (!project()) {
      clear(app, h('main', { class: 'login' }, card('No project', null, h('p', { class: 'error', role: 'alert', text: 'This client can read no project.' }))));
      return;
    }
    const current = view();
    const main = h('main', { id: 'main', 'data-view': current });
    const usesRange = current !== 'live';
    const frame = [header(), toolbar(usesRange)];
    if (['overview', 'events', 'retention'].includes(current)) frame.push(chips());
    clear(app, frame, main);
    // Complete the URL, so that it reproduces this view when passed on.
    const p = params();
    if (!p.get('range') || !p.get('tz') || (!share && !p.get('project'))) {
      const r = range();
      p.set('range', r.preset);
      p.set('tz', r.tz);
      if (!share) p.set('project', project());
      history.replaceState(null, '', `${location.pathname}?${p}${location.hash}`);
    }
    ({ overview, live, funnel, retention, events, profile })[current](main);
  }

  window.addEventListener('popstate', () => { if (share ? share.project : auth) render(); });
  if (share) startShare(); else startClient();
})();
