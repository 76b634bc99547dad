import { get, set, setJSON, tokens, forgetSession } from './session.js';

/** A failed call: the problem+json's fields, or what stood in for them. */
export class Problem extends Error {
  constructor(title, detail = '', status = 0, requestId = '') {
    super(detail ? `${title}: ${detail}` : title);
    Object.assign(this, { title, detail, status, requestId });
  }
}

/** The form of the anonymous cart ids the edge gives (`X-Cart-ID`). */
export const isAnonymousCart = (id) => /^anon-[0-9a-f]{32}$/i.test(id ?? '');

async function problemOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not problem+json (a proxy's page, say): the status line stands in for it.
  }
  return new Problem(body?.title || `${response.status} ${response.statusText}`.trim(), body?.detail ?? '',
    response.status, body?.requestId || response.headers.get('X-Request-ID') || '');
}

async function attempt(method, path, body, headers, auth) {
  const token = auth ? tokens()?.accessToken : undefined;
  const init = { method, headers: { Accept: 'application/json', ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  else if (path.startsWith('/v1/cart') && get('cartId')) init.headers['X-Cart-ID'] = get('cartId');
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  try {
    return { response: await fetch(path, init), token };
  } catch (error) {
    throw new Problem(`The shop cannot be reached: ${error.message}`, 'Check your connection and try again.');
  }
}

async function refresh() {
  const session = tokens();
  if (!session?.refreshToken) return false;
  try {
    const response = await fetch('/v1/auth/refresh', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ refreshToken: session.refreshToken }),
    });
    if (!response.ok) return false;
    setJSON('tokens', { ...(await response.json()), email: session.email });
    return true;
  } catch {
    return false;
  }
}

// One refresh at a time: the server rotates the refresh token, and presenting a rotated one
// again ends every session of the customer, so concurrent 401s must share a single refresh.
let refreshing = null;
function refreshOnce() {
  refreshing ??= refresh().finally(() => { refreshing = null; });
  return refreshing;
}

/**
 * Calls the API and returns the parsed answer (null when empty); throws a Problem otherwise.
 * Signed-in calls carry the access token and, on a 401, refresh the session once and retry;
 * when that fails the customer is signed out (`shopfleet:signedout` on window).
 */
export async function api(method, path, { body, headers = {}, auth = true } = {}) {
  let { response, token } = await attempt(method, path, body, headers, auth);
  if (response.status === 401 && token) {
    const current = tokens()?.accessToken;
    // Another call may have refreshed the session meanwhile; then its token is simply retried.
    const renewed = current != null && (current !== token || await refreshOnce());
    if (renewed) {
      ({ response } = await attempt(method, path, body, headers, auth));
    } else {
      forgetSession();
      window.dispatchEvent(new Event('shopfleet:signedout'));
    }
  }
  if (!response.ok) throw await problemOf(response);
  if (method !== 'GET' && path.startsWith('/v1/cart')) {
    // A changed cart is a new order: the next checkout gets a new idempotency key, and an order
    // accepted before no longer stands for what a reopened checkout would place.
    set('checkoutKey', null);
    set('checkoutOrder', null);
  }
  const cartId = response.headers.get('X-Cart-ID');
  if (isAnonymousCart(cartId) && !tokens()) set('cartId', cartId);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}
