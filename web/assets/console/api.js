// The console's session and its calls to the edge. Every call sends the admin's access token;
// a 401 gets one refresh of the session, then the call again; if that fails, the session ends.

const KEY = 'shopfleet.console.';

/** An error answer of the API (problem+json, or whatever a proxy in between sent). */
export class ApiProblem extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || `HTTP ${status}`;
    this.detail = problem.detail || '';
    this.requestId = problem.requestId || '';
  }
}

/** fetch rejected: the edge could not be reached at all. */
export class Unreachable extends Error {}

/** The session ended while a call was under way; the login form is shown instead. */
export class SignedOut extends Error {}

/** Whether an error only means that nobody waits for the answer any more. */
export function isQuiet(error) {
  return error instanceof SignedOut || error?.name === 'AbortError';
}

// The tokens live under one key ending in `tokens`, which the journeys' failure reports leave out.
function readTokens() {
  try {
    return JSON.parse(localStorage.getItem(KEY + 'tokens')) || {};
  } catch {
    return {};
  }
}

export const session = {
  get accessToken() { return readTokens().accessToken; },
  get refreshToken() { return readTokens().refreshToken; },
  get email() { return localStorage.getItem(KEY + 'email') || ''; },
  get signedIn() { return Boolean(this.accessToken && this.refreshToken); },
  store(tokens, email) {
    localStorage.setItem(KEY + 'tokens', JSON.stringify({ accessToken: tokens.accessToken, refreshToken: tokens.refreshToken }));
    if (email !== undefined) localStorage.setItem(KEY + 'email', email);
  },
  clear() {
    for (const name of ['tokens', 'email']) localStorage.removeItem(KEY + name);
  },
};

let signedOutListener = () => {};
/** `listener(message)` runs when the session ends by itself (the refresh failed). */
export function onSignedOut(listener) { signedOutListener = listener; }

async function send(method, path, body, { token, signal } = {}) {
  const headers = { Accept: 'application/json, application/problem+json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    if (error?.name === 'AbortError') throw error;
    throw new Unreachable(`The shop cannot be reached: ${error.message || error}`);
  }
  return response;
}

async function parse(response) {
  const text = await response.text();
  let value = null;
  if (text) {
    try { value = JSON.parse(text); } catch { value = null; }
  }
  if (response.ok) return value;
  if (value && typeof value === 'object') throw new ApiProblem(response.status, value);
  throw new ApiProblem(response.status, {
    title: `${response.status} ${response.statusText}`.trim(),
    detail: text.slice(0, 300),
    requestId: response.headers.get('X-Request-ID') || '',
  });
}

/** Logs in; returns the tokens (with `role`) without storing them. */
export async function login(email, password) {
  return parse(await send('POST', '/v1/auth/login', { email, password }));
}

/** Ends a session on the server (best effort: the page forgets it either way). */
export async function revoke(refreshToken) {
  if (!refreshToken) return;
  try {
    await send('POST', '/v1/auth/logout', { refreshToken });
  } catch {
    // An unreachable edge cannot be told; the refresh token expires by itself.
  }
}

export async function logout() {
  const refreshToken = session.refreshToken;
  session.clear();
  await revoke(refreshToken);
}

// One refresh at a time: the refresh token rotates, so a second refresh with the same token
// would be refused (and a reused token ends every session of the account).
let refreshing = null;

function refresh() {
  refreshing ??= (async () => {
    const refreshToken = session.refreshToken;
    if (!refreshToken) return false;
    const response = await send('POST', '/v1/auth/refresh', { refreshToken });
    if (!response.ok) return false;
    const tokens = await response.json();
    if (tokens.role !== 'admin') return false;
    session.store(tokens);
    return true;
  })().finally(() => { refreshing = null; });
  return refreshing;
}

function endSession(message) {
  session.clear();
  signedOutListener(message);
  throw new SignedOut(message);
}

/** A signed-in call: parsed JSON, or throws ApiProblem / Unreachable / SignedOut / AbortError. */
export async function call(method, path, body, { signal } = {}) {
  const token = session.accessToken;
  if (!token) endSession('Sign in to use the console.');
  let response = await send(method, path, body, { token, signal });
  if (response.status === 401) {
    // Another call may have refreshed the session meanwhile; then the new token is enough.
    const renewed = session.accessToken !== token || await refresh();
    if (!renewed) endSession('Your session has ended; sign in again.');
    response = await send(method, path, body, { token: session.accessToken, signal });
    if (response.status === 401) endSession('Your session has ended; sign in again.');
  }
  return parse(response);
}

export const get = (path, options) => call('GET', path, undefined, options);
export const post = (path, body, options) => call('POST', path, body, options);

/** `?a=1&b=x&b=y` from an object; empty values and `false` are left out, arrays repeat the key. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const one of Array.isArray(value) ? value : [value]) {
      if (one === undefined || one === null || one === '' || one === false) continue;
      search.append(name, String(one));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

export const enc = encodeURIComponent;
