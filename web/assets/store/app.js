import { api } from './api.js';
import { tokens, forgetSession } from './session.js';
import { h, heading } from './ui.js';
import { navigate, updateAccount, updateCartCount } from './nav.js';
import { searchView } from './search.js';
import { productView } from './product.js';
import { cartView } from './cart.js';
import { loginView, registerView } from './account.js';
import { checkoutView } from './checkout.js';
import { orderView, historyView } from './orders.js';

const ROUTES = [ // path pattern, view, needs sign-in
  [/^\/?$/, searchView, false],
  [/^\/product\/([^/]+)$/, productView, false],
  [/^\/cart$/, cartView, false],
  [/^\/login$/, loginView, false],
  [/^\/register$/, registerView, false],
  [/^\/checkout$/, checkoutView, true],
  [/^\/orders$/, historyView, true],
  [/^\/orders\/([^/]+)$/, orderView, true],
];

const main = document.getElementById('view');
let leave = null;
let shownPath = null;

function notFound(root) {
  root.append(heading('Page not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the shop')));
}

function currentRoute() {
  const hash = location.hash.replace(/^#/, '');
  const cut = hash.indexOf('?');
  return cut < 0 ? [hash, ''] : [hash.slice(0, cut), hash.slice(cut + 1)];
}

function route() {
  const [path, query] = currentRoute();
  leave?.();
  leave = null;
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  if (found?.[2] && !tokens()) {
    navigate(`#/login?next=${encodeURIComponent(path)}`);
    return;
  }
  // Each page draws into a fresh element: answers that arrive after leaving land nowhere visible.
  const root = h('div', { class: 'page' });
  main.replaceChildren(root);
  if (found) {
    const id = path.match(found[0])[1];
    leave = found[1](root, { id: id && decodeURIComponent(id), params: new URLSearchParams(query) }) ?? null;
  } else {
    notFound(root);
  }
  if (shownPath !== null && shownPath !== path) (root.querySelector('h1') ?? main).focus();
  shownPath = path;
}

document.getElementById('logout').addEventListener('click', async () => {
  const session = tokens();
  try {
    // Without the access token: a refresh here would rotate the very token being revoked.
    await api('POST', '/v1/auth/logout', { body: { refreshToken: session?.refreshToken ?? '' }, auth: false });
  } catch {
    // Signed out on this device either way; the server's token then just expires.
  }
  forgetSession();
  updateAccount();
  updateCartCount();
  navigate('#/');
  main.focus();
});

window.addEventListener('shopfleet:signedout', () => {
  updateAccount();
  const [path] = currentRoute();
  if (path !== '/login') navigate(`#/login?expired=1&next=${encodeURIComponent(path || '/')}`);
});

window.addEventListener('hashchange', route);
updateAccount();
updateCartCount();
route();
