// Calls to the sidecar from the dashboard: everything goes through /ui/api (same origin, the
// token cookie), and every request that changes something carries x-weft-ui (see ui/auth.rs).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function answer(r) {
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!r.ok) {
    throw new ApiError(r.status, (body && body.message) || text || `HTTP ${r.status}`);
  }
  return body;
}

export async function get(path, params) {
  const q = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null)) : null;
  const url = `/ui/api${path}${q && [...q].length ? `?${q}` : ''}`;
  return answer(await fetch(url, { credentials: 'same-origin', headers: { accept: 'application/json' } }));
}

export async function post(path, body, raw = false) {
  const headers = { 'x-weft-ui': '1' };
  let data;
  if (raw) {
    data = body ?? '';
    headers['content-type'] = 'application/json';
  } else if (body !== undefined) {
    data = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  return answer(await fetch(`/ui/api${path}`, { method: 'POST', credentials: 'same-origin', headers, body: data }));
}

const wf = (id) => `/http/v1.0/workflows/dapr/${encodeURIComponent(id)}`;

// The Dapr HTTP workflow API, served again under /ui/api/http.
export const ops = {
  terminate: (id) => post(`${wf(id)}/terminate`),
  suspend: (id) => post(`${wf(id)}/pause`),
  resume: (id) => post(`${wf(id)}/resume`),
  purge: (id) => post(`${wf(id)}/purge`),
  raise: (id, name, payload) => post(`${wf(id)}/raiseEvent/${encodeURIComponent(name)}`, payload, true),
  rerun: (id, body) => post(`/instances/${encodeURIComponent(id)}/rerun`, body),
  bulk: (op, ids) => post('/bulk', { op, ids }),
};
