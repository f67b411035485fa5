// Small DOM and formatting helpers shared by the pages (no framework: elements are built here).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function statusBadge(status) {
  const s = status || 'UNKNOWN';
  return h('span', { class: `badge st-${s.toLowerCase()}`, 'data-status': s }, s.replace(/_/g, ' '));
}

export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function fmtDuration(ms) {
  if (ms == null || Number.isNaN(ms)) return '—';
  const a = Math.abs(ms);
  if (a < 1000) return `${Math.round(ms)} ms`;
  if (a < 60_000) return `${(ms / 1000).toFixed(a < 10_000 ? 2 : 1)} s`;
  if (a < 3_600_000) return `${Math.floor(ms / 60_000)} m ${Math.round((a % 60_000) / 1000)} s`;
  return `${Math.floor(ms / 3_600_000)} h ${Math.round((a % 3_600_000) / 60_000)} m`;
}

// Pretty JSON when the text is JSON, the text itself otherwise.
export function pretty(text) {
  if (text == null) return '';
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return String(text); }
}

let toastTimer = null;
export function toast(msg, kind = 'info') {
  const t = document.getElementById('toast');
  if (!t) return;
  t.className = `show ${kind}`;
  t.textContent = msg;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.className = ''; }, 6000);
}

// A modal confirmation (a <dialog>: focus is trapped and Escape cancels). Resolves true/false.
export function confirmDialog(title, text, okLabel = 'Confirm', danger = true) {
  return new Promise((resolve) => {
    const ok = h('button', { type: 'submit', value: 'ok', class: danger ? 'danger' : 'primary' }, okLabel);
    const cancel = h('button', { type: 'submit', value: 'cancel' }, 'Cancel');
    const d = h('dialog', { 'aria-labelledby': 'dlg-title', class: 'confirm' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'dlg-title' }, title),
        h('p', {}, text),
        h('div', { class: 'row end' }, cancel, ok)));
    d.addEventListener('close', () => { resolve(d.returnValue === 'ok'); d.remove(); });
    document.body.append(d);
    d.showModal();
    cancel.focus();
  });
}

// A repeating refresh that pauses while the tab is hidden; returns a stop function.
export function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try { await fn(); } catch (e) { console.warn('refresh failed', e); }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => { stopped = true; clearTimeout(timer); };
}

export const STATUSES = ['RUNNING', 'PENDING', 'SUSPENDED', 'COMPLETED', 'FAILED', 'TERMINATED', 'CANCELED', 'CONTINUED_AS_NEW', 'STALLED'];
