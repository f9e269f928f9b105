// The web console: plain JavaScript modules, no framework. The session lives in an HttpOnly cookie the page cannot
// read; the page keeps only the session's CSRF token, in memory, and sends it with every request that is not a read.

const $ = (sel) => document.querySelector(sel);
const state = { me: null, csrf: null, view: null, timers: [], remotes: [], containers: [] };

// ------------------------------------------------------------------------------------------ HTTP and problems

export class Problem extends Error {
  constructor(status, body) {
    const title = (body && body.title) || `HTTP ${status}`;
    super(title);
    this.status = status;
    this.title = title;
    this.detail = (body && (body.detail || (typeof body === 'string' ? body : ''))) || '';
    if (body && Array.isArray(body.errors) && body.errors.length) {
      this.detail += ' ' + body.errors.map((e) => `${(e.loc || e.field || []).toString()}: ${e.msg || e.message}`).join('; ');
    }
  }
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json, application/problem+json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  const response = await fetch(path, {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  const data = type.includes('json') ? await response.json() : await response.text();
  if (!response.ok) {
    const problem = new Problem(response.status, data);
    if (response.status === 401 && state.me && path !== '/ui/session') signedOut(problem);
    throw problem;
  }
  return data;
}

export function showMessage(title, detail = '', kind = 'problem') {
  const box = $('#message');
  box.querySelector('.title').textContent = title;
  box.querySelector('.detail').textContent = detail;
  box.className = `message ${kind === 'info' ? 'info' : ''}`;
  box.dataset.kind = kind;
  box.hidden = false;
}

export function showProblem(error) {
  if (error instanceof Problem) showMessage(error.title, error.detail);
  else showMessage('Error', String(error && error.message ? error.message : error));
}

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('data-')) node.setAttribute(key, value);
    else if (key === 'onclick') node.addEventListener('click', value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ''));
  return node;
};
const q = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null)).toString();
const enc = encodeURIComponent;

// ------------------------------------------------------------------------------------------ sign-in and views

async function signIn(event) {
  event.preventDefault();
  const input = $('#signin-token');
  const token = input.value;
  input.value = '';  // the token is not kept anywhere in the page
  try {
    const me = await api('POST', '/ui/session', { token });
    await signedIn(me);
  } catch (error) {
    showProblem(error);
  }
}

async function signOut() {
  try { await api('DELETE', '/ui/session'); } catch (error) { /* already gone */ }
  signedOut(null);
}

async function signedIn(me) {
  state.me = me;
  state.csrf = me.csrf;
  $('#message').hidden = true;
  $('#who').textContent = `${me.name} (${me.scopes.join(', ')})`;
  $('#nav').hidden = false;
  $('#logout').hidden = !me.auth;
  await loadRemotes();
  route();
}

function signedOut(problem) {
  state.me = null;
  state.csrf = null;
  $('#nav').hidden = true;
  $('#logout').hidden = true;
  $('#who').textContent = '';
  $('#message').hidden = true;
  show('signin');
  if (problem) showProblem(problem);
}

function show(view) {
  for (const timer of state.timers) clearInterval(timer);
  state.timers = [];
  stopContainerStreams();
  state.view = view;
  if ($('#message').dataset.kind === 'info') $('#message').hidden = true;
  for (const list of Object.keys(drawn)) delete drawn[list];
  for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== `view-${view}`;
  for (const link of document.querySelectorAll('#nav a')) link.classList.toggle('active', link.dataset.view === view);
  document.body.dataset.view = view;
}

const VIEWS = {
  containers: () => startContainers(),
  create: () => loadCreateChoices(),
  jobs: () => { refreshJobs(); every(2000, refreshJobs); },
  terminal: () => loadTerminalTargets(),
  images: () => { refreshImages(); loadCopyChoices(); },
};

const drawn = {};
function unchanged(list, data) {  // a live list redraws its rows only when what it shows changed
  const key = JSON.stringify(data);
  if (drawn[list] === key) return true;
  drawn[list] = key;
  return false;
}

function every(ms, fn) { state.timers.push(setInterval(fn, ms)); }

function route() {
  if (!state.me) return show('signin');
  const view = (location.hash || '#containers').slice(1);
  const name = VIEWS[view] ? view : 'containers';
  show(name);
  VIEWS[name]();
}

async function loadRemotes() {
  try {
    const remotes = await api('GET', '/v1/remotes');
    state.remotes = remotes.items.map((r) => r.name);
    state.defaultRemote = (remotes.items.find((r) => r.default) || remotes.items[0] || {}).name;
  } catch (error) {
    state.remotes = [];
  }
}

function fillSelect(select, values, selected) {
  const current = select.value;
  select.replaceChildren(...values.map(([value, label]) => el('option', { value }, label)));
  select.value = selected ?? current ?? '';
  if (select.selectedIndex < 0 && select.options.length) select.selectedIndex = 0;
}

// ------------------------------------------------------------------------------------------ jobs, followed live

function followJob(job, bar, stage, outcome, onEnd) {
  bar.parentElement.hidden = false;
  bar.removeAttribute('value');
  bar.dataset.seen = '';
  outcome.textContent = '';
  outcome.className = 'outcome';
  const update = (j) => {
    const p = j.progress || {};
    if (typeof p.percent === 'number') {
      bar.value = p.percent;
      const seen = bar.dataset.seen ? bar.dataset.seen.split(',') : [];
      if (seen[seen.length - 1] !== String(p.percent)) bar.dataset.seen = [...seen, p.percent].join(',');
    }
    stage.textContent = [j.status, p.stage, p.message, typeof p.percent === 'number' ? `${p.percent}%` : '']
      .filter(Boolean).join(' · ');
  };
  update(job);
  const stream = new EventSource(`/v1/jobs/${enc(job.id)}/events`);
  let ended = false;
  const finish = (j) => {
    stream.close();
    if (ended) return;
    ended = true;
    update(j);
    outcome.dataset.status = j.status;
    if (j.status === 'succeeded') {
      bar.value = 100;
      outcome.className = 'outcome status-succeeded';
      outcome.textContent = `Done: ${j.kind} ${j.resource || ''} succeeded.`;
    } else {
      const e = j.error || {};
      outcome.className = `outcome status-${j.status}`;
      outcome.textContent = `${j.kind} ${j.status}: ${e.title || ''}${e.detail ? ' — ' + e.detail : ''}`;
    }
    if (onEnd) onEnd(j);
  };
  for (const type of ['snapshot', 'progress', 'status']) {
    stream.addEventListener(type, (e) => {
      const message = JSON.parse(e.data);
      if (message.job) {
        update(message.job);
        if (['succeeded', 'failed', 'cancelled'].includes(message.job.status) && type === 'snapshot') finish(message.job);
      }
    });
  }
  stream.addEventListener('end', (e) => finish(JSON.parse(e.data).job));
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) api('GET', `/v1/jobs/${enc(job.id)}`).then(finish, showProblem);
  };
}

// ------------------------------------------------------------------------------------------ containers

function imageOf(c) {
  const config = c.config || {};
  return config['image.description'] || [config['image.os'], config['image.release']].filter(Boolean).join(' ') || '';
}

// Live: one `?watch=true` event stream per remote (the read model's changes); where a stream cannot be had (no read
// model, an unreachable remote), that remote is polled every 2 s instead. Filters apply to what is held.
const live = { streams: [], byRemote: new Map(), polled: new Set(), unreachable: [] };

function stopContainerStreams() {
  for (const stream of live.streams) stream.close();
  live.streams = [];
}

function watchRemote(remote) {
  const stream = new EventSource(`/v1/containers?${q({ watch: 'true', remote })}`);
  const held = () => live.byRemote.get(remote) || new Map();
  stream.addEventListener('resync', (e) => {
    live.polled.delete(remote);
    live.byRemote.set(remote, new Map(JSON.parse(e.data).items.map((c) => [c.name, { ...c, remote }])));
    drawContainers();
  });
  for (const type of ['added', 'modified', 'deleted']) {
    stream.addEventListener(type, (e) => {
      const c = JSON.parse(e.data);
      const items = held();
      if (type === 'deleted') items.delete(c.name); else items.set(c.name, { ...c, remote });
      live.byRemote.set(remote, items);
      drawContainers();
    });
  }
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) live.polled.add(remote);  // refused: poll it instead
  };
  live.streams.push(stream);
}

async function startContainers() {
  stopContainerStreams();
  live.byRemote = new Map();
  live.polled = new Set();
  await pollContainers(true);
  if (state.view !== 'containers') return;
  for (const remote of state.remotes) {
    if (!live.unreachable.some((u) => u.remote === remote)) watchRemote(remote);
  }
  every(2000, () => pollContainers(false));
  every(30000, () => pollContainers(true));  // reachability of every remote, now and then
}

async function pollContainers(all) {
  const remotes = all ? null : [...live.polled];
  if (remotes && !remotes.length) return;
  let data;
  try {
    data = await api('GET', `/v1/containers?${q({ remote: '*', limit: 1000 })}`);
  } catch (error) {
    showProblem(error);
    return;
  }
  live.unreachable = data.unreachable || [];
  for (const u of live.unreachable) live.polled.add(u.remote);
  const fresh = new Map();
  for (const c of data.items) {
    if (!fresh.has(c.remote)) fresh.set(c.remote, new Map());
    fresh.get(c.remote).set(c.name, c);
  }
  for (const remote of remotes || state.remotes) {
    if (all && !live.polled.has(remote) && live.byRemote.has(remote)) continue;  // its stream keeps it
    live.byRemote.set(remote, fresh.get(remote) || new Map());
  }
  drawContainers();
}

function refreshContainers() { drawContainers(); }

function drawContainers() {
  if (state.view !== 'containers') return;
  const prefix = $('#filter-name').value.trim();
  const status = $('#filter-status').value;
  const items = [...live.byRemote.values()].flatMap((m) => [...m.values()])
    .filter((c) => (!prefix || c.name.startsWith(prefix)) && (!status || c.status === status))
    .sort((a, b) => a.name.localeCompare(b.name) || (a.remote || '').localeCompare(b.remote || ''));
  state.containers = items;
  $('#unreachable').hidden = !live.unreachable.length;
  $('#unreachable').textContent = live.unreachable.map((u) => `${u.remote} unreachable: ${u.problem?.title || ''} ${u.problem?.detail || ''}`).join('; ');
  if (unchanged('containers', items)) return;
  const rows = items.map((c) => {
    const act = (verb) => el('button', { type: 'button', 'data-action': verb, class: verb === 'delete' ? 'danger' : '',
      onclick: () => containerAction(c, verb) }, verb[0].toUpperCase() + verb.slice(1));
    return el('tr', { 'data-name': c.name, 'data-remote': c.remote || '' },
      el('td', { class: 'name' }, c.name),
      el('td', {}, c.remote || ''),
      el('td', { class: `status status-${c.status}` }, c.status),
      el('td', { class: 'addresses' }, (c.addresses || []).map((a) => a.address).join(', ')),
      el('td', {}, imageOf(c)),
      el('td', { class: 'actions' }, act('start'), act('stop'), act('restart'), act('delete'),
        el('button', { type: 'button', 'data-action': 'terminal', onclick: () => openTerminal(c) }, 'Terminal')));
  });
  $('#containers tbody').replaceChildren(...rows);
}

async function containerAction(c, verb) {
  const where = q({ remote: c.remote });
  try {
    let job;
    if (verb === 'delete') {
      if (!confirm(`Delete ${c.name}?`)) return;
      job = await api('DELETE', `/v1/containers/${enc(c.name)}?${where}`);
    } else {
      job = await api('POST', `/v1/containers/${enc(c.name)}/${verb}?${where}`, { force: verb !== 'start' });
    }
    showMessage(`${verb} ${c.name}`, `job ${job && job.id ? job.id : ''} ${job && job.status ? job.status : ''}`, 'info');
  } catch (error) {
    showProblem(error);
  }
}

// ------------------------------------------------------------------------------------------ create

async function loadCreateChoices() {
  fillSelect($('#create-remote'), state.remotes.map((r) => [r, r]), state.defaultRemote);
  try {
    const sources = await api('GET', '/v1/image-sources');
    fillSelect($('#create-source'), [['', 'local, then every source'], ...sources.items.map((s) => [s.name, `${s.name} (${s.url})`])]);
  } catch (error) { showProblem(error); }
}

async function createContainer(event) {
  event.preventDefault();
  const source = $('#create-source').value;
  const body = {
    name: $('#create-name').value.trim(),
    image: { alias: $('#create-alias').value.trim(), ...(source ? { sources: [source] } : {}) },
    profiles: $('#create-profiles').value.split(',').map((p) => p.trim()).filter(Boolean),
  };
  const constraints = {};
  if ($('#create-cores').value) constraints.cores = Number($('#create-cores').value);
  if ($('#create-mem').value) constraints.mem_mib = Number($('#create-mem').value);
  if (Object.keys(constraints).length) body.constraints = constraints;
  const button = $('#create-submit');
  button.disabled = true;
  try {
    const job = await api('POST', `/v1/containers?${q({ remote: $('#create-remote').value })}`, body);
    followJob(job, $('#create-bar'), $('#create-stage'), $('#create-outcome'), () => { button.disabled = false; });
  } catch (error) {
    button.disabled = false;
    showProblem(error);
  }
}

// ------------------------------------------------------------------------------------------ jobs

async function refreshJobs() {
  let data;
  try {
    data = await api('GET', `/v1/jobs?${q({ status: $('#jobs-status').value, kind: $('#jobs-kind').value.trim(), limit: 50 })}`);
  } catch (error) {
    showProblem(error);
    return;
  }
  if (state.view !== 'jobs' || unchanged('jobs', data)) return;
  const rows = data.items.map((j) => {
    const p = j.progress || {};
    const live = j.status === 'running' || j.status === 'queued';
    const bar = el('progress', { max: 100 });
    if (typeof p.percent === 'number') bar.value = p.percent;
    else if (!live) bar.value = j.status === 'succeeded' ? 100 : 0;
    return el('tr', { 'data-id': j.id, 'data-status': j.status, 'data-kind': j.kind },
      el('td', {}, j.kind),
      el('td', {}, j.resource || ''),
      el('td', { class: `status status-${j.status}` }, j.status),
      el('td', {}, live ? bar : '', ' ', [p.stage, p.message].filter(Boolean).join(' · ')),
      el('td', {}, (j.created_at || '').replace('T', ' ').replace(/\.\d+/, '')),
      el('td', { class: 'actions' },
        live ? el('button', { type: 'button', class: 'danger', 'data-action': 'cancel', onclick: () => cancelJob(j) }, 'Cancel') : '',
        el('button', { type: 'button', 'data-action': 'details', onclick: () => jobDetails(j) }, 'Details')));
  });
  $('#jobs tbody').replaceChildren(...rows);
}

async function cancelJob(j) {
  try {
    await api('DELETE', `/v1/jobs/${enc(j.id)}`);
    showMessage(`Cancelling ${j.kind}`, j.id, 'info');
    refreshJobs();
  } catch (error) { showProblem(error); }
}

async function jobDetails(j) {
  const box = $('#job-detail');
  try {
    const job = await api('GET', `/v1/jobs/${enc(j.id)}`);
    const parts = [`${job.kind} ${job.status}  (${job.id})`];
    const r = job.result || {};
    if (r.stdout) parts.push('stdout:\n' + r.stdout);
    if (r.stderr) parts.push('stderr:\n' + r.stderr);
    if (job.error) parts.push(`error: ${job.error.title}${job.error.detail ? ' — ' + job.error.detail : ''}`);
    if (job.result && !r.stdout && !r.stderr) parts.push('result: ' + JSON.stringify(job.result, null, 2));
    box.textContent = parts.join('\n\n');
    box.hidden = false;
  } catch (error) { showProblem(error); }
}

// ------------------------------------------------------------------------------------------ terminal

async function loadTerminalTargets(selected) {
  let items = state.containers;
  try {
    items = (await api('GET', `/v1/containers?${q({ remote: '*', status: 'Running', limit: 1000 })}`)).items;
  } catch (error) { showProblem(error); }
  fillSelect($('#terminal-target'), items.map((c) => [`${c.remote || ''}/${c.name}`, `${c.name} (${c.remote || ''})`]), selected);
}

function openTerminal(c) {
  location.hash = '#terminal';
  setTimeout(() => loadTerminalTargets(`${c.remote || ''}/${c.name}`), 0);
}

async function connectTerminal(event) {
  event.preventDefault();
  const [remote, name] = $('#terminal-target').value.split('/');
  if (!name) return showMessage('No container', 'choose a running container');
  const { connect } = await import('./terminal.js');
  try {
    await connect({ api, remote, name, mode: $('#terminal-mode').value, host: $('#terminal'),
      status: $('#terminal-status'), closeButton: $('#terminal-close'), onProblem: showProblem });
  } catch (error) { showProblem(error); }
}

// ------------------------------------------------------------------------------------------ images

async function refreshImages() {
  try {
    const [images, aliases] = await Promise.all([api('GET', '/v1/images?remote=*&limit=1000'),
      api('GET', '/v1/images/aliases').catch(() => ({ items: [] }))]);
    const aliasOf = new Map();
    for (const a of aliases.items) aliasOf.set(a.target, [...(aliasOf.get(a.target) || []), a.name]);
    const rows = images.items.map((i) => el('tr', { 'data-fingerprint': i.fingerprint },
      el('td', {}, ((i.aliases || []).map((a) => a.name || a)).concat(aliasOf.get(i.fingerprint) || [])
        .filter((v, n, all) => all.indexOf(v) === n).join(', ')),
      el('td', {}, i.remote || ''),
      el('td', { class: 'mono' }, (i.fingerprint || '').slice(0, 12)),
      el('td', {}, (i.properties && i.properties.description) || i.description || ''),
      el('td', {}, i.size ? `${(i.size / 1048576).toFixed(1)} MiB` : '')));
    $('#images tbody').replaceChildren(...rows);
  } catch (error) { showProblem(error); }
}

async function loadCopyChoices() {
  fillSelect($('#copy-remote'), state.remotes.map((r) => [r, r]), state.defaultRemote);
  try {
    const sources = await api('GET', '/v1/image-sources');
    fillSelect($('#copy-source'), sources.items.map((s) => [s.name, `${s.name} (${s.url})`]));
  } catch (error) { showProblem(error); }
}

async function copyImage(event) {
  event.preventDefault();
  const local = $('#copy-local').value.trim();
  const body = { source: { image_source: $('#copy-source').value, alias: $('#copy-alias').value.trim() },
    aliases: local ? [local] : [] };
  try {
    const job = await api('POST', `/v1/images?${q({ remote: $('#copy-remote').value })}`, body);
    followJob(job, $('#copy-bar'), $('#copy-stage'), $('#copy-outcome'), () => refreshImages());
  } catch (error) { showProblem(error); }
}

// ------------------------------------------------------------------------------------------ start

async function start() {
  $('#signin-form').addEventListener('submit', signIn);
  $('#logout').addEventListener('click', signOut);
  $('#message .close').addEventListener('click', () => { $('#message').hidden = true; });
  $('#containers-filter').addEventListener('input', () => refreshContainers());
  $('#containers-filter').addEventListener('submit', (e) => e.preventDefault());
  $('#jobs-filter').addEventListener('input', () => refreshJobs());
  $('#jobs-filter').addEventListener('submit', (e) => e.preventDefault());
  $('#create-form').addEventListener('submit', createContainer);
  $('#terminal-form').addEventListener('submit', connectTerminal);
  $('#copy-form').addEventListener('submit', copyImage);
  window.addEventListener('hashchange', route);
  try {
    await signedIn(await api('GET', '/ui/session'));
  } catch (error) {
    signedOut(null);
  }
}

start();
