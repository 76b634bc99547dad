import { Problem } from './api.js';

const PROPERTIES = new Set(['value', 'checked', 'hidden', 'disabled']);

/** Makes an element: `on…` entries are listeners, the rest attributes; children are nodes or text. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value == null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (PROPERTIES.has(name)) element[name] = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  element.append(...children.flat(Infinity).filter((child) => child != null && child !== false));
  return element;
}

/** The page's heading (focused when the page changes), naming the document too. */
export function heading(text) {
  document.title = `${text} · Shopfleet`;
  return h('h1', { tabindex: -1 }, text);
}

/** A labelled control, with an optional hint read out with it. */
export function field(label, control, hint) {
  const hintElement = hint && h('small', { id: `${control.id}-hint`, class: 'hint' }, hint);
  if (hintElement) control.setAttribute('aria-describedby', hintElement.id);
  const check = control.type === 'checkbox';
  const labelElement = h('label', { for: control.id }, label);
  return h('div', { class: check ? 'field check' : 'field' },
    check ? [control, labelElement] : [labelElement, control], hintElement);
}

const formats = new Map();

/** Minor units as the customer reads them: {amount: 2500, currency: 'EUR'} is €25.00. */
export function money({ amount, currency }) {
  if (!formats.has(currency)) formats.set(currency, new Intl.NumberFormat(undefined, { style: 'currency', currency }));
  return formats.get(currency).format(amount / 100);
}

/** The sum of amounts, per currency. */
export function sum(amounts) {
  const totals = new Map();
  for (const { amount, currency } of amounts) totals.set(currency, (totals.get(currency) ?? 0) + amount);
  return [...totals].map(([currency, amount]) => money({ amount, currency })).join(' + ') || '—';
}

export const times = ({ amount, currency }, quantity) => ({ amount: amount * quantity, currency });

/** An empty alert box for the problems of one form or page. */
export function problemBox() {
  return h('div', { class: 'problem', role: 'alert', hidden: true });
}

export function showProblem(box, error) {
  const known = error instanceof Problem;
  box.replaceChildren(
    h('strong', {}, known ? error.title : 'Something went wrong'),
    h('p', {}, known ? error.detail : String(error?.message ?? error)),
    known && error.requestId && h('p', { class: 'request-id' }, `Request ${error.requestId}`));
  box.hidden = false;
}

export function clearProblem(box) {
  box.replaceChildren();
  box.hidden = true;
}
