// What the storefront remembers between visits. The console shares this origin, so every key
// carries the storefront's own prefix and neither page reads the other's.
const PREFIX = 'shopfleet.store.';

export function get(name) {
  return localStorage.getItem(PREFIX + name);
}

export function set(name, value) {
  if (value == null) localStorage.removeItem(PREFIX + name);
  else localStorage.setItem(PREFIX + name, value);
}

export function getJSON(name) {
  try {
    return JSON.parse(get(name));
  } catch {
    return null;
  }
}

export function setJSON(name, value) {
  set(name, value == null ? null : JSON.stringify(value));
}

/** The session (tokens and the customer's email) or null. */
export const tokens = () => getJSON('tokens');

/** Forgets the customer: tokens and the checkout in progress (a key and an address are theirs). */
export function forgetSession() {
  for (const name of ['tokens', 'checkoutKey', 'checkoutForm', 'checkoutOrder']) set(name, null);
}
