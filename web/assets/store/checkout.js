import { api } from './api.js';
import { get, set, getJSON, setJSON } from './session.js';
import { h, field, heading, problemBox, showProblem, clearProblem } from './ui.js';
import { navigate } from './nav.js';
import { loadCart, cartTotal } from './cart.js';

const ADDRESS = [ // id, Address field, label, autocomplete
  ['ship-name', 'name', 'Full name', 'name'],
  ['ship-line1', 'line1', 'Address', 'address-line1'],
  ['ship-line2', 'line2', 'Address line 2 (optional)', 'address-line2'],
  ['ship-postal', 'postalCode', 'Postal code', 'postal-code'],
  ['ship-city', 'city', 'City', 'address-level2'],
  ['ship-country', 'country', 'Country', 'country'],
];

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID exists only in secure contexts; a shop served over plain http (not localhost) is not one.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** `#/checkout` (signed in) */
export function checkoutView(root) {
  // An order was accepted from this cart and the cart has not changed since (any change forgets
  // it, and the key: api.js). A reload that landed back here, or the Back button: show that order
  // rather than a checkout that would place nothing new — unless it was cancelled (a declined
  // card leaves the cart as it was), which makes this a new checkout with a new key.
  const accepted = get('checkoutOrder');
  if (!accepted) return showCheckout(root);
  let left = false;
  root.append(heading('Check out'), h('p', { class: 'loading' }, 'Looking at the order placed from this cart…'));
  api('GET', `/v1/orders/${encodeURIComponent(accepted)}`)
    .then((order) => order.status, (error) => (error.status === 404 ? 'being recorded' : 'unknown'))
    .then((status) => {
      if (left) return;
      if (status !== 'cancelled') {
        navigate(`#/orders/${encodeURIComponent(accepted)}`);
        return;
      }
      set('checkoutOrder', null);
      set('checkoutKey', null);
      root.replaceChildren();
      showCheckout(root);
    });
  return () => { left = true; };
}

function showCheckout(root) {
  // The key names this checkout and survives a reload (with what was typed): pressing "Place
  // order" again after an answer that never arrived gets the same order, not a second one.
  let key = get('checkoutKey');
  if (!key) {
    key = newKey();
    set('checkoutKey', key);
  }
  const saved = getJSON('checkoutForm') ?? {};
  const inputs = ADDRESS.map(([id, name, , autocomplete]) =>
    h('input', { id, name, type: 'text', autocomplete, value: saved[name] ?? '' }));
  const country = inputs.at(-1);
  country.maxLength = 2;
  country.setAttribute('autocapitalize', 'characters');
  const payment = h('select', { id: 'payment-method', name: 'paymentMethod' },
    h('option', { value: 'pm_card_visa' }, 'Test card: Visa'),
    h('option', { value: 'pm_card_chargeDeclined' }, 'Test card: always declined'));
  payment.value = saved.paymentMethod ?? 'pm_card_visa';
  if (payment.selectedIndex < 0) payment.value = 'pm_card_visa';
  const place = h('button', { id: 'place-order', type: 'submit' }, 'Place order');
  const problem = problemBox();
  const summary = h('div', { class: 'summary', id: 'checkout-summary' }, h('p', {}, 'Loading your cart…'));

  const values = () => ({ ...Object.fromEntries(inputs.map((input) => [input.name, input.value])), paymentMethod: payment.value });
  const save = () => setJSON('checkoutForm', values());

  async function submit(event) {
    event.preventDefault();
    clearProblem(problem);
    place.disabled = true;
    const { paymentMethod, ...typed } = values();
    // The server checks the address (and says which field is wrong); only an empty line 2 is left out.
    const shippingAddress = Object.fromEntries(Object.entries(typed)
      .map(([name, value]) => [name, value.trim()]).filter(([name, value]) => value || name !== 'line2'));
    try {
      const accepted = await api('POST', '/v1/orders',
        { body: { paymentMethod, shippingAddress }, headers: { 'Idempotency-Key': key } });
      // Remembered, with the key, until the cart changes: a reload that lands back here goes to
      // the order instead of starting a checkout with a new key.
      set('checkoutOrder', accepted.orderId);
      navigate(`#/orders/${encodeURIComponent(accepted.orderId)}`);
    } catch (error) {
      showProblem(problem, error);
      place.disabled = false;
    }
  }

  root.append(heading('Check out'), summary,
    h('form', { class: 'checkout', novalidate: true, oninput: save, onchange: save, onsubmit: submit },
      h('fieldset', {}, h('legend', {}, 'Shipping address'),
        inputs.map((input, index) => field(ADDRESS[index][2], input,
          input === country ? 'Two capital letters, e.g. GB, FR, DE.' : undefined))),
      h('fieldset', {}, h('legend', {}, 'Payment'), field('Payment method', payment)),
      problem, place));

  loadCart().then((loaded) => {
    const count = loaded.cart.lines.reduce((total, line) => total + line.quantity, 0);
    summary.replaceChildren(count
      ? h('p', {}, `${count} item${count === 1 ? '' : 's'}, total `, h('strong', { id: 'checkout-total' }, cartTotal(loaded)),
        ' (', h('a', { href: '#/cart' }, 'change'), ')')
      : h('p', {}, 'Your cart is empty.'));
  }, (error) => {
    summary.replaceChildren();
    showProblem(problem, error);
  });
}
