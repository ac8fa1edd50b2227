// belay reviewer console. Every string from the API is attacker-controlled: it only
// reaches the page as text nodes (see vis/el), never as markup.
'use strict';
(() => {
const DANGER_ENV = new Set(['LD_PRELOAD', 'LD_LIBRARY_PATH', 'LD_AUDIT', 'PATH', 'BASH_ENV', 'ENV',
  'PYTHONPATH', 'PYTHONSTARTUP', 'NODE_OPTIONS', 'PERL5OPT', 'RUBYOPT']);
const CTRL = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g;
const SCOPES = [['once', 'This request only'], ['agent:1800', 'This agent, 30 minutes'],
  ['agent:3600', 'This agent, 1 hour'], ['host:1800', 'Any agent on this host, 30 minutes'],
  ['host:3600', 'Any agent on this host, 1 hour']];
const S = {
  session: null, expired: false, page: null, pending: new Map(), incoming: null, synced: false,
  seen: new Map(), rows: new Map(), es: null, retry: 1000, detailId: null, results: new Map(), refreshT: 0,
  filters: { host: '', subject: '', owner: '', kind: 'all' }, audit: { after: 0 },
};
const $ = (id) => document.getElementById(id);

// ---- safe text and DOM
const hex = (n, w) => n.toString(16).padStart(w, '0');
const escCode = (c) => { const n = c.charCodeAt(0); return n <= 0xff ? '\\x' + hex(n, 2) : '\\u' + hex(n, 4); };
const plain = (s) => String(s ?? '').replace(CTRL, escCode);
function vis(s) {
  s = String(s);
  const f = document.createDocumentFragment();
  let last = 0;
  for (const m of s.matchAll(CTRL)) {
    if (m.index > last) f.append(document.createTextNode(s.slice(last, m.index)));
    const sp = document.createElement('span');
    sp.className = 'esc';
    sp.textContent = escCode(m[0]);
    f.append(sp);
    last = m.index + 1;
  }
  if (last < s.length) f.append(document.createTextNode(s.slice(last)));
  return f;
}
// Text with line breaks: pretty JSON we made keeps its newlines; free text shows the escape, then breaks.
const lines = (s, mark) => String(s).split('\n').flatMap((l, i) => (i ? [mark ? el('span', 'esc', '\\x0a') : null, document.createTextNode('\n'), vis(l)] : [vis(l)]));
function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  if (typeof attrs === 'string') attrs = { class: attrs };
  for (const [k, v] of Object.entries(attrs || {})) {
    if (/^on/i.test(k) || /^(style|src|srcdoc|action|formaction)$/i.test(k)) throw new Error('refused attribute ' + k);
    if (v == null || v === false) continue;
    if (k === 'href' && !/^\/(?![/\\])/.test(v)) throw new Error('refused href');
    n.setAttribute(k, v === true ? '' : /^(title|placeholder|aria-)/.test(k) ? plain(v) : String(v));
  }
  return add(n, kids);
}
function add(n, ...kids) {
  for (const k of kids.flat(Infinity)) {
    if (k == null || k === false) continue;
    n.append(k instanceof Node ? k : vis(k));
  }
  return n;
}
const td = (...k) => el('td', 0, ...k);
const on = (n, ev, fn) => { n.addEventListener(ev, fn); return n; };
const pad = (n) => String(n).padStart(2, '0');
function fmtTime(ms) {
  if (typeof ms !== 'number' || !isFinite(ms)) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fmtLeft(ms) {
  const left = Math.floor((ms - Date.now()) / 1000);
  if (!(left >= 0)) return 'expired';
  const h = Math.floor(left / 3600), m = Math.floor(left / 60) % 60, s = left % 60;
  return h ? `${h}:${pad(m)}:${pad(s)}` : `${m}:${pad(s)}`;
}
const countdown = (ms) => el('span', { class: 'countdown' + (ms <= Date.now() ? ' over' : ms - Date.now() < 15000 ? ' soon' : ''), 'data-deadline': ms }, fmtLeft(ms));
function tick() {
  const now = Date.now();
  for (const n of document.querySelectorAll('[data-deadline]')) {
    const ms = Number(n.getAttribute('data-deadline'));
    n.textContent = fmtLeft(ms);
    n.classList.toggle('over', ms <= now);
    n.classList.toggle('soon', ms > now && ms - now < 15000);
  }
  if (S.session && !S.expired && S.session.expires_at && now > S.session.expires_at) {
    S.session.expires_at = 0;
    api('/api/session').catch(() => {});
  }
}
const badge = (state) => el('span', 'badge b-' + plain(state), state);
const tag = (t) => el('span', 'tag', t);
const mono = (s) => el('code', 'mono', s);
const dash = (v) => (v == null || v === '' ? el('span', 'muted', '—') : v);
const dl = (pairs) => el('dl', 'kv', pairs.filter(Boolean).map(([k, v]) => [el('dt', 0, k), el('dd', 0, dash(v))]));
const section = (title, ...kids) => el('section', 'card', el('h2', 0, title), kids);
const reqHref = (id) => '/requests/' + encodeURIComponent(id);
const loginHref = () => '/login?next=' + encodeURIComponent(location.pathname);
const canDecide = () => ['reviewer', 'admin'].includes(S.session?.role) && !S.expired;

// ---- messages
function showError(msg) { const e = $('error'); e.textContent = ''; e.append(vis(msg)); e.hidden = false; }
function clearError() { const e = $('error'); e.hidden = true; e.textContent = ''; }

// ---- API
class ApiError extends Error { constructor(status, msg) { super(msg); this.status = status; } }
async function api(path, body) {
  const init = { credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.method = 'POST';
    init.headers['Content-Type'] = 'application/json';
    init.headers['X-Belay-CSRF'] = S.session?.csrf || '';
    init.body = JSON.stringify(body);
  }
  let res, data = null;
  try { res = await fetch(path, init); } catch { throw new ApiError(0, 'Could not reach the server. Check your connection and try again.'); }
  try { data = await res.json(); } catch { data = null; }
  if (res.status === 401) {
    if (S.session) sessionGone();
    throw new ApiError(401, 'Your session has expired. Sign in again.');
  }
  if (!res.ok) {
    throw new ApiError(res.status, data && typeof data.error === 'string' ? data.error : `The server answered ${res.status} ${res.statusText}.`);
  }
  if (!data || typeof data !== 'object') throw new ApiError(res.status, 'The server sent an unexpected (non-JSON) answer.');
  return data;
}

function sessionGone() {
  if (S.expired) return;
  S.expired = true;
  $('relogin').setAttribute('href', loginHref());
  $('session-expired').hidden = false;
  for (const b of document.querySelectorAll('.decide button, button.revoke')) b.disabled = true;
  if (S.es) { S.es.close(); S.es = null; }
  setLive('off', 'signed out');
}

// ---- event stream
function setLive(state, text) { const l = $('live'); l.setAttribute('data-state', state); l.textContent = text; }
function connect() {
  if (S.es) S.es.close();
  if (S.expired) return;
  const es = new EventSource('/api/events');
  S.es = es;
  setLive('wait', S.synced ? 'reconnecting…' : 'connecting…');
  es.addEventListener('open', () => { S.incoming = new Map(); });
  es.addEventListener('request', (e) => {
    let r;
    try { r = JSON.parse(e.data); } catch { return; }
    if (!r || typeof r.id !== 'string') return;
    for (const m of [S.pending, S.incoming]) {
      if (!m) continue;
      if (r.state === 'pending') m.set(r.id, r); else m.delete(r.id);
    }
    if (S.synced) queueChanged();
    // Only a change redraws the page: a redraw replaces the form under a reviewer's hands.
    if (S.page === 'request' && r.id === S.detailId && e.data !== S.drawnEvent) { S.drawnEvent = e.data; scheduleRefresh(); }
  });
  es.addEventListener('resync', () => { S.incoming = new Map(); });
  es.addEventListener('synced', () => {
    if (S.incoming) { S.pending = S.incoming; S.incoming = null; }
    S.synced = true;
    S.retry = 1000;
    setLive('ok', 'connected');
    queueChanged();
  });
  es.addEventListener('error', () => {
    if (es !== S.es) return;
    setLive('wait', 'reconnecting…');
    if (es.readyState !== EventSource.CLOSED) { api('/api/session').catch(() => {}); return; }
    es.close();
    S.es = null;
    setTimeout(async () => {
      try { await api('/api/session'); } catch (err) { if (err.status === 401) return; }
      connect();
    }, S.retry);
    S.retry = Math.min(S.retry * 2, 30000);
  });
}

// ---- routing
function route() {
  const p = location.pathname;
  const m = /^\/requests\/([^/]+)$/.exec(p);
  if (m) { try { return ['request', decodeURIComponent(m[1])]; } catch { return ['notfound']; } }
  return [{ '/': 'queue', '/agents': 'agents', '/grants': 'grants', '/audit': 'audit' }[p] || 'notfound'];
}
function go(path) { history.pushState(null, '', path); render(); window.scrollTo(0, 0); }
on(document, 'click', (e) => {
  const a = e.target.closest && e.target.closest('a[data-nav]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  go(a.getAttribute('href'));
});
on(window, 'popstate', () => render());

let renderSeq = 0;
function render() {
  const seq = ++renderSeq;
  clearError();
  if (!S.session) return signIn();
  const [page, arg] = route();
  S.page = page;
  S.detailId = page === 'request' ? arg : null;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.getAttribute('data-page') === page);
  const main = $('main');
  main.replaceChildren();
  if (page === 'queue') return queuePage(main);
  if (page === 'notfound') { document.title = 'belay'; return add(main, el('div', 'empty', 'No such page. ', el('a', { href: '/', 'data-nav': '' }, 'Go to the queue.'))); }
  add(main, el('p', 'muted pad', 'Loading…'));
  const load = { request: () => loadRequest(arg, seq), agents: agentsPage, grants: grantsPage, audit: auditPage }[page];
  load(seq).catch((err) => { if (seq === renderSeq) { main.replaceChildren(); showError(err.message); } });
  updateTitle();
}
const current = (seq) => seq === renderSeq;

// ---- sign in
function signIn() {
  document.title = 'Sign in · belay';
  $('main').replaceChildren(el('div', 'signin card',
    el('h1', 0, 'Sign in to belay'),
    el('p', 'muted', 'Review the actions your AI agents are waiting on: approve, deny or kill.'),
    el('a', { id: 'login', class: 'btn primary', href: loginHref() }, 'Sign in')));
}

// ---- queue
function updateTitle() {
  const n = S.pending.size;
  document.title = n ? `(${n}) belay` : 'belay';
  const c = $('nav-count');
  c.textContent = String(n);
  c.hidden = !n;
}
let queueRaf = 0;
function queueChanged() {
  updateTitle();
  if (!queueRaf) queueRaf = requestAnimationFrame(() => { queueRaf = 0; renderRows(); });
}
function queuePage(main) {
  const f = S.filters;
  const input = (key, ph) => on(el('input', { id: 'filter-' + key, type: 'search', placeholder: ph, autocomplete: 'off', 'aria-label': ph }), 'input', (e) => {
    f[key] = e.target.value; renderRows();
  });
  const inputs = [input('host', 'Host'), input('subject', 'Subject or agent'), input('owner', 'Owner')];
  inputs.forEach((i) => { i.value = f[i.id.slice(7)]; });
  const kind = on(el('select', { id: 'filter-kind', 'aria-label': 'Kind' },
    [['all', 'All kinds'], ['exec', 'exec'], ['connect', 'connect']].map(([v, t]) => el('option', { value: v }, t))),
  'change', (e) => { f.kind = e.target.value; renderRows(); });
  kind.value = f.kind;
  add(main,
    el('div', 'toolbar', el('h1', 0, 'Pending requests ', el('span', { id: 'queue-count', class: 'muted' })),
      el('div', 'filters', inputs, kind)),
    el('div', 'card flush', el('table', { id: 'queue', class: 'grid' },
      el('colgroup', {}, ['c-host', 'c-subj', 'c-owner', 'c-sum', 'c-rule', 'c-dl'].map((c) => el('col', { class: c }))),
      el('thead', 0, el('tr', 0, ['Host', 'Subject / agent', 'Owner', 'Action', 'Rule', 'Deadline'].map((h) => el('th', 0, h)))),
      el('tbody', { id: 'queue-body' })),
    el('p', { id: 'queue-more', class: 'muted small pad', hidden: true }),
    el('p', { id: 'queue-empty', class: 'empty', hidden: true })));
  renderRows();
}
function renderRows() {
  updateTitle();
  const body = $('queue-body');
  if (!body) return;
  const empty = $('queue-empty');
  const f = S.filters;
  const lc = (s) => String(s ?? '').toLowerCase();
  const q = (k) => lc(f[k]).trim();
  const all = [...S.pending.values()].sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
  const rows = all.filter((r) => lc(r.host).includes(q('host')) && lc(r.owner).includes(q('owner')) &&
    (lc(r.context?.subject).includes(q('subject')) || lc(r.agent).includes(q('subject'))) &&
    (f.kind === 'all' || r.kind === f.kind));
  // A queue of thousands is read through the filters, not scrolled: drawing only the
  // newest rows, and reusing their elements, keeps a flood of requests from starving the
  // browser (and the reviewer's machine).
  body.replaceChildren(...rows.slice(0, MAX_ROWS).map(rowFor));
  for (const id of S.rows.keys()) if (!S.pending.has(id)) { S.rows.delete(id); S.seen.delete(id); }
  const more = $('queue-more');
  more.hidden = rows.length <= MAX_ROWS;
  more.textContent = `Showing the newest ${MAX_ROWS} of ${rows.length}: filter by host, subject, owner or kind to see the others.`;
  $('queue-count').textContent = rows.length === all.length ? `${all.length}` : `${rows.length} of ${all.length}`;
  empty.hidden = rows.length > 0;
  empty.textContent = !S.synced ? 'Loading pending requests…'
    : all.length ? 'No pending request matches the filters.'
      : 'Nothing is pending. New requests appear here as soon as an agent makes them.';
}
const MAX_ROWS = 200;
/** The row of `r`, drawn again only when the request changed. */
function rowFor(r) {
  const cached = S.rows.get(r.id);
  if (cached && cached.r === r) return cached.tr;
  const tr = queueRow(r);
  S.rows.set(r.id, { r, tr });
  return tr;
}
function queueRow(r) {
  if (!S.seen.has(r.id)) S.seen.set(r.id, Date.now());
  const href = reqHref(r.id);
  const tr = el('tr', { 'data-request-id': r.id, 'data-seen-at': S.seen.get(r.id), tabindex: 0, class: 'row' },
    el('td', 'trunc', r.host),
    el('td', 'trunc', el('span', {}, r.context?.subject ?? '—'), el('div', 'muted small trunc', r.agent)),
    el('td', 'trunc', r.owner),
    td(el('div', 'sum', el('span', 'kind k-' + plain(r.kind), r.kind),
      el('a', { href, 'data-nav': '', class: 'mono trunc', title: r.summary }, r.summary))),
    el('td', 'trunc', r.rule),
    el('td', 'num', countdown(r.deadline)));
  on(tr, 'click', (e) => { if (!e.target.closest('a')) go(href); });
  on(tr, 'keydown', (e) => { if (e.key === 'Enter' && e.target === tr) go(href); });
  return tr;
}

// ---- request
function scheduleRefresh() {
  clearTimeout(S.refreshT);
  S.refreshT = setTimeout(() => { if (S.page === 'request') loadRequest(S.detailId, renderSeq).catch((e) => showError(e.message)); }, 250);
}
async function loadRequest(id, seq) {
  let d;
  try { d = await api('/api/requests/' + encodeURIComponent(id)); } catch (err) {
    if (!current(seq)) return;
    if (err.status === 404) { $('main').replaceChildren(el('div', 'empty', 'No request with this id. ', el('a', { href: '/', 'data-nav': '' }, 'Back to the queue.'))); return; }
    throw err;
  }
  if (current(seq) && d.request) drawRequest(d);
}
function drawRequest(d) {
  const r = d.request, id = r.id, pending = r.state === 'pending';
  const key = JSON.stringify(d) + (S.results.get(id) || '') + S.expired;
  if (key === S.drawnKey && $('main').querySelector('.req-head')) return;
  S.drawnKey = key;
  const ae = document.activeElement;
  const keep = { reason: $('reason')?.value, scope: $('scope')?.value, focus: ae?.id, sel: ae?.id === 'reason' ? ae.selectionStart : null };
  const ctx = r.context || {};
  const main = $('main');
  main.replaceChildren(
    el('div', 'crumbs', el('a', { href: '/', 'data-nav': '' }, '← Queue')),
    el('div', 'req-head', badge(r.state), el('span', 'kind k-' + plain(r.kind), r.kind),
      el('h1', 'mono', r.summary)),
    el('p', 'muted sub', r.host, ' · ', r.agent, ' · ', r.owner, ' · rule ', r.rule),
    el('div', 'cols',
      el('div', 'col-main', actionCard(r), r.intent ? intentBox(r.intent) : null, contextCard(r, ctx), historyCard(d.history)),
      el('div', 'col-side', decisionCard(d), section('Details', dl([
        ['Host', r.host], ['Agent', r.agent], ['Owner', r.owner], ['PID / UID', `${r.pid} / ${r.uid}`],
        ['Rule', r.rule], ['Default verdict', r.default_verdict], ['Created', fmtTime(r.created_at)],
        ['Deadline', [fmtTime(r.deadline), ' ', pending ? countdown(r.deadline) : null]], ['Request id', mono(id)]])))));
  if ($('reason') && keep.reason != null && !S.results.has(id)) $('reason').value = keep.reason;
  if ($('scope') && keep.scope) { $('scope').value = keep.scope; $('scope').dispatchEvent(new Event('change')); }
  if (keep.focus && $(keep.focus)) $(keep.focus).focus();
  if (keep.sel != null && $('reason')) $('reason').selectionStart = $('reason').selectionEnd = keep.sel;
  if ($('reason')) $('reason').dispatchEvent(new Event('input'));
  tick();
}
function actionCard(r) {
  if (r.exec) {
    const x = r.exec, env = Array.isArray(x.env) ? x.env : [];
    const name = (e) => String(e).split('=')[0];
    const danger = env.filter((e) => DANGER_ENV.has(name(e)));
    const rest = env.filter((e) => !DANGER_ENV.has(name(e)));
    return section('Exec', dl([['Path', mono(x.path)], ['Working dir', x.cwd == null ? null : mono(x.cwd)],
      [`Arguments (${(x.argv || []).length})`, el('ol', { class: 'argv', start: 0 }, (x.argv || []).map((a) => el('li', 0, el('code', 'mono', a))))],
      [`Environment (${env.length})`, env.length ? el('ul', 'env',
        danger.map((e) => el('li', 'danger', el('code', 'mono', e), el('span', 'flag', 'affects what runs'))),
        rest.map((e) => el('li', 0, el('code', 'mono', e)))) : null]]));
  }
  if (r.connect) {
    const c = r.connect, hn = r.context?.hostnames || [];
    return section('Connect', dl([['Address', mono(c.address)], ['Port', mono(String(c.port))], ['Protocol', c.protocol],
      ['Learned hostnames', hn.length ? el('ul', 'plain', hn.map((h) => el('li', 0, mono(h)))) : null]]));
  }
  return section('Action', el('p', 0, mono(r.summary)));
}
function intentBox(i) {
  return el('section', { class: 'card intent', id: 'intent' }, el('h2', 0, 'Declared by the agent — unverified'),
    el('p', 'intent-text', lines(i.text ?? '', true)),
    el('p', 'muted small', [['model', i.model], ['session', i.session_id], ['tool call', i.tool_call_id], ['user request', i.user_request_id]]
      .filter(([, v]) => v).map(([k, v]) => el('span', 'meta', k + ' ', mono(v)))));
}
function contextCard(r, c) {
  const anc = Array.isArray(c.ancestry) ? c.ancestry : [];
  const hn = r.kind !== 'connect' && c.hostnames?.length ? c.hostnames.join(', ') : null;
  return section('Process context', dl([
    ['Ancestry', anc.length ? el('ol', 'anc', anc.map((a) => el('li', {},
      el('span', 'pid mono', String(a.pid)), ' ', el('b', 0, a.comm), ' ', a.exe != null ? el('span', 'mono muted', a.exe) : null))) : null],
    ['User', c.user], ['Cgroup', c.cgroup == null ? null : mono(c.cgroup)], ['Container id', c.container_id == null ? null : mono(c.container_id)],
    ['Pod UID', c.pod_uid == null ? null : mono(c.pod_uid)], ['Cwd', c.cwd == null ? null : mono(c.cwd)], ['Subject', c.subject],
    hn ? ['Hostnames', hn] : null]));
}
function historyCard(h) {
  if (!Array.isArray(h) || !h.length) return section('Earlier decisions on this action', el('p', 'muted', 'None: this is the first time.'));
  return section('Earlier decisions on this action', el('table', { class: 'grid compact', id: 'history' },
    el('thead', 0, el('tr', 0, ['When', 'State', 'Verdict', 'Reviewer', 'Reason'].map((t) => el('th', 0, t)))),
    el('tbody', 0, h.map((x) => el('tr', 0, el('td', 'nowrap', el('a', { href: reqHref(x.id), 'data-nav': '' }, fmtTime(x.created_at))),
      td(badge(x.state)), td(dash(x.resolution?.verdict)), td(dash(x.resolution?.reviewer)),
      el('td', 'wrap', dash(x.resolution?.reason)))))));
}
function decisionCard(d) {
  const r = d.request, id = r.id, votes = Array.isArray(d.votes) ? d.votes : [], quorum = d.quorum || 1;
  const card = el('section', 'card decide', el('h2', 0, r.state === 'pending' ? 'Decision' : 'Resolution'));
  const res = S.results.get(id);
  if (res) add(card, el('p', { id: 'decision-result', class: 'ok-msg', role: 'status' }, res));
  if (quorum > 1) {
    add(card, el('div', { id: 'quorum', class: 'quorum' }, el('div', 'quorum-text', `${votes.length} of ${quorum} approvals`),
      el('div', 'bar', el('span', { class: 'fill f' + Math.min(10, Math.round((10 * votes.length) / quorum)) })),
      votes.length ? el('ul', 'voters', votes.map((v) => el('li', 0, el('b', 0, v.reviewer), ' ', el('span', 'muted', fmtTime(v.at), ' · ', v.scope),
        v.reason ? el('div', 'small', v.reason) : null))) : null));
  }
  if (r.state !== 'pending') {
    const z = r.resolution || {};
    return add(card, dl([['Outcome', z.outcome ? badge(z.outcome) : null], ['Verdict', z.verdict], ['Reviewer', z.reviewer], ['Reason', z.reason], ['At', fmtTime(z.at)]]));
  }
  add(card, el('p', 'deadline', 'Time left ', countdown(r.deadline), el('span', 'muted small', ' then ', r.default_verdict, ' by default')));
  if (d.you_are_owner) add(card, el('p', { id: 'owner-notice', class: 'notice' }, 'You own this agent: you cannot approve its requests (you may deny or kill).'));
  if (!['reviewer', 'admin'].includes(S.session?.role)) return add(card, el('p', 'muted', 'Your role (', S.session?.role ?? 'none', ') can read requests but not decide them.'));
  const dis = S.expired;
  const reason = el('textarea', { id: 'reason', required: true, maxlength: 1000, rows: 3, placeholder: 'Why? Recorded in the audit log.' });
  const counter = el('span', 'muted small counter', '0 / 1000');
  on(reason, 'input', () => { counter.textContent = `${reason.value.length} / 1000`; });
  const scope = el('select', { id: 'scope' }, SCOPES.map(([v, t]) => el('option', { value: v }, t)));
  const btn = (idn, cls, text, verdict) => on(el('button', { id: idn, type: 'button', class: 'btn ' + cls, disabled: dis }, text), 'click', () => decide(id, verdict));
  const kill = btn('kill', 'kill', 'Kill', 'kill');
  on(scope, 'change', () => { kill.disabled = S.expired || scope.value !== 'once'; kill.title = kill.disabled && !S.expired ? 'Kill applies to this request only' : ''; });
  const approve = btn('approve', 'ok', 'Approve', 'allow');
  const voted = votes.some((v) => v.reviewer === S.session.identity);
  if (d.you_are_owner) approve.disabled = true;
  if (voted) add(card, el('p', 'muted small', 'You have approved this request; it waits for another reviewer.'));
  return add(card, el('label', { for: 'reason', class: 'lbl' }, 'Reason ', counter), reason,
    el('label', { for: 'scope', class: 'lbl' }, 'Applies to'), scope,
    el('div', 'buttons', approve, btn('deny', 'no', 'Deny', 'deny'), kill));
}
async function decide(id, verdict) {
  clearError();
  const text = $('reason').value.trim();
  if (!text) { showError('Give a reason: it is recorded with the decision.'); $('reason').focus(); return; }
  if (text.length > 1000) { showError('The reason is too long (at most 1000 characters).'); return; }
  const [scope, dur] = $('scope').value.split(':');
  if (verdict === 'kill' && scope !== 'once') { showError('Kill applies to this request only: choose "This request only".'); return; }
  const body = { verdict, reason: text, scope };
  if (dur) body.duration_seconds = Number(dur);
  const buttons = document.querySelectorAll('.decide button');
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const res = await api(`/api/requests/${encodeURIComponent(id)}/decision`, body);
    const st = res.request?.state;
    S.results.set(id, verdict === 'allow' && st === 'pending' ? `Counted: ${res.approvals} of ${res.quorum} approvals.`
      : { allow: 'Approved by you.', deny: 'Denied by you.', kill: 'Killed by you.' }[verdict]);
    $('reason').value = '';
  } catch (err) {
    showError(err.message);
  }
  if (S.page === 'request' && S.detailId === id) await loadRequest(id, renderSeq).catch((e) => showError(e.message));
}

// ---- agents, grants, audit
const table = (id, heads, rows) => el('div', 'card flush', el('table', { class: 'grid', id },
  el('thead', 0, el('tr', 0, heads.map((h) => el('th', 0, h)))), el('tbody', 0, rows)));
const title = (t, n, ...extra) => el('div', 'toolbar', el('h1', 0, t, n == null ? null : el('span', 'muted', ' ' + n)), extra);
function ago(ms) {
  const s = Math.max(0, Math.floor((Date.now() - ms) / 1000));
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m` : s < 86400 ? `${Math.floor(s / 3600)}h ${Math.floor(s / 60) % 60}m` : `${Math.floor(s / 86400)}d`;
}
async function agentsPage(seq) {
  const d = await api('/api/agents');
  if (!current(seq)) return;
  const agents = Array.isArray(d.agents) ? d.agents : [];
  const policy = (p) => p == null ? el('span', 'muted', 'none reported')
    : [mono('v' + p.version), ' ', el('span', 'badge b-' + (p.outcome === 'applied' ? 'approved' : 'denied'), p.outcome),
      p.message ? el('div', 'small muted', p.message) : null];
  const rows = agents.map((a) => el('tr', { 'data-host': a.host }, td(el('b', 0, a.host)), td(a.owner), td(mono(a.version)),
    td(policy(a.policy)),
    el('td', 'nowrap', fmtTime(a.connected_at), el('span', 'muted', ` (${ago(a.connected_at)})`)),
    el('td', 'num', a.pending ? el('span', 'count', String(a.pending)) : '0')));
  const fleet = d.fleet_policy;
  $('main').replaceChildren(title('Agents', agents.length),
    agents.length ? table('agents', ['Host', 'Owner', 'Version', 'Policy', 'Connected since', 'Pending'], rows) : el('p', 'empty', 'No agent is connected.'),
    fleet ? section('Fleet policy v' + fleet.version + ' (pushed by ' + fleet.pushed_by + ')', el('pre', 'policy', lines(fleet.text))) : null);
}
async function grantsPage(seq) {
  const d = await api('/api/grants');
  if (!current(seq)) return;
  const grants = Array.isArray(d.grants) ? d.grants : [];
  const may = ['reviewer', 'admin'].includes(S.session.role);
  const rows = grants.map((g) => el('tr', { 'data-grant-id': g.id },
    el('td', 'action', el('div', 'sum', el('span', { class: 'mono trunc', title: g.action }, g.action))), td(tag(g.scope)),
    td(g.host, ' / ', g.scope === 'host' ? el('span', 'muted', 'any agent') : g.agent),
    td(el('span', 'badge b-' + plain(g.verdict), g.verdict)), td(g.reviewer), el('td', 'wrap', g.reason),
    el('td', 'num', countdown(g.expires_at)),
    may ? td(on(el('button', { type: 'button', class: 'btn small revoke', 'data-grant-id': g.id, disabled: S.expired }, 'Revoke'), 'click', () => revoke(g))) : null));
  $('main').replaceChildren(title('Grants in force', grants.length),
    grants.length ? table('grants', ['Action', 'Scope', 'Host / agent', 'Verdict', 'Reviewer', 'Reason', 'Expires', may ? '' : null].filter((h) => h != null), rows)
      : el('p', 'empty', 'No grant is in force.'));
}
async function revoke(g) {
  clearError();
  const reason = window.prompt(`Revoke the grant for "${plain(g.action)}"?\nReason (recorded in the audit log):`);
  if (reason == null) return;
  if (!reason.trim()) { showError('Give a reason to revoke a grant.'); return; }
  try { await api(`/api/grants/${encodeURIComponent(g.id)}/revoke`, { reason: reason.trim() }); } catch (err) { showError(err.message); return; }
  if (S.page === 'grants') grantsPage(renderSeq).catch((e) => showError(e.message));
}
async function auditPage(seq) {
  const A = S.audit;
  const [v, d] = await Promise.all([api('/api/audit/verify').catch((e) => ({ ok: false, problem: e.message })), api(`/api/audit?after=${A.after}&limit=100`)]);
  if (!current(seq)) return;
  const recs = Array.isArray(d.records) ? d.records : [];
  const verify = v.ok ? el('p', { id: 'audit-verify', class: 'verify good' }, `Audit log intact: ${v.records} records, ${v.checkpoints} checkpoints`)
    : el('p', { id: 'audit-verify', class: 'verify bad', role: 'alert' }, 'Audit log problem: ', v.problem ?? 'unknown');
  const page = (after) => () => { A.after = after; render(); };
  const hasNext = recs.length >= 100 && typeof d.next_after === 'number' && d.next_after > A.after;
  $('main').replaceChildren(title('Audit log', null, el('div', 'filters',
    on(el('button', { type: 'button', id: 'audit-first', class: 'btn small', disabled: !A.after }, 'First page'), 'click', page(0)),
    on(el('button', { type: 'button', id: 'audit-next', class: 'btn small', disabled: !hasNext }, 'Next page'), 'click', page(d.next_after)))),
  verify,
  recs.length ? table('audit', ['Seq', 'Time', 'Kind', 'Request', 'Body'], recs.map((x) => el('tr', { 'data-seq': x.seq },
    el('td', 'num', String(x.seq)), el('td', 'nowrap', fmtTime(x.at)), td(tag(x.kind)),
    el('td', 'nowrap', x.request_id ? el('a', { href: reqHref(x.request_id), 'data-nav': '', class: 'mono' }, x.request_id) : dash(null)),
    el('td', 'body', el('code', 'mono', JSON.stringify(x.body))))))
    : el('p', 'empty', A.after ? 'No more records.' : 'The audit log is empty.'));
}

// ---- start
on($('logout'), 'click', async () => {
  let res = null;
  try { res = await fetch('/logout', { method: 'POST', credentials: 'same-origin', redirect: 'manual', headers: { 'X-Belay-CSRF': S.session?.csrf || '' } }); } catch { /* go anyway */ }
  if (res && !res.ok && res.type !== 'opaqueredirect' && res.status !== 401) { showError(`Logout failed (${res.status}).`); return; }
  location.assign('/');
});
async function boot() {
  try {
    const s = await api('/api/session');
    if (typeof s.csrf !== 'string') throw new ApiError(0, 'The server sent an unexpected session.');
    S.session = s;
  } catch (err) {
    if (err.status === 401) return signIn();
    $('main').replaceChildren(el('div', 'empty', on(el('button', { type: 'button', class: 'btn' }, 'Try again'), 'click', () => location.reload())));
    return showError(err.message);
  }
  $('identity').textContent = plain(S.session.identity);
  $('role').textContent = plain(S.session.role ?? 'no role');
  for (const id of ['nav', 'who', 'logout', 'live']) $(id).hidden = false;
  connect();
  render();
  setInterval(tick, 1000);
}
boot();
})();
