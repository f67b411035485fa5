// The Instances page: counts by status, a filtered, paged list that refreshes itself, and bulk
// actions on the selected (or all matching) instances. Filters live in the address, so a view
// can be bookmarked and shared.
import { h, replace, statusBadge, fmtTime, toast, confirmDialog, every, STATUSES } from './dom.js';
import { get, ops } from './api.js';

const PAGE_SIZES = [25, 50, 100, 200];
const MAX_MATCHING = 1000;

function readFilters() {
  const q = new URLSearchParams(location.search);
  return {
    status: q.get('status') || '',
    name: q.get('name') || '',
    from: q.get('from') || '',
    to: q.get('to') || '',
    prefix: q.get('prefix') || '',
    limit: Number(q.get('limit')) || 50,
  };
}

// datetime-local values are local time without a zone; the API wants RFC 3339.
const toRfc = (v) => (v ? new Date(v).toISOString() : '');

function field(label, input) {
  return h('label', { class: 'field' }, h('span', {}, label), input);
}

export async function render(main) {
  document.title = 'Instances · Weft';
  const f = readFilters();
  const state = { cursors: [''], page: 0, selected: new Set(), rows: [] };

  const status = h('select', { name: 'status' }, h('option', { value: '' }, 'Any status'),
    STATUSES.map((s) => h('option', { value: s, selected: s === f.status }, s.replace(/_/g, ' '))));
  const name = h('input', { name: 'name', type: 'text', value: f.name, placeholder: 'workflow name', autocomplete: 'off' });
  const prefix = h('input', { name: 'prefix', type: 'text', value: f.prefix, placeholder: 'ID starts with', autocomplete: 'off' });
  const from = h('input', { name: 'from', type: 'datetime-local', step: 1, value: f.from });
  const to = h('input', { name: 'to', type: 'datetime-local', step: 1, value: f.to });
  const limit = h('select', { name: 'limit' }, PAGE_SIZES.map((n) => h('option', { value: n, selected: n === f.limit }, `${n} per page`)));
  const auto = h('input', { type: 'checkbox', checked: true, id: 'auto' });

  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter instances' },
    field('Status', status), field('Name', name), field('ID prefix', prefix),
    field('Created from', from), field('Created to', to), field('Page size', limit),
    h('div', { class: 'field buttons' },
      h('button', { type: 'submit', class: 'primary' }, 'Apply'),
      h('button', { type: 'button', onclick: () => { location.search = ''; } }, 'Clear')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries({ status: status.value, name: name.value.trim(), prefix: prefix.value.trim(), from: from.value, to: to.value })) {
      if (v) q.set(k, v);
    }
    if (Number(limit.value) !== 50) q.set('limit', limit.value);
    location.search = q.toString();
  });

  const counts = h('ul', { class: 'counts', 'aria-label': 'Instances by status' });
  const tbody = h('tbody');
  const selectAll = h('input', { type: 'checkbox', 'aria-label': 'Select every instance on this page' });
  const table = h('table', { class: 'list instances', 'aria-describedby': 'list-caption' },
    h('caption', { id: 'list-caption', class: 'sr-only' }, 'Workflow instances'),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', class: 'sel' }, selectAll),
      h('th', { scope: 'col' }, 'Instance ID'),
      h('th', { scope: 'col' }, 'Name'),
      h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col', class: 'wide' }, 'App'),
      h('th', { scope: 'col' }, 'Created'),
      h('th', { scope: 'col', class: 'wide' }, 'Updated'))),
    tbody);
  const pageInfo = h('span', { class: 'muted', 'aria-live': 'polite' });
  const prev = h('button', { type: 'button', disabled: true }, '← Previous');
  const next = h('button', { type: 'button', disabled: true }, 'Next →');
  const selInfo = h('span', { class: 'muted', id: 'sel-info' }, 'None selected');
  const scope = h('select', { 'aria-label': 'Act on' },
    h('option', { value: 'selected' }, 'Selected instances'),
    h('option', { value: 'matching' }, `All matching the filter (up to ${MAX_MATCHING})`));
  const bulkButtons = ['terminate', 'suspend', 'resume', 'purge'].map((op) =>
    h('button', { type: 'button', class: op === 'terminate' || op === 'purge' ? 'danger' : '', 'data-bulk': op, onclick: () => bulk(op) },
      op[0].toUpperCase() + op.slice(1)));
  const result = h('p', { class: 'result', role: 'status', 'aria-live': 'polite', id: 'bulk-result' });

  replace(main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Instances'),
      h('label', { class: 'inline', for: 'auto' }, auto, ' Auto-refresh')),
    counts, form,
    h('section', { class: 'bulk', 'aria-label': 'Bulk actions' }, selInfo, scope, bulkButtons),
    result,
    h('div', { class: 'table-wrap' }, table),
    h('div', { class: 'pager' }, prev, pageInfo, next));

  const params = () => ({ status: f.status, name: f.name, prefix: f.prefix, from: toRfc(f.from), to: toRfc(f.to) });

  function updateSelInfo() {
    selInfo.textContent = state.selected.size ? `${state.selected.size} selected` : 'None selected';
    selectAll.checked = state.rows.length > 0 && state.rows.every((r) => state.selected.has(r.instanceID));
  }

  selectAll.addEventListener('change', () => {
    for (const r of state.rows) {
      if (selectAll.checked) state.selected.add(r.instanceID); else state.selected.delete(r.instanceID);
    }
    for (const cb of tbody.querySelectorAll('input[type=checkbox]')) cb.checked = selectAll.checked;
    updateSelInfo();
  });

  function row(inst) {
    const id = inst.instanceID;
    const cb = h('input', { type: 'checkbox', checked: state.selected.has(id), 'aria-label': `Select ${id}` });
    cb.addEventListener('change', () => {
      if (cb.checked) state.selected.add(id); else state.selected.delete(id);
      updateSelInfo();
    });
    return h('tr', { 'data-id': id },
      h('td', { class: 'sel' }, cb),
      h('td', { class: 'id' }, h('a', { href: `/ui/instances/${encodeURIComponent(id)}` }, id)),
      h('td', { class: 'name' }, inst.workflowName),
      h('td', { class: 'st' }, statusBadge(inst.runtimeStatus), inst.waitingForSlot ? h('span', { class: 'muted small' }, ' waiting for a slot') : null),
      h('td', { class: 'wide' }, inst.appID || '—'),
      h('td', { class: 'created' }, h('time', { datetime: inst.createdAt }, fmtTime(inst.createdAt))),
      h('td', { class: 'wide' }, h('time', { datetime: inst.lastUpdatedAt }, fmtTime(inst.lastUpdatedAt))));
  }

  async function loadCounts() {
    const s = await get('/summary', { status: '', name: f.name, from: toRfc(f.from), to: toRfc(f.to) });
    const items = Object.entries(s.counts || {});
    replace(counts,
      h('li', {}, h('a', { href: '/ui/', class: 'count' }, h('strong', {}, s.total + (s.capped ? '+' : '')), ' total')),
      items.map(([st, n]) => {
        const q = new URLSearchParams(location.search);
        q.set('status', st);
        return h('li', {}, h('a', { href: `/ui/?${q}`, class: 'count', 'data-count': st, 'aria-current': f.status === st ? 'true' : null },
          h('strong', {}, n), ' ', statusBadge(st)));
      }));
  }

  async function loadPage() {
    const r = await get('/instances', { ...params(), limit: f.limit, after: state.cursors[state.page] });
    state.rows = r.instances || [];
    state.next = r.next || null;
    replace(tbody, state.rows.length ? state.rows.map(row)
      : h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No instances match.')));
    prev.disabled = state.page === 0;
    next.disabled = !state.next;
    pageInfo.textContent = `Page ${state.page + 1} · ${state.rows.length} shown`;
    updateSelInfo();
  }

  // Counting reads the whole list (up to the server's cap), so counts refresh less often.
  let countedAt = 0;
  const refresh = (force = false) => {
    const counting = force === true || Date.now() - countedAt > 15_000;
    if (counting) countedAt = Date.now();
    return Promise.all([counting ? loadCounts() : null, loadPage()]);
  };

  prev.addEventListener('click', () => { state.page = Math.max(0, state.page - 1); loadPage(); });
  next.addEventListener('click', () => {
    if (!state.next) return;
    state.cursors[state.page + 1] = state.next;
    state.page += 1;
    loadPage();
  });

  async function matchingIds() {
    const ids = [];
    let after = '';
    for (let i = 0; i < 10 && ids.length < MAX_MATCHING; i++) {
      const r = await get('/instances', { ...params(), limit: 200, after });
      for (const x of r.instances || []) ids.push(x.instanceID);
      if (!r.next) break;
      after = r.next;
    }
    return ids.slice(0, MAX_MATCHING);
  }

  async function bulk(op) {
    const ids = scope.value === 'matching' ? await matchingIds() : [...state.selected];
    if (!ids.length) { toast('Select instances first (or act on all matching the filter).', 'warn'); return; }
    const what = `${ids.length} instance${ids.length === 1 ? '' : 's'}`;
    const extra = op === 'purge' ? ' Their history is deleted for good; only finished instances can be purged.' : '';
    if (!await confirmDialog(`${op[0].toUpperCase() + op.slice(1)} ${what}?`, `This will ${op} ${what}.${extra}`, `${op[0].toUpperCase() + op.slice(1)} ${what}`, op === 'terminate' || op === 'purge')) return;
    result.textContent = `Working on ${what}…`;
    try {
      const r = await ops.bulk(op, ids);
      const failed = r.failed || [];
      result.textContent = `${op}: ${r.succeeded} of ${ids.length} succeeded` + (failed.length ? `; ${failed.length} failed (${failed.slice(0, 3).map((x) => `${x.instanceID}: ${x.message}`).join('; ')})` : '.');
      result.dataset.succeeded = r.succeeded;
      state.selected.clear();
    } catch (e) {
      result.textContent = `${op} failed: ${e.message}`;
    }
    await refresh(true);
  }

  await refresh(true);
  let stop = every(3000, refresh);
  auto.addEventListener('change', () => { stop(); stop = auto.checked ? every(3000, refresh) : () => {}; });
}
