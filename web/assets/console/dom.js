// Small helpers for building the console's DOM without innerHTML (nothing from the API is ever
// parsed as HTML) and without style attributes (the page's CSP forbids them).

import { ApiProblem, Unreachable, isQuiet } from './api.js';

/**
 * `h('a', {href: '#/x', class: 'c', 'data-test': 't', onclick: fn}, 'text', child, [more])`.
 * Properties named on* become listeners; true/false toggle boolean attributes.
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), value);
    else if (name === 'value') node.value = value;
    else if (name === 'checked') node.checked = Boolean(value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

const SVG = 'http://www.w3.org/2000/svg';

export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child !== undefined && child !== null) node.append(child);
  }
  return node;
}

/** The visible form of an error: a problem's title and detail, or why the edge is unreachable. */
export function problemBox(error, id) {
  const box = h('div', { class: 'problem', role: 'alert', id });
  if (error instanceof ApiProblem) {
    append(box, [
      h('p', { class: 'problem-title' }, error.title),
      error.detail && h('p', { class: 'problem-detail' }, error.detail),
      error.requestId && h('p', { class: 'problem-meta' }, `HTTP ${error.status}, request ${error.requestId}`),
    ]);
  } else if (error instanceof Unreachable) {
    append(box, [h('p', { class: 'problem-title' }, error.message)]);
  } else {
    append(box, [h('p', { class: 'problem-title' }, `Something went wrong in the page: ${error?.message || error}`)]);
  }
  return box;
}

/** A table inside its own scrolling container (wide tables scroll there, not the page). */
export function table(caption, headers, rows, props = {}) {
  return h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption },
    h('table', props,
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, headers.map((title) => h('th', { scope: 'col' }, title)))),
      h('tbody', {}, rows)));
}

/** A label and its control, stacked. */
export function field(label, control, hint) {
  const hintNode = hint && h('span', { class: 'hint', id: `${control.id}-hint` }, hint);
  if (hintNode) control.setAttribute('aria-describedby', hintNode.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintNode);
}

/** Definition list rows from [term, value] pairs (pairs with an empty value are left out). */
export function facts(pairs, props = {}) {
  return h('dl', { class: 'facts', ...props },
    pairs.filter(([, value]) => value !== undefined && value !== null && value !== '')
      .map(([term, value]) => h('div', {}, h('dt', {}, term), h('dd', {}, value))));
}

export function badge(text, kind = text) {
  return h('span', { class: `badge badge-${String(kind).replace(/[^a-z0-9_-]/gi, '')}` }, text);
}

/** Goes to `hash`; the same hash again re-renders the view (a form submitted twice reloads). */
export function goTo(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent('hashchange'));
  else location.hash = hash;
}

// --- times -----------------------------------------------------------------------------------

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/** A <time> with the local date and time, the ISO text in its datetime. */
export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return h('time', { datetime: iso, title: iso }, dateTime.format(date));
}

/** Seconds as `shopfleet saga show` prints them: 850ms, 12.4s, 14m, 3h. */
export function duration(seconds) {
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 120) return `${(Math.round(seconds * 10) / 10).toFixed(1)}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  return `${Math.floor(seconds / 3600)}h`;
}

export function secondsBetween(fromIso, toIso) {
  return (new Date(toIso).getTime() - new Date(fromIso).getTime()) / 1000;
}

/** "12.4s ago" */
export function ago(iso) {
  if (!iso) return '';
  return h('time', { datetime: iso, title: iso }, `${duration(Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000))} ago`);
}

/** Durations the admin API accepts: a positive whole number and ms, s, m or h. */
export const DURATION_PATTERN = '[1-9][0-9]*(ms|s|m|h)';

/** `load` as a page's reload: its problem shown in `problems` (a quiet one, a page left, not), cleared once it works. */
export function reloader(load, problems) {
  return async () => {
    try {
      await load();
      problems.replaceChildren();
    } catch (error) {
      if (!isQuiet(error)) problems.replaceChildren(problemBox(error));
    }
  };
}

/** Wires a panel in `container`: `dismiss` or Escape closes it and gives the focus back to what opened it (keyboard users). Returns close. */
export function panelCloser(container, form, dismiss) {
  const opener = document.activeElement;
  const close = () => {
    container.replaceChildren();
    if (opener?.isConnected) opener.focus();
  };
  dismiss.addEventListener('click', close);
  form.addEventListener('keydown', (event) => { if (event.key === 'Escape') close(); });
  return close;
}
