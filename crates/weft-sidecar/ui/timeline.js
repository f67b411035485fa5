// The history of one instance as a timeline: activity attempts, timers and child workflows as
// bars (scheduled → finished), external events and status changes as marks, one section per
// execution (continue-as-new starts a new one).
import { h, fmtDuration, fmtTime } from './dom.js';

const ms = (iso) => (iso ? new Date(iso).getTime() : NaN);
// A timer this far out is the SDK's stand-in for "wait forever", not a real deadline.
const FOREVER_MS = 365 * 24 * 3600 * 1000;

// Splits the history at each ExecutionStarted (a new execution after continue-as-new).
export function executions(events) {
  const out = [[]];
  let started = false;
  for (const e of events) {
    if (e.type === 'ExecutionStarted') {
      if (started) out.push([]);
      started = true;
    }
    out[out.length - 1].push(e);
  }
  return out;
}

// Bars and marks of one execution.
export function model(events, nowIso, live) {
  const now = ms(nowIso);
  const items = [];
  const byId = new Map();
  const marks = [];
  let start = NaN;
  let end = NaN;
  const attempts = new Map();
  for (const e of events) {
    const t = ms(e.timestamp);
    if (!Number.isNaN(t)) {
      if (Number.isNaN(start) || t < start) start = t;
      if (Number.isNaN(end) || t > end) end = t;
    }
    switch (e.type) {
      case 'TaskScheduled': {
        const n = (attempts.get(e.name) || 0) + 1;
        attempts.set(e.name, n);
        const it = { kind: 'activity', id: e.eventId, name: e.name, attempt: n, from: t, to: NaN, state: 'pending', event: e };
        items.push(it);
        byId.set(`task:${e.eventId}`, it);
        break;
      }
      case 'TaskCompleted':
      case 'TaskFailed': {
        const it = byId.get(`task:${e.taskScheduledId}`);
        if (it) { it.to = t; it.state = e.type === 'TaskCompleted' ? 'ok' : 'failed'; it.done = e; }
        break;
      }
      case 'TimerCreated': {
        const fire = ms(e.fireAt);
        const it = { kind: 'timer', id: e.eventId, name: 'timer', from: t, fireAt: fire, to: NaN, state: 'pending', event: e };
        items.push(it);
        byId.set(`timer:${e.eventId}`, it);
        break;
      }
      case 'TimerFired': {
        const it = byId.get(`timer:${e.timerId}`);
        // The fired event is stamped when the timer is set: the bar ends at its due time.
        if (it) { it.to = Number.isNaN(it.fireAt) ? t : it.fireAt; it.state = 'ok'; it.done = e; }
        break;
      }
      case 'ChildWorkflowInstanceCreated': {
        const it = { kind: 'child', id: e.eventId, name: e.name, child: e.instanceId, from: t, to: NaN, state: 'pending', event: e };
        items.push(it);
        byId.set(`child:${e.eventId}`, it);
        break;
      }
      case 'ChildWorkflowInstanceCompleted':
      case 'ChildWorkflowInstanceFailed': {
        const it = byId.get(`child:${e.taskScheduledId}`);
        if (it) { it.to = t; it.state = e.type.endsWith('Completed') ? 'ok' : 'failed'; it.done = e; }
        break;
      }
      case 'EventRaised':
        marks.push({ kind: 'event', at: t, label: `event “${e.name}”`, event: e });
        break;
      case 'EventSent':
        marks.push({ kind: 'sent', at: t, label: `sent “${e.name}” to ${e.instanceId}`, event: e });
        break;
      case 'ExecutionSuspended':
      case 'ExecutionResumed':
      case 'ExecutionTerminated':
      case 'ExecutionCompleted':
      case 'ExecutionStalled':
      case 'ContinueAsNew':
        marks.push({ kind: 'status', at: t, label: e.type.replace('Execution', '').toLowerCase() + (e.status ? ` (${e.status})` : ''), event: e });
        break;
      default:
        break;
    }
  }
  // Open bars run to now while the instance lives, else to its last event.
  const openEnd = live && !Number.isNaN(now) ? Math.max(now, end) : end;
  for (const it of items) {
    if (!Number.isNaN(it.to)) continue;
    it.open = true;
    const until = it.kind === 'timer' && it.fireAt - it.from < FOREVER_MS ? Math.min(it.fireAt, openEnd) : openEnd;
    it.to = Math.max(until, it.from);
  }
  if (items.length) end = Math.max(end, ...items.map((i) => i.to));
  return { items, marks, start, end };
}

function pct(t, start, span) {
  return `${(((t - start) / span) * 100).toFixed(3)}%`;
}

// The app a cross-app activity or child runs in (multi-app workflows), as ` → app`.
function target(it) {
  const app = it.event && it.event.router && it.event.router.targetAppID;
  return app ? ` → ${app}` : '';
}

function label(it) {
  if (it.kind === 'activity') return `${it.name} · attempt ${it.attempt}${target(it)}`;
  if (it.kind === 'timer') return it.fireAt - it.from >= FOREVER_MS ? 'timer (wait without timeout)' : 'timer';
  return `child ${it.name}${target(it)}`;
}

function describe(it) {
  const what = label(it);
  const dur = fmtDuration(it.to - it.from);
  const state = it.open ? 'still open' : it.state === 'failed' ? 'failed' : it.kind === 'timer' ? 'fired' : 'completed';
  return `${what}: ${fmtTime(new Date(it.from).toISOString())}, ${state} after ${dur}`;
}

function axis(start, span) {
  const ticks = [];
  for (let i = 0; i <= 4; i++) {
    ticks.push(h('span', { class: 'tick', style: { left: `${i * 25}%` } }, `+${fmtDuration((span * i) / 4)}`));
  }
  return h('div', { class: 'axis', 'aria-hidden': 'true' }, ticks);
}

// Bars drawn per execution at most: a history of thousands of activities stays usable (the raw
// events below the timeline hold all of them).
const MAX_BARS = 400;

function section(model, title) {
  const { marks, start } = model;
  const items = model.items.slice(0, MAX_BARS);
  const hidden = model.items.length - items.length;
  const span = Math.max(model.end - start, 1);
  const rows = items.map((it) => {
    const name = it.kind === 'child'
      ? h('a', { href: `/ui/instances/${encodeURIComponent(it.child)}` }, label(it))
      : label(it);
    const bar = h('div', {
      class: `bar ${it.kind} ${it.state}${it.open ? ' open' : ''}`,
      'data-kind': it.kind, 'data-name': it.name || '', 'data-attempt': it.attempt || '',
      tabindex: 0, role: 'img', 'aria-label': describe(it), title: describe(it),
      style: { left: pct(it.from, start, span), width: `max(3px, ${pct(it.to, it.from, span)})` },
    });
    return h('li', { class: 'trow' },
      h('div', { class: 'tlabel' }, h('span', { class: `dot ${it.kind}` }), name),
      h('div', { class: 'track' }, bar));
  });
  const markRow = marks.length ? h('li', { class: 'trow marks-row' },
    h('div', { class: 'tlabel' }, 'events'),
    h('div', { class: 'track' }, marks.map((m) => h('span', {
      class: `mark ${m.kind}`, tabindex: 0, role: 'img', 'data-kind': m.kind,
      'aria-label': `${m.label} at ${fmtTime(new Date(m.at).toISOString())}`,
      title: `${m.label} · +${fmtDuration(m.at - start)}`,
      style: { left: pct(m.at, start, span) },
    })))) : null;
  return h('section', { class: 'tsection', 'aria-label': title },
    h('h3', {}, title, h('span', { class: 'muted small' }, ` · ${fmtDuration(span)}`)),
    items.length || marks.length
      ? h('div', { class: 'timeline' }, axis(start, span), h('ol', { class: 'trows' }, rows, markRow))
      : h('p', { class: 'muted' }, 'Nothing scheduled in this execution.'),
    hidden > 0 ? h('p', { class: 'note small' }, `${hidden} more bars not drawn (the first ${MAX_BARS} are); the raw events hold them all.`) : null);
}

export function renderTimeline(events, nowIso, live, generation = 0) {
  const execs = executions(events);
  const many = execs.length > 1;
  return h('div', { class: 'timelines' },
    generation > 0 && !many ? h('p', { class: 'note small', 'data-generation': generation },
      `Execution #${generation + 1}: this instance continued as new ${generation} time${generation === 1 ? '' : 's'}; the history holds the current execution only.`) : null,
    h('p', { class: 'legend muted small' },
      h('span', { class: 'dot activity' }), ' activity attempt ', h('span', { class: 'dot timer' }), ' timer ',
      h('span', { class: 'dot child' }), ' child workflow ', h('span', { class: 'mark-key event' }), ' external event ',
      h('span', { class: 'mark-key status' }), ' status change · red: failed · striped: still open'),
    execs.map((ev, i) => {
      const isLast = i === execs.length - 1;
      const m = model(ev, nowIso, live && isLast);
      const title = many ? `Execution ${i + 1}${isLast ? ' (current)' : ''}` : `Execution #${generation + 1}`;
      return section(m, title);
    }));
}
