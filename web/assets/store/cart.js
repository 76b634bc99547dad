import { api } from './api.js';
import { h, heading, money, sum, times, problemBox, showProblem, clearProblem } from './ui.js';
import { updateCartCount } from './nav.js';

/** The cart and its products (for names and prices; a product taken off sale is missing). */
export async function loadCart() {
  const cart = await api('GET', '/v1/cart');
  const products = new Map();
  await Promise.all(cart.lines.map(async ({ productID }) => {
    try {
      products.set(productID, await api('GET', `/v1/products/${encodeURIComponent(productID)}`));
    } catch (error) {
      if (error.status !== 404) throw error;
    }
  }));
  return { cart, products };
}

export const cartTotal = ({ cart, products }) =>
  sum(cart.lines.filter((line) => products.has(line.productID))
    .map((line) => times(products.get(line.productID).price, line.quantity)));

/** `#/cart` */
export function cartView(root) {
  const title = heading('Your cart');
  const problem = problemBox();
  const body = h('div', {}, h('p', {}, 'Loading your cart…'));
  root.append(title, problem, body);

  // Changes the cart, draws it again and puts the focus back where it was (or on the heading).
  async function change(call, focusId) {
    clearProblem(problem);
    try {
      await call();
      await show();
      (document.getElementById(focusId) ?? title).focus();
    } catch (error) {
      showProblem(problem, error);
    }
  }

  function line({ productID, quantity }, product) {
    const name = product?.name ?? `${productID} (no longer for sale)`;
    const path = `/v1/cart/lines/${encodeURIComponent(productID)}`;
    const qtyId = `qty-${productID}`;
    const qty = h('input', { id: qtyId, type: 'number', min: 1, max: 99, value: String(quantity), inputmode: 'numeric' });
    qty.addEventListener('change', () => {
      if (qty.reportValidity()) change(() => api('PUT', path, { body: { quantity: Number(qty.value) } }), qtyId);
    });
    return h('li', { class: 'line', 'data-test': 'cart-line' },
      h('a', { class: 'name', href: `#/product/${encodeURIComponent(productID)}`, 'data-test': 'line-name' }, name),
      h('span', { class: 'unit' }, product ? money(product.price) : ''),
      h('span', { class: 'qty' },
        h('label', { for: qtyId }, 'Qty', h('span', { class: 'visually-hidden' }, ` of ${name}`)), qty),
      h('span', { class: 'amount' }, product ? money(times(product.price, quantity)) : '—'),
      h('button', { type: 'button', class: 'link', 'data-test': 'remove-line', 'aria-label': `Remove ${name}`,
        onclick: () => change(() => api('DELETE', path)) }, 'Remove'));
  }

  async function show() {
    const loaded = await loadCart();
    const { cart, products } = loaded;
    updateCartCount(cart);
    if (!cart.lines.length) {
      body.replaceChildren(h('p', {}, 'Your cart is empty. ', h('a', { href: '#/' }, 'Find something')));
      return;
    }
    body.replaceChildren(
      h('ul', { class: 'lines', id: 'cart-lines' }, cart.lines.map((each) => line(each, products.get(each.productID)))),
      h('p', { class: 'total' }, 'Total: ', h('strong', { id: 'cart-total' }, cartTotal(loaded))),
      h('div', { class: 'actions' },
        h('button', { type: 'button', id: 'empty-cart', class: 'secondary',
          onclick: () => change(() => api('DELETE', '/v1/cart')) }, 'Empty cart'),
        h('a', { href: '#/checkout', id: 'checkout', class: 'button' }, 'Check out')));
  }

  show().catch((error) => {
    body.replaceChildren();
    showProblem(problem, error);
  });
}
