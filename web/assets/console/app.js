// The console's entry: sign-in, the tabs, and routing by the URL hash.

import { isQuiet, login, logout, onSignedOut, revoke, session } from './api.js';
import { renderDefinition } from './definition.js';
import { h, problemBox } from './dom.js';
import { renderFleet } from './fleet.js';
import { renderLetter, renderLetters } from './letters.js';
import { renderSaga, renderSagaList, renderStuck } from './sagas.js';

const routes = [
  { pattern: /^\/sagas$/, tab: 'sagas', title: 'Sagas', render: (section, _m, params, ctx) => renderSagaList(section, params, ctx) },
  { pattern: /^\/sagas\/([^/]+)$/, tab: 'sagas', title: 'Saga', render: (section, m, _p, ctx) => renderSaga(section, m[1], ctx) },
  { pattern: /^\/stuck$/, tab: 'stuck', title: 'Stuck sagas', render: (section, _m, params, ctx) => renderStuck(section, params, ctx) },
  { pattern: /^\/dead-letters$/, tab: 'dead-letters', title: 'Dead letters', render: (section, _m, params, ctx) => renderLetters(section, params, ctx) },
  { pattern: /^\/dead-letters\/([^/]+)$/, tab: 'dead-letters', title: 'Dead letter', render: (section, m, _p, ctx) => renderLetter(section, m[1], ctx) },
  { pattern: /^\/fleet$/, tab: 'fleet', title: 'Fleet', render: (section, _m, params, ctx) => renderFleet(section, params, ctx) },
  { pattern: /^\/definition$/, tab: 'definition', title: 'Saga definition', render: (section, _m, params, ctx) => renderDefinition(section, params, ctx) },
];

const $ = (id) => document.getElementById(id);

/**
 * What a view may use while it is shown: an abort signal for its calls and timers that stop by
 * themselves when the view is left.
 */
function viewContext() {
  const controller = new AbortController();
  const stops = new Set();
  return {
    signal: controller.signal,
    /** Runs `step` every `ms` (never two at once) while it resolves truthy; returns a stop. */
    poll(step, ms) {
      let timer;
      const stop = () => { clearTimeout(timer); stops.delete(stop); };
      const tick = async () => {
        let again = false;
        try {
          again = await step();
        } catch (error) {
          if (!isQuiet(error)) console.warn(error);
        }
        if (again && stops.has(stop)) timer = setTimeout(tick, ms);
        else stop();
      };
      stops.add(stop);
      timer = setTimeout(tick, ms);
      return stop;
    },
    close() {
      controller.abort();
      for (const stop of [...stops]) stop();
    },
  };
}

function parseHash() {
  const [path, search = ''] = location.hash.replace(/^#/, '').split('?');
  return { path, params: new URLSearchParams(search) };
}

function decode(part) {
  try { return decodeURIComponent(part); } catch { return part; }
}

let active = null;
let shownPath = null;

function showLogin(message) {
  $('login').hidden = false;
  $('tabs').hidden = true;
  $('who').hidden = true;
  $('view').replaceChildren();
  shownPath = null;
  document.title = 'Sign in · Shopfleet console';
  $('login-message').replaceChildren(message
    ? h('div', { class: 'problem', role: 'alert', id: 'login-problem' }, h('p', { class: 'problem-title' }, message))
    : '');
  $('login-email').focus();
}

async function route() {
  active?.close();
  active = null;
  if (!session.signedIn) {
    showLogin();
    return;
  }
  $('login').hidden = true;
  $('tabs').hidden = false;
  $('who').hidden = false;
  $('whoami').textContent = session.email;

  const { path, params } = parseHash();
  if (path === '' || path === '/') {
    location.replace('#/sagas');
    return;
  }
  const found = routes.map((r) => ({ r, match: path.match(r.pattern) })).find(({ match }) => match);
  for (const link of document.querySelectorAll('#tabs a')) {
    if (found && link.dataset.tab === found.r.tab) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const section = h('section', { class: 'view' });
  $('view').replaceChildren(section);
  const moved = path !== shownPath;
  shownPath = path;
  if (!found) {
    document.title = 'Not found · Shopfleet console';
    section.append(h('h1', { tabindex: '-1' }, 'No such page'), h('p', {}, h('a', { href: '#/sagas' }, 'Go to the sagas')));
    return;
  }
  document.title = `${found.r.title} · Shopfleet console`;
  const ctx = viewContext();
  active = ctx;
  const match = found.match.map((part, index) => (index > 0 ? decode(part) : part));
  const rendering = found.r.render(section, match, params, ctx);
  // Keyboard and screen reader users land on the new page's heading, not back at the top.
  if (moved) section.querySelector('h1')?.focus();
  try {
    await rendering;
  } catch (error) {
    if (isQuiet(error) || active !== ctx) return;
    for (const placeholder of section.querySelectorAll('.loading')) placeholder.remove();
    section.append(problemBox(error));
  }
}

function start() {
  onSignedOut((message) => {
    active?.close();
    active = null;
    showLogin(message);
  });

  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const email = $('login-email').value.trim();
    const go = $('login-go');
    $('login-message').replaceChildren();
    go.disabled = true;
    try {
      const tokens = await login(email, $('login-password').value);
      if (tokens.role !== 'admin') {
        // This session is of no use here: end it at once rather than leave it open.
        revoke(tokens.refreshToken);
        $('login-message').replaceChildren(h('div', { class: 'problem', role: 'alert', id: 'login-problem' },
          h('p', { class: 'problem-title' }, 'This account is not an admin'),
          h('p', { class: 'problem-detail' }, `${email} may shop, but the console is for operators with the admin role.`)));
        return;
      }
      session.store(tokens, email);
      $('login-password').value = '';
      await route();
    } catch (error) {
      $('login-message').replaceChildren(problemBox(error, 'login-problem'));
    } finally {
      go.disabled = false;
    }
  });

  $('logout').addEventListener('click', async () => {
    active?.close();
    active = null;
    await logout();
    showLogin();
  });

  window.addEventListener('hashchange', route);
  route();
}

start();
