// The Sagas, Stuck and one-saga views (what `shopfleet saga list/stuck/show/retry/cancel` print).

import { enc, get, isQuiet, post, query } from './api.js';
import { openReasonPanel } from './confirm.js';
import { loadDefinition, drawDiagram } from './definition.js';
import { DURATION_PATTERN, ago, badge, duration, facts, field, goTo, h, problemBox, reloader, replace, secondsBetween, table, when } from './dom.js';

const sagaLink = (id) => h('a', { href: `#/sagas/${enc(id)}` }, id);

function stateCell(saga) {
  return [h('code', {}, saga.state), saga.terminal ? [' ', badge('finished', 'terminal')] : null];
}

// Filters live in the URL hash, so a filtered view can be reloaded and shared.
const submitToHash = (path, values) => goTo(`#${path}${query(values)}`);

// --- #/sagas ---------------------------------------------------------------------------------

export async function renderSagaList(section, params, ctx) {
  const states = params.getAll('state').flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
  const stateInput = h('input', { id: 'saga-state', name: 'state', type: 'text', list: 'saga-state-options', value: states.join(', '), autocomplete: 'off' });
  const customer = h('input', { id: 'saga-customer', name: 'customer', type: 'text', value: params.get('customer') || '', autocomplete: 'off' });
  const older = h('input', { id: 'saga-older', name: 'olderThan', type: 'text', value: params.get('olderThan') || '', pattern: DURATION_PATTERN, placeholder: '10m' });
  const open = h('input', { id: 'saga-open', name: 'open', type: 'checkbox', checked: params.get('open') === 'true' });
  const options = h('datalist', { id: 'saga-state-options' });
  const form = h('form', { class: 'filters', 'aria-label': 'Filter sagas' },
    field('State (comma-separated)', stateInput),
    field('Customer id', customer),
    field('Not changed for', older, 'e.g. 30s, 10m, 2h'),
    h('div', { class: 'field check' }, open, h('label', { for: 'saga-open' }, 'Open sagas only')),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', id: 'saga-filter-go', class: 'primary' }, 'Show')),
    options);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    submitToHash('/sagas', {
      state: stateInput.value.split(',').map((s) => s.trim()).filter(Boolean),
      customer: customer.value.trim(), olderThan: older.value.trim(), open: open.checked ? 'true' : '',
    });
  });
  const results = h('div', { id: 'saga-results' }, h('p', { class: 'loading' }, 'Loading sagas…'));
  section.append(h('h1', { tabindex: '-1' }, 'Sagas'), form, results);

  // The states come from the definition; the list works without them.
  loadDefinition()
    .then((definition) => replace(options, definition.states.map((state) => h('option', { value: state.name }))))
    .catch(() => {});

  const limit = 50;
  const { items } = await get(`/v1/admin/sagas${query({
    state: states, customer: params.get('customer'), olderThan: params.get('olderThan'), open: params.get('open'), limit,
  })}`, { signal: ctx.signal });
  if (items.length === 0) {
    replace(results, h('p', { class: 'empty', role: 'status' }, 'No saga matches.'));
    return;
  }
  replace(results,
    h('p', { role: 'status' }, items.length === limit ? `The newest ${limit} sagas that match.` : `${items.length} saga${items.length === 1 ? '' : 's'}, newest first.`),
    table('Sagas', ['Saga', 'State', 'Order status', 'Customer', 'Started', 'Last change'], items.map((saga) =>
      h('tr', { 'data-test': 'saga-row', 'data-saga': saga.id },
        h('td', {}, sagaLink(saga.id)),
        h('td', {}, stateCell(saga)),
        h('td', {}, saga.status),
        h('td', {}, saga.customerId ? h('a', { href: `#/sagas${query({ customer: saga.customerId })}` }, saga.customerId) : ''),
        h('td', {}, when(saga.startedAt)),
        h('td', {}, ago(saga.updatedAt))))));
}

// --- #/stuck ---------------------------------------------------------------------------------

export async function renderStuck(section, params, ctx) {
  const olderThan = params.get('olderThan') || '10m';
  const older = h('input', { id: 'stuck-older', name: 'olderThan', type: 'text', value: olderThan, pattern: DURATION_PATTERN, required: true });
  const form = h('form', { class: 'filters', 'aria-label': 'Stuck sagas' },
    field('Not moved for', older, 'e.g. 30s, 10m, 2h'),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', id: 'stuck-go', class: 'primary' }, 'Show stuck sagas')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (form.reportValidity()) submitToHash('/stuck', { olderThan: older.value.trim() });
  });
  const results = h('div', { id: 'stuck-results' }, h('p', { class: 'loading' }, 'Loading…'));
  section.append(h('h1', { tabindex: '-1' }, 'Stuck sagas'),
    h('p', {}, 'Open sagas that have not moved for a while, with what each waits for.'), form, results);

  const { items } = await get(`/v1/admin/sagas/stuck${query({ olderThan })}`, { signal: ctx.signal });
  if (items.length === 0) {
    replace(results, h('p', { class: 'empty', role: 'status' }, `No saga has been stuck for more than ${olderThan}.`));
    return;
  }
  const perState = new Map();
  for (const { saga } of items) perState.set(saga.state, (perState.get(saga.state) ?? 0) + 1);
  replace(results,
    h('p', { role: 'status' }, `${items.length} saga${items.length === 1 ? '' : 's'} not moved for more than ${olderThan}: `,
      [...perState].sort().map(([state, count], index) => [index ? ', ' : '', h('code', {}, state), ` ${count}`])),
    table('Stuck sagas', ['Saga', 'State', 'Last change', 'Waiting for', 'Dead letters'], items.map(({ saga, reason, deadLetters }) =>
      h('tr', { 'data-test': 'stuck-row', 'data-saga': saga.id },
        h('td', {}, sagaLink(saga.id)),
        h('td', {}, h('code', {}, saga.state)),
        h('td', {}, ago(saga.updatedAt)),
        h('td', { class: 'reason', 'data-test': 'stuck-reason' }, reason),
        h('td', { 'data-test': 'stuck-letters' }, deadLetters > 0
          ? h('a', { href: `#/dead-letters${query({ saga: saga.id })}` }, `${deadLetters} waiting`)
          : '0')))));
}

// --- #/sagas/<id> ----------------------------------------------------------------------------

/** The timeline rows: the saga's steps and, where they failed, its dead letters. */
function timeline(view) {
  const start = view.steps[0]?.at ?? view.saga.startedAt;
  const rows = view.steps.map((step) => {
    const messageId = step.messageId ?? step.messageID;
    const states = [step.stateBefore, step.stateAfter].filter(Boolean);
    const change = states.length === 2 && states[0] === states[1] ? [states[0]] : states;
    return {
      at: step.at,
      cells: (since, gap) => h('tr', { 'data-test': 'saga-step', class: `kind-${step.kind}` },
        h('td', {}, String(step.seq)), h('td', {}, since), h('td', {}, gap),
        h('td', {}, badge(step.kind)),
        h('td', { class: 'what' }, h('strong', {}, step.name), step.detail ? [': ', step.detail] : null),
        h('td', { class: 'change' }, change.map((state, index) => [index ? ' → ' : '', h('code', {}, state)])),
        h('td', { class: 'message' }, [step.messageType, messageId].filter(Boolean).join(' '))),
    };
  });
  for (const letter of view.deadLetters) {
    rows.push({
      at: letter.lastFailedAt,
      cells: (since, gap) => h('tr', { 'data-test': 'saga-letter', class: 'kind-dead-letter', 'data-letter': letter.id },
        h('td', {}, '–'), h('td', {}, since), h('td', {}, gap),
        h('td', {}, badge('dead letter', 'dead-letter')),
        h('td', { class: 'what' }, `${letter.type} failed on ${letter.failedQueue} [${letter.errorType}], `,
          badge(letter.status), ': ', (letter.reason || '').slice(0, 200)),
        h('td', {}, ''),
        h('td', {}, h('a', { href: `#/dead-letters/${enc(letter.id)}` }, `letter ${letter.id}`))),
    });
  }
  rows.sort((a, b) => new Date(a.at) - new Date(b.at));
  let previous = start;
  return rows.map((row) => {
    const since = `+${duration(Math.max(0, secondsBetween(start, row.at)))}`;
    const gap = duration(Math.max(0, secondsBetween(previous, row.at)));
    if (new Date(row.at) > new Date(previous)) previous = row.at;
    return row.cells(since, gap);
  });
}

function sagaBody(view) {
  const { saga } = view;
  const waiting = view.deadLetters.filter((letter) => letter.status === 'waiting').length;
  const timeout = view.pendingTimeout;
  let timeoutText = '';
  if (timeout) {
    const left = secondsBetween(new Date().toISOString(), timeout.dueAt);
    timeoutText = `${timeout.name} ${left > 0 ? `in ${duration(left)}` : `overdue by ${duration(-left)}`}`;
  }
  return [
    facts([
      ['State', [h('code', { id: 'saga-state-now' }, saga.state), saga.terminal ? [' ', badge('finished', 'terminal')] : null]],
      ['Order status', h('span', { id: 'saga-status' }, saga.status)],
      ['Type', saga.type],
      ['Customer', saga.customerId && h('a', { href: `#/sagas${query({ customer: saga.customerId })}` }, saga.customerId)],
      ['Started', when(saga.startedAt)],
      ['Last change', [when(saga.updatedAt), ' (', ago(saga.updatedAt), ')']],
      ['Pending timeout', timeoutText],
      ['Dead letters', view.deadLetters.length
        ? h('a', { href: `#/dead-letters${query({ saga: saga.id, status: waiting ? '' : 'all' })}` },
          `${waiting} waiting of ${view.deadLetters.length}`)
        : 'none'],
    ], { id: 'saga-facts' }),
    view.deadLettersUnavailable && h('p', { class: 'problem', role: 'alert' },
      `The dead letters could not be read: ${view.deadLettersUnavailable}`),
    h('h2', {}, 'Timeline'),
    table('Timeline', ['#', 'Since start', 'After previous', 'Step', 'What', 'State', 'Message'], timeline(view), { class: 'timeline' }),
    h('details', {},
      h('summary', {}, 'Saga data'),
      h('pre', { class: 'code', id: 'saga-data' }, JSON.stringify(view.data, null, 2))),
  ];
}

export async function renderSaga(section, id, ctx) {
  const path = `/v1/admin/sagas/${enc(id)}`;
  const retry = h('button', { type: 'button', id: 'saga-retry', class: 'secondary' }, 'Retry…');
  const cancel = h('button', { type: 'button', id: 'saga-cancel', class: 'danger' }, 'Cancel…');
  const refresh = h('button', { type: 'button', id: 'saga-refresh', class: 'secondary' }, 'Refresh');
  const actions = h('div', { class: 'buttons actions' }, retry, cancel, refresh);
  const panel = h('div', { id: 'action-panel' });
  const result = h('div', { id: 'action-result', role: 'status' });
  const body = h('div', { id: 'saga-body' }, h('p', { class: 'loading' }, 'Loading the saga…'));
  const problems = h('div', {});
  const machine = h('div', { class: 'diagram-wrap', tabindex: '0', role: 'region', 'aria-label': 'Where the saga is in its state machine' });
  section.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/sagas' }, 'Sagas'), ' / '),
    h('h1', { tabindex: '-1' }, 'Saga ', h('code', {}, id)),
    actions,
    panel, result, problems, body,
    h('details', { id: 'saga-machine' }, h('summary', {}, 'State machine'), machine));

  let current = null;
  const load = async () => {
    const view = await get(path, { signal: ctx.signal });
    current = view;
    problems.replaceChildren();
    replace(body, sagaBody(view));
    retry.disabled = cancel.disabled = view.saga.terminal;
    retry.title = cancel.title = view.saga.terminal ? 'The saga has finished: nothing to retry or cancel.' : '';
    loadDefinition()
      .then((definition) => machine.replaceChildren(drawDiagram(definition, { id: 'saga-machine-diagram', current: view.saga.state })))
      .catch(() => {});
    return view;
  };
  const reload = reloader(load, problems);
  refresh.addEventListener('click', reload);

  // After an action, follow the saga each second until it finishes or stands still for 30 s.
  let stopFollowing = () => {};
  const follow = () => {
    stopFollowing();
    let state = current?.saga.state;
    let quietUntil = Date.now() + 30_000;
    stopFollowing = ctx.poll(async () => {
      await reload();
      if (current.saga.state !== state) {
        state = current.saga.state;
        quietUntil = Date.now() + 30_000;
      }
      return !current.saga.terminal && Date.now() < quietUntil;
    }, 1000);
  };

  const act = (action, label, explanation, danger) => () => {
    result.replaceChildren();
    openReasonPanel(panel, {
      title: `${label} saga ${id}`,
      explanation,
      ids: { reason: 'action-reason', confirm: 'action-confirm', dismiss: 'action-dismiss' },
      confirmLabel: `${label} the saga`,
      danger,
      onConfirm: (reason) => post(`${path}/${action}`, { reason }, { signal: ctx.signal }),
      onDone: (answer) => {
        replace(result, h('p', { class: 'notice' }, `${label} requested`, answer?.accepted ? ` (${answer.accepted})` : '',
          '. Following the saga for 30 s…'));
        follow();
      },
    });
  };
  retry.addEventListener('click', act('retry', 'Retry',
    'Sends the saga\'s current step again (after fixing what made it stick); from compensation_failed, starts compensating again.', false));
  cancel.addEventListener('click', act('cancel', 'Cancel',
    'Starts compensating: voids the payment, releases the stock, cancels the order. The reason is shown to the customer.', true));

  try {
    await load();
  } catch (error) {
    actions.hidden = true;
    body.replaceChildren();
    throw error;
  }
}
