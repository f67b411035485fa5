// One instance at /ui/instances/{id}: its header (status, times, payloads, failure), the
// timeline, the raw events, and the actions (raise an event, suspend/resume, terminate, purge,
// rerun from an event). A live instance is polled and redrawn without a reload.
import { h, replace, statusBadge, fmtTime, pretty, toast, confirmDialog, every } from './dom.js';
import { get, ops } from './api.js';
import { renderTimeline } from './timeline.js';

const LIVE = new Set(['RUNNING', 'PENDING', 'SUSPENDED']);
const FINISHED = new Set(['COMPLETED', 'FAILED', 'TERMINATED', 'CANCELED', 'CONTINUED_AS_NEW']);

function payload(title, text, open = false) {
  if (text == null || text === '') return null;
  return h('details', { class: 'payload', open }, h('summary', {}, title), h('pre', { tabindex: 0 }, pretty(text)));
}

function header(inst) {
  const p = inst.properties || {};
  const failure = p['dapr.workflow.failure.error_type'] || p['dapr.workflow.failure.error_message'];
  const dl = [
    ['Name', inst.workflowName],
    ['App', inst.appID || '—'],
    ['Created', fmtTime(inst.createdAt)],
    ['Updated', fmtTime(inst.lastUpdatedAt)],
    ['Completed', fmtTime(inst.completedAt)],
    ['Execution', `#${(inst.generation ?? 0) + 1}`],
  ];
  if (inst.parentInstanceID) dl.push(['Parent', h('a', { href: `/ui/instances/${encodeURIComponent(inst.parentInstanceID)}` }, inst.parentInstanceID)]);
  return h('div', { class: 'inst-head' },
    h('dl', { class: 'facts' }, dl.map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v)))),
    inst.waitingForSlot ? h('p', { class: 'note' }, 'Waiting for a concurrency slot.') : null,
    failure ? h('div', { class: 'failure', role: 'alert' },
      h('h3', {}, 'Failure: ', p['dapr.workflow.failure.error_type'] || 'error'),
      h('p', {}, p['dapr.workflow.failure.error_message'] || ''),
      p['dapr.workflow.failure.stack_trace'] ? h('details', { open: true }, h('summary', {}, 'Stack trace'), h('pre', { tabindex: 0 }, p['dapr.workflow.failure.stack_trace'])) : null) : null,
    h('div', { class: 'payloads' },
      payload('Input', p['dapr.workflow.input'], true),
      payload('Output', p['dapr.workflow.output'], true),
      payload('Custom status', p['dapr.workflow.custom_status'], true)));
}

function eventOptions(events) {
  // Rerun replays up to a TaskScheduled event: the new instance runs that activity again.
  return events.filter((e) => e.type === 'TaskScheduled')
    .map((e) => h('option', { value: e.eventId }, `#${e.eventId} ${e.name}`));
}

export async function render(main, id) {
  document.title = `${id} · Weft`;
  const title = h('h1', { class: 'inst-id' }, id);
  const badge = h('span', { id: 'inst-status' });
  const head = h('div');
  const timeline = h('div', { id: 'timeline' });
  const raw = h('pre', { id: 'raw-events', tabindex: 0 });
  const liveNote = h('span', { class: 'muted small', 'aria-live': 'polite' });
  let last = null;

  const act = async (label, fn, confirmText, danger = true) => {
    if (confirmText && !await confirmDialog(`${label} ${id}?`, confirmText, label, danger)) return;
    try {
      await fn();
      toast(`${label}: done`, 'ok');
    } catch (e) {
      toast(`${label} failed: ${e.message}`, 'error');
    }
    await refresh();
  };

  const suspendBtn = h('button', { type: 'button', 'data-action': 'suspend', onclick: () => act('Suspend', () => ops.suspend(id)) }, 'Suspend');
  const resumeBtn = h('button', { type: 'button', 'data-action': 'resume', onclick: () => act('Resume', () => ops.resume(id)) }, 'Resume');
  const terminateBtn = h('button', { type: 'button', class: 'danger', 'data-action': 'terminate',
    onclick: () => act('Terminate', () => ops.terminate(id), 'The workflow stops now and its children are terminated too.') }, 'Terminate');
  const purgeBtn = h('button', { type: 'button', class: 'danger', 'data-action': 'purge',
    onclick: () => act('Purge', async () => { await ops.purge(id); location.href = '/ui/'; }, 'The instance and its history are deleted for good.') }, 'Purge');

  const evName = h('input', { id: 'ev-name', name: 'event', type: 'text', required: true, autocomplete: 'off', placeholder: 'approval' });
  const evData = h('textarea', { id: 'ev-data', name: 'payload', rows: 3, placeholder: '{"approved": true}' });
  const raiseForm = h('form', { class: 'card', 'aria-labelledby': 'raise-title' },
    h('h2', { id: 'raise-title' }, 'Raise an event'),
    h('label', { class: 'field' }, h('span', {}, 'Event name'), evName),
    h('label', { class: 'field' }, h('span', {}, 'Payload (JSON, optional)'), evData),
    h('button', { type: 'submit', class: 'primary' }, 'Raise event'));
  raiseForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = evData.value.trim();
    if (data) {
      try { JSON.parse(data); } catch { toast('The payload is not valid JSON.', 'error'); evData.focus(); return; }
    }
    await act('Raise event', () => ops.raise(id, evName.value.trim(), data || 'null'));
  });

  const rrEvent = h('select', { id: 'rr-event', name: 'event' });
  const rrId = h('input', { id: 'rr-id', type: 'text', placeholder: 'new ID (optional)', autocomplete: 'off' });
  const rrInput = h('textarea', { id: 'rr-input', rows: 2, placeholder: 'new input (JSON, optional)' });
  const rerunForm = h('form', { class: 'card', 'aria-labelledby': 'rerun-title' },
    h('h2', { id: 'rerun-title' }, 'Rerun from an event'),
    h('label', { class: 'field' }, h('span', {}, 'From activity'), rrEvent),
    h('label', { class: 'field' }, h('span', {}, 'New instance ID'), rrId),
    h('label', { class: 'field' }, h('span', {}, 'New input'), rrInput),
    h('button', { type: 'submit' }, 'Rerun'));
  rerunForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!rrEvent.value) { toast('This instance has no activity to rerun from.', 'warn'); return; }
    const body = { eventId: Number(rrEvent.value), newInstanceId: rrId.value.trim() || null };
    if (rrInput.value.trim()) { body.input = rrInput.value.trim(); body.overwriteInput = true; }
    if (!await confirmDialog(`Rerun ${id}?`, `A new instance replays this one up to event #${body.eventId} and runs on from there.`, 'Rerun', false)) return;
    try {
      const r = await ops.rerun(id, body);
      location.href = `/ui/instances/${encodeURIComponent(r.newInstanceID)}`;
    } catch (err) {
      toast(`Rerun failed: ${err.message}`, 'error');
    }
  });

  replace(main,
    h('p', { class: 'crumbs' }, h('a', { href: '/ui/' }, '← Instances')),
    h('div', { class: 'page-head start' }, title, badge, liveNote),
    h('div', { class: 'actions', role: 'group', 'aria-label': 'Actions' }, suspendBtn, resumeBtn, terminateBtn, purgeBtn),
    head,
    h('section', { 'aria-labelledby': 'tl-title' }, h('h2', { id: 'tl-title' }, 'Timeline'), timeline),
    h('div', { class: 'forms' }, raiseForm, rerunForm),
    h('section', { 'aria-labelledby': 'raw-title' },
      h('details', {}, h('summary', { id: 'raw-title' }, 'Raw events (JSON)'), raw)));

  async function refresh() {
    let r;
    try {
      r = await get(`/instances/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e.status === 404) {
        replace(head, h('p', { class: 'error', role: 'alert' }, `No instance with ID ${id}.`));
        replace(timeline);
        return;
      }
      throw e;
    }
    const inst = r.instance;
    const st = inst.runtimeStatus;
    const key = `${st}|${r.events.length}|${inst.lastUpdatedAt}`;
    const live = LIVE.has(st);
    liveNote.textContent = live ? 'live · updates every 2 s' : '';
    if (key === last && !live) return;
    replace(badge, statusBadge(st));
    suspendBtn.hidden = st !== 'RUNNING' && st !== 'PENDING';
    resumeBtn.hidden = st !== 'SUSPENDED';
    terminateBtn.hidden = !live;
    purgeBtn.hidden = !FINISHED.has(st);
    raiseForm.hidden = !live; // only a live instance can receive an event
    rerunForm.hidden = !FINISHED.has(st); // a rerun starts from a finished instance
    if (key !== last) {
      replace(head, header(inst));
      const prev = rrEvent.value;
      replace(rrEvent, eventOptions(r.events));
      if (prev) rrEvent.value = prev;
      raw.textContent = JSON.stringify(r.events, null, 2);
    }
    replace(timeline, renderTimeline(r.events, r.now, live, inst.generation || 0));
    last = key;
  }

  await refresh();
  // Every 2 s while the instance lives; a finished one is only re-checked every 10 s.
  let lastCheck = Date.now();
  every(2000, async () => {
    if (!liveNote.textContent && Date.now() - lastCheck < 10_000) return;
    lastCheck = Date.now();
    await refresh();
  });
}
