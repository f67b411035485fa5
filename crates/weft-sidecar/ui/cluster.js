// The Cluster page: what the serving sidecar knows of placement (leader, table version, the
// sidecars in the table with their apps, actor types and owned buckets), its concurrency limits
// and its steps per second over the last minutes.
import { h, replace, every } from './dom.js';
import { get } from './api.js';

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function facts(c) {
  const rows = [
    ['Serving sidecar', c.hostID],
    ['App', c.appID],
    ['Placement leader', c.placementLeader || (c.placed ? 'unknown' : 'none (not placed)')],
    ['Table version', c.tableVersion],
    ['Cluster ID', c.clusterID || '—'],
    ['Workers connected here', c.workersConnected],
  ];
  return h('dl', { class: 'facts' }, rows.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', { 'data-fact': k }, String(v)))));
}

function sidecars(c) {
  const apps = new Map();
  for (const sc of c.sidecars) apps.set(sc.appID, (apps.get(sc.appID) || 0) + sc.ownedBuckets.workflow);
  const body = c.sidecars.map((sc) => h('tr', { 'data-host': sc.hostID },
    h('th', { scope: 'row' }, sc.hostID, sc.self ? h('span', { class: 'pill' }, 'this one') : null),
    h('td', { class: 'wide' }, sc.address || '—'),
    h('td', {}, sc.appID),
    h('td', { class: 'num', 'data-buckets': sc.ownedBuckets.workflow }, sc.ownedBuckets.workflow),
    h('td', { class: 'num wide' }, sc.ownedBuckets.activity),
    h('td', { class: 'types' }, sc.actorTypes.length ? h('ul', {}, sc.actorTypes.map((t) => h('li', {}, t))) : h('span', { class: 'muted' }, 'none (no worker connected)'))));
  const totals = [...apps.entries()].map(([app, n]) => h('tr', { class: 'total' },
    h('th', { scope: 'row' }, `Total · ${app}`), h('td', { class: 'wide' }), h('td', {}),
    h('td', { class: 'num', 'data-total': app }, `${n} / ${c.bucketsTotal}`), h('td', { class: 'wide' }), h('td', {})));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'sidecars' },
    h('caption', {}, `${c.sidecars.length} sidecar${c.sidecars.length === 1 ? '' : 's'} in the placement table`),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, 'Sidecar'), h('th', { scope: 'col', class: 'wide' }, 'Address'), h('th', { scope: 'col' }, 'App'),
      h('th', { scope: 'col', class: 'num' }, 'Workflow buckets'), h('th', { scope: 'col', class: 'num wide' }, 'Activity buckets'),
      h('th', { scope: 'col' }, 'Actor types'))),
    h('tbody', {}, body, totals)));
}

function placement(c) {
  const p = c.placement;
  if (!p) return h('p', { class: 'muted' }, 'This sidecar runs without placement.');
  if (p.error) return h('p', { class: 'error' }, `The placement leader did not answer: ${p.error}`);
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'placement' },
    h('caption', { class: 'sr-only' }, 'Placement nodes'),
    h('thead', {}, h('tr', {}, ['Node', 'Address', 'Role', 'State', 'Term', 'Last applied'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, p.members.map((m) => h('tr', { 'data-node': m.id },
      h('th', { scope: 'row' }, String(m.id), m.leader ? h('span', { class: 'pill' }, 'leader') : null),
      h('td', {}, m.address), h('td', {}, m.role), h('td', {}, m.state || 'unreachable'),
      h('td', { class: 'num' }, m.term ?? '—'), h('td', { class: 'num' }, m.lastApplied ?? '—'))))));
}

function limits(c) {
  if (!c.limits.length) return h('p', { class: 'muted' }, 'No work has been handed to workers yet.');
  const scopeName = { all: 'all work', sidecar: 'per sidecar', cluster: 'cluster-wide', name: 'per name' };
  return h('div', { class: 'table-wrap' }, h('table', { class: 'list', id: 'limits' },
    h('caption', { class: 'sr-only' }, 'Concurrency limits'),
    h('thead', {}, h('tr', {}, ['Kind', 'Limit', 'Name', 'In use', 'Waiting', 'Slots held'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, c.limits.map((l) => h('tr', {},
      h('td', {}, l.kind), h('td', {}, scopeName[l.scope] || l.scope), h('td', {}, l.name || '—'),
      h('td', { class: 'num' }, l.inFlight), h('td', { class: 'num' }, l.waiting), h('td', { class: 'num' }, l.slotsHeld ?? '—'))))));
}

function chart(rate) {
  const pts = rate.points || [];
  if (pts.length < 2) return h('p', { class: 'muted' }, `Collecting samples (one every ${rate.intervalSeconds} s)…`);
  const W = 600; const H = 160; const P = 28;
  const t0 = pts[0].t; const t1 = pts[pts.length - 1].t;
  const max = Math.max(1, ...pts.map((p) => Math.max(p.turns, p.activities)));
  const x = (t) => P + ((t - t0) / Math.max(t1 - t0, 1)) * (W - 2 * P);
  const y = (v) => H - P - (v / max) * (H - 2 * P);
  const line = (key) => pts.map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(' ');
  const latest = pts[pts.length - 1];
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img',
    'aria-label': `Steps per second over the last ${Math.round((t1 - t0) / 60000) || 1} minutes; now ${latest.turns.toFixed(1)} workflow turns and ${latest.activities.toFixed(1)} activities per second` },
  s('line', { x1: P, y1: H - P, x2: W - P, y2: H - P, class: 'axis-line' }),
  s('text', { x: 2, y: P, class: 'axis-text' }, max.toFixed(1)),
  s('text', { x: 2, y: H - P, class: 'axis-text' }, '0'),
  s('text', { x: P, y: H - 6, class: 'axis-text' }, `-${Math.round((t1 - t0) / 1000)} s`),
  s('text', { x: W - P - 20, y: H - 6, class: 'axis-text' }, 'now'),
  s('polyline', { points: line('turns'), class: 'series turns' }),
  s('polyline', { points: line('activities'), class: 'series activities' }));
  return h('figure', { class: 'rate' }, svg,
    h('figcaption', { class: 'small' }, h('span', { class: 'key turns' }), ` workflow turns/s (now ${latest.turns.toFixed(1)}) `,
      h('span', { class: 'key activities' }), ` activities/s (now ${latest.activities.toFixed(1)})`));
}

export async function render(main) {
  document.title = 'Cluster · Weft';
  const body = h('div');
  replace(main, h('div', { class: 'page-head' }, h('h1', {}, 'Cluster')), body);
  const refresh = async () => {
    const c = await get('/cluster');
    replace(body,
      facts(c),
      h('section', { 'aria-labelledby': 'sc-title' }, h('h2', { id: 'sc-title' }, 'Sidecars'), sidecars(c)),
      h('section', { 'aria-labelledby': 'pl-title' }, h('h2', { id: 'pl-title' }, 'Placement nodes'), placement(c)),
      h('div', { class: 'two' },
        h('section', { 'aria-labelledby': 'lim-title' }, h('h2', { id: 'lim-title' }, 'Concurrency (this sidecar)'), limits(c)),
        h('section', { 'aria-labelledby': 'rate-title' }, h('h2', { id: 'rate-title' }, 'Steps per second (this sidecar)'), chart(c.rate))));
  };
  await refresh();
  every(5000, refresh);
}
