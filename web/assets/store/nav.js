import { api } from './api.js';
import { get, tokens } from './session.js';

/** Goes to a page; going to the page already shown draws it again. */
export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = hash;
}

/** The badge: how many items the cart holds (from `cart` when the caller has it). */
export async function updateCartCount(cart) {
  const badge = document.getElementById('cart-count');
  try {
    cart ??= tokens() || get('cartId') ? await api('GET', '/v1/cart') : { lines: [] };
    badge.textContent = String(cart.lines.reduce((count, line) => count + line.quantity, 0));
  } catch {
    badge.textContent = '?'; // the cart page says why
  }
}

/** Who is signed in, and the matching links. */
export function updateAccount() {
  const session = tokens();
  const whoami = document.getElementById('whoami');
  whoami.textContent = session ? `Signed in as ${session.email ?? session.customerId}` : '';
  whoami.hidden = !session;
  document.getElementById('nav-login').hidden = !!session;
  document.getElementById('nav-register').hidden = !!session;
  document.getElementById('logout').hidden = !session;
}
