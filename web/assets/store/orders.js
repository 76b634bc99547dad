import { api } from './api.js';
import { h, heading, money, times, problemBox, showProblem, clearProblem } from './ui.js';
import { updateCartCount } from './nav.js';

const FINAL = new Set(['completed', 'cancelled']);
const CANCELLABLE = new Set(['pending', 'confirmed']);
const HISTORY_PAGE = 10;
const NOT_YET_RECORDED_MS = 30_000;

const when = (iso) => new Date(iso).toLocaleString();
const orderLink = (id) => `#/orders/${encodeURIComponent(id)}`;

function linesTable(order) {
  return h('div', { class: 'table-wrap' }, h('table', { class: 'order-lines' },
    h('caption', { class: 'visually-hidden' }, 'What was ordered'),
    h('thead', {}, h('tr', {}, ['Product', 'Qty', 'Price', 'Amount'].map((label) => h('th', { scope: 'col' }, label)))),
    h('tbody', {}, order.lines.map((line) => h('tr', { 'data-test': 'order-line' },
      h('td', {}, line.name), h('td', { class: 'num' }, line.quantity),
      h('td', { class: 'num' }, money(line.unitPrice)), h('td', { class: 'num' }, money(times(line.unitPrice, line.quantity)))))),
    h('tfoot', {}, h('tr', {}, h('th', { scope: 'row', colspan: 3 }, 'Total'),
      h('td', { class: 'num', id: 'order-total' }, money(order.total))))));
}

/** `#/orders/<id>`: follows the order every second until it is completed or cancelled. */
export function orderView(root, { id }) {

  const title = heading('Your order');
  const problem = problemBox();
  const status = h('strong', { id: 'order-status', class: 'status', 'aria-live': 'polite', 'aria-atomic': 'true' }, '…');
  const reason = h('span', { id: 'order-reason', 'aria-live': 'polite' });
  const reasonLine = h('p', { hidden: true }, 'Reason: ', reason);
  const note = h('p', { class: 'note', role: 'status' });
  const details = h('div');
  const cancel = h('button', { type: 'button', id: 'cancel-order', class: 'secondary', hidden: true,
    'aria-controls': 'cancel-panel', 'aria-expanded': 'false' }, 'Cancel order');
  const confirm = h('button', { type: 'button', id: 'cancel-confirm', class: 'danger' }, 'Yes, cancel the order');
  const keep = h('button', { type: 'button', id: 'cancel-keep', class: 'secondary' }, 'Keep it');
  const panel = h('div', { id: 'cancel-panel', class: 'confirm', hidden: true },
    h('p', {}, 'Cancel this order? It can be cancelled until its payment is taken.'), h('div', { class: 'actions' }, confirm, keep));

  const openPanel = (open) => {
    panel.hidden = !open;
    cancel.setAttribute('aria-expanded', String(open));
    (open ? confirm : cancel).focus();
  };
  cancel.addEventListener('click', () => openPanel(true));
  keep.addEventListener('click', () => openPanel(false));
  confirm.addEventListener('click', async () => {
    clearProblem(problem);
    confirm.disabled = true;
    try {
      await api('POST', `/v1/orders/${encodeURIComponent(id)}/cancel`);
      panel.hidden = true;
      note.textContent = 'Cancellation requested; the status below follows it.';
      title.focus();
    } catch (error) {
      showProblem(problem, error);
    } finally {
      confirm.disabled = false;
    }
  });

  root.append(title, h('p', { class: 'order-id' }, id), problem, note,
    h('p', { class: 'order-status' }, 'Status: ', status), reasonLine,
    h('div', { class: 'actions' }, cancel), panel, details);

  function show(order) {
    if (status.textContent !== order.status) updateCartCount(); // a confirmed order takes its items out of the cart
    status.textContent = order.status;
    status.className = `status status-${order.status}`;
    reason.textContent = order.statusReason ?? '';
    reasonLine.hidden = !order.statusReason;
    const cancellable = CANCELLABLE.has(order.status);
    if (!cancellable) {
      // Hiding the focused control would drop the keyboard user's place: keep it on the page.
      const hadFocus = panel.contains(document.activeElement) || document.activeElement === cancel;
      panel.hidden = true;
      if (hadFocus) title.focus();
    }
    cancel.hidden = !cancellable;
    if (!details.childElementCount) {
      details.append(h('p', {}, `Placed ${when(order.placedAt)}`), linesTable(order));
    }
  }

  const started = Date.now();
  let timer = 0;
  let left = false;
  async function poll() {
    try {
      const order = await api('GET', `/v1/orders/${encodeURIComponent(id)}`);
      clearProblem(problem);
      if (note.dataset.waiting) note.textContent = '';
      delete note.dataset.waiting;
      show(order);
      if (FINAL.has(order.status)) return;
    } catch (error) {
      if (error.status === 404 && Date.now() - started < NOT_YET_RECORDED_MS) {
        // Just after checkout the order is still on its way to the orders service.
        note.textContent = 'Your order was accepted and is being recorded…';
        note.dataset.waiting = 'yes';
      } else {
        showProblem(problem, error);
        if ([401, 403, 404].includes(error.status)) return;
      }
    }
    if (!left) timer = setTimeout(poll, 1000);
  }
  poll();
  return () => {
    left = true;
    clearTimeout(timer);
  };
}

/** `#/orders`: newest first, `Older` pages back with `before`. */
export function historyView(root) {
  const problem = problemBox();
  const list = h('ul', { id: 'orders', class: 'orders' });
  const empty = h('p', { hidden: true }, 'You have not ordered anything yet. ', h('a', { href: '#/' }, 'Find something'));
  const older = h('button', { type: 'button', id: 'older-orders', class: 'secondary', hidden: true }, 'Older');
  root.append(heading('Your orders'), problem, list, empty, h('div', { class: 'pager' }, older));

  const row = (order) => h('li', { class: 'order-row', 'data-test': 'order-row' },
    h('a', { href: orderLink(order.orderID) }, `Order of ${when(order.placedAt)}`),
    h('span', { class: `status status-${order.status}` }, order.status),
    h('span', { class: 'amount' }, money(order.total)),
    h('small', { class: 'order-id' }, order.orderID));

  let before = null;
  async function load(focusFirst) {
    clearProblem(problem);
    older.disabled = true;
    try {
      const query = new URLSearchParams({ limit: HISTORY_PAGE });
      if (before) query.set('before', before);
      const { items } = await api('GET', `/v1/orders?${query}`);
      const rows = items.map(row);
      list.append(...rows);
      if (items.length) before = items.at(-1).orderID;
      older.hidden = items.length < HISTORY_PAGE;
      empty.hidden = list.childElementCount > 0;
      if (focusFirst) (rows[0]?.querySelector('a') ?? older).focus();
    } catch (error) {
      showProblem(problem, error);
    } finally {
      older.disabled = false;
    }
  }
  older.addEventListener('click', () => load(true));
  load(false);
}
