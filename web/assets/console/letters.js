// The dead letters views (what `shopfleet dlq groups/list/show/replay/discard` do): failures
// grouped by fingerprint, the letters, one letter, and replaying or discarding them.

import { enc, get, isQuiet, post, query } from './api.js';
import { openReasonPanel } from './confirm.js';
import { ago, append, badge, facts, field, goTo, h, panelCloser, problemBox, reloader, replace, table, when } from './dom.js';

const STATUSES = ['waiting', 'replaying', 'replayed', 'discarded', 'all'];
const letterLink = (id) => h('a', { href: `#/dead-letters/${enc(id)}` }, id);
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** JSON values of headers and properties, as text. */
const show = (value) => (typeof value === 'string' ? value : JSON.stringify(value));

/**
 * The replay flow: a dry run lists what would go, then the operator picks a rate and confirms.
 * `selection` is `{ids}`, `{fingerprint}` or `{saga}`; the real replay sends the same selection.
 */
async function openReplayPanel(container, selection, { signal, onDone }) {
  const rate = h('input', { id: 'replay-rate', name: 'rate', type: 'number', min: '0.1', step: 'any', value: '10', required: true, inputmode: 'decimal' });
  const again = h('input', { id: 'replay-again', name: 'again', type: 'checkbox' });
  const confirm = h('button', { type: 'submit', id: 'replay-confirm', class: 'primary', disabled: true }, 'Replay');
  const dismiss = h('button', { type: 'button', id: 'replay-dismiss', class: 'secondary' }, 'Back');
  const preview = h('div', { id: 'replay-list' });
  const problems = h('div', {});
  const heading = h('h3', { tabindex: '-1' }, 'Replay: dry run');
  const form = h('form', { class: 'panel', 'aria-label': 'Replay dead letters' },
    heading,
    h('p', {}, 'Nothing has been sent yet. These letters would go back to the queue each failed on, with their message ids (a message handled after all is not handled twice).'),
    preview,
    h('div', { class: 'row' },
      field('Letters per second', rate),
      h('div', { class: 'field check' }, again, h('label', { for: 'replay-again' }, 'Also letters replayed before'))),
    problems,
    h('div', { class: 'buttons' }, confirm, dismiss));
  const close = panelCloser(container, form, dismiss);

  let count = 0;
  // What the preview showed is what the replay sends: the previewed letters by id, not the
  // selection again (a letter failing meanwhile is not sent unseen).
  let previewed = [];
  const dryRun = async () => {
    confirm.disabled = true;
    problems.replaceChildren();
    replace(preview, h('p', { class: 'loading' }, 'Asking what would be replayed…'));
    try {
      const { wouldReplay, skipped = [] } = await post('/v1/admin/dead-letters/replay', { ...selection, dryRun: true, again: again.checked }, { signal });
      count = wouldReplay.length;
      previewed = wouldReplay.map((letter) => letter.id);
      confirm.textContent = count === 0 ? 'Nothing to replay' : `Replay ${plural(count, 'letter')}`;
      confirm.disabled = count === 0;
      const shown = wouldReplay.slice(0, 50);
      replace(preview,
        h('p', { role: 'status' }, count === 0 ? 'No letter would be replayed (replayed letters need “Also letters replayed before”).' : `${plural(count, 'letter')} would be replayed:`),
        count > 0 && table('Letters the replay would send', ['Letter', 'Type', 'To queue', 'Status', 'Reason'], shown.map((letter) =>
          h('tr', { 'data-test': 'replay-item', 'data-letter': letter.id },
            h('td', {}, letterLink(letter.id)), h('td', {}, letter.type), h('td', {}, letter.failedQueue),
            h('td', {}, badge(letter.status)), h('td', { class: 'reason' }, (letter.reason || '').slice(0, 120))))),
        count > shown.length && h('p', {}, `… and ${count - shown.length} more.`),
        skipped.length > 0 && h('p', { class: 'muted', 'data-test': 'replay-skipped' }, `Left alone: ${skipped.slice(0, 20)
          .map((letter) => `${letter.id} (${letter.status})`).join(', ')}${skipped.length > 20 ? ` and ${skipped.length - 20} more` : ''}.`));
    } catch (error) {
      if (isQuiet(error)) return;
      preview.replaceChildren();
      problems.replaceChildren(problemBox(error));
    }
  };
  again.addEventListener('change', dryRun);

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!form.reportValidity()) return;
    confirm.disabled = true;
    problems.replaceChildren();
    try {
      const answer = await post('/v1/admin/dead-letters/replay',
        { ids: previewed, dryRun: false, rate: Number(rate.value), again: again.checked }, { signal });
      close();
      onDone(answer, count);
    } catch (error) {
      if (isQuiet(error)) return;
      problems.replaceChildren(problemBox(error));
      confirm.disabled = false;
    }
  });

  container.replaceChildren(form);
  heading.focus();
  await dryRun();
}

function openDiscardPanel(container, selection, { what, signal, onDone }) {
  openReasonPanel(container, {
    title: `Discard ${what}`,
    explanation: 'Discarded letters stay in the store with the reason, and are never replayed.',
    ids: { reason: 'discard-reason', confirm: 'discard-confirm', dismiss: 'discard-dismiss' },
    confirmLabel: `Discard ${what}`,
    danger: true,
    onConfirm: (reason) => post('/v1/admin/dead-letters/discard', { ...selection, reason }, { signal }),
    onDone,
  });
}

// --- #/dead-letters --------------------------------------------------------------------------

function groupCard(group, status) {
  return h('li', { class: 'card', 'data-test': 'dl-group', 'data-fingerprint': group.fingerprint },
    h('h3', {}, h('span', { class: 'count', 'data-test': 'dl-group-count' }, String(group.count)), ' ',
      group.count === 1 ? 'letter' : 'letters', ': ', h('span', { class: 'type' }, group.type)),
    facts([
      ['Queue', h('code', {}, group.failedQueue)],
      ['Error type', badge(group.errorType, 'error')],
      ['Oldest', ago(group.oldest)],
      ['Newest', ago(group.newest)],
      ['Fingerprint', h('code', {}, group.fingerprint)],
    ]),
    h('p', { class: 'sample', 'data-test': 'dl-group-sample' }, group.sampleError),
    h('div', { class: 'buttons' },
      h('a', { class: 'button primary', 'data-test': 'dl-group-list', href: `#/dead-letters${query({ fingerprint: group.fingerprint, status: status === 'waiting' ? '' : status })}` },
        'List its letters'),
      group.sampleId && h('a', { class: 'button secondary', href: `#/dead-letters/${enc(group.sampleId)}` }, 'A sample letter')));
}

export async function renderLetters(section, params, ctx) {
  const filter = {
    fingerprint: params.get('fingerprint') || '', saga: params.get('saga') || '',
    queue: params.get('queue') || '', type: params.get('type') || '',
    status: STATUSES.includes(params.get('status')) ? params.get('status') : 'waiting',
  };
  const inputs = {
    fingerprint: h('input', { id: 'dl-fingerprint', name: 'fingerprint', type: 'text', value: filter.fingerprint, autocomplete: 'off' }),
    saga: h('input', { id: 'dl-saga', name: 'saga', type: 'text', value: filter.saga, autocomplete: 'off' }),
    queue: h('input', { id: 'dl-queue', name: 'queue', type: 'text', value: filter.queue, autocomplete: 'off' }),
    type: h('input', { id: 'dl-type', name: 'type', type: 'text', value: filter.type, autocomplete: 'off' }),
    status: h('select', { id: 'dl-filter-status', name: 'status' },
      STATUSES.map((status) => h('option', { value: status, selected: status === filter.status }, status))),
  };
  const form = h('form', { class: 'filters', 'aria-label': 'Filter dead letters' },
    field('Fingerprint', inputs.fingerprint), field('Saga', inputs.saga), field('Queue', inputs.queue),
    field('Message type', inputs.type), field('Status', inputs.status),
    h('div', { class: 'buttons' },
      h('button', { type: 'submit', id: 'dl-filter-go', class: 'primary' }, 'Show'),
      h('a', { href: '#/dead-letters', class: 'button secondary' }, 'Clear')));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const values = Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, input.value.trim()]));
    if (values.status === 'waiting') values.status = '';
    goTo(`#/dead-letters${query(values)}`);
  });

  const groups = h('div', { id: 'dl-groups' }, h('p', { class: 'loading' }, 'Loading…'));
  const letters = h('div', { id: 'dl-letters' }, h('p', { class: 'loading' }, 'Loading…'));
  const panel = h('div', { id: 'dl-panel' });
  const result = h('div', { id: 'dl-action-result', role: 'status' });
  const problems = h('div', {});

  // Replay and discard act on a whole selection the API can name: a fingerprint or a saga.
  const selection = filter.fingerprint && !filter.saga ? { fingerprint: filter.fingerprint }
    : filter.saga && !filter.fingerprint ? { saga: filter.saga } : null;
  const what = selection?.fingerprint ? 'the letters of this failure' : 'the letters of this saga';
  const actions = selection && h('div', { class: 'buttons actions' },
    h('button', { type: 'button', id: 'replay-preview', class: 'primary' }, 'Replay…'),
    selection.fingerprint && h('button', { type: 'button', id: 'discard-open', class: 'danger' }, 'Discard…'));

  append(section, [
    h('h1', { tabindex: '-1' }, 'Dead letters'),
    h('h2', {}, `Failures by fingerprint (${filter.status})`), groups,
    h('h2', { id: 'dl-letters-heading' }, 'Letters'), form, actions, panel, result, problems, letters]);

  const load = async () => {
    const [groupAnswer, letterAnswer] = await Promise.all([
      get(`/v1/admin/dead-letters/groups${query({ status: filter.status })}`, { signal: ctx.signal }),
      get(`/v1/admin/dead-letters${query({ ...filter, limit: 100 })}`, { signal: ctx.signal }),
    ]);
    replace(groups, groupAnswer.items.length === 0
      ? h('p', { class: 'empty' }, `No ${filter.status} dead letters.`)
      : h('ul', { class: 'cards' }, groupAnswer.items.map((group) => groupCard(group, filter.status))));
    const items = letterAnswer.items;
    replace(letters, items.length === 0 ? h('p', { class: 'empty' }, 'No letter matches.') : [
      h('p', { role: 'status' }, items.length === 100 ? 'The first 100 letters that match.' : `${plural(items.length, 'letter')}.`),
      table('Dead letters', ['Letter', 'Last failed', 'Queue', 'Type', 'Error type', 'Attempts', 'Status', 'Reason', 'Saga'], items.map((letter) =>
        h('tr', { 'data-test': 'dl-letter', 'data-letter': letter.id },
          h('td', {}, letterLink(letter.id)), h('td', {}, ago(letter.lastFailedAt)), h('td', {}, h('code', {}, letter.failedQueue)),
          h('td', {}, letter.type), h('td', {}, letter.errorType), h('td', {}, String(letter.attempts)),
          h('td', {}, badge(letter.status)), h('td', { class: 'reason' }, (letter.reason || '').slice(0, 160)),
          h('td', {}, letter.sagaID ? h('a', { href: `#/sagas/${enc(letter.sagaID)}` }, letter.sagaID) : '')))),
    ]);
  };
  const reload = reloader(load, problems);

  // A replay goes out at its rate after the 202, so the lists are read again for a while.
  let stopFollowing = () => {};
  const follow = () => {
    stopFollowing();
    const until = Date.now() + 30_000;
    stopFollowing = ctx.poll(async () => { await reload(); return Date.now() < until; }, 2000);
  };
  if (actions) {
    actions.querySelector('#replay-preview').addEventListener('click', () => {
      result.replaceChildren();
      openReplayPanel(panel, selection, {
        signal: ctx.signal,
        onDone: (answer, previewed) => {
          replace(result, h('p', { class: 'notice' }, `Replay of ${plural(answer.count, 'letter')} requested`,
            answer.count !== previewed ? ` (the preview listed ${previewed})` : '', answer.accepted ? ` (${answer.accepted})` : '', '.'));
          follow();
        },
      });
    });
    actions.querySelector('#discard-open')?.addEventListener('click', () => {
      result.replaceChildren();
      openDiscardPanel(panel, selection, {
        what, signal: ctx.signal,
        onDone: (answer) => {
          replace(result, h('p', { class: 'notice' }, `Discarded ${plural(answer.discarded.length, 'letter')}.`));
          reload();
        },
      });
    });
  }
  await load();
}

// --- #/dead-letters/<id> ---------------------------------------------------------------------

function keyValues(caption, object, id) {
  const entries = Object.entries(object ?? {}).sort(([a], [b]) => a.localeCompare(b));
  if (entries.length === 0) return h('p', { id, class: 'empty' }, 'none');
  return table(caption, ['Name', 'Value'], entries.map(([name, value]) =>
    h('tr', {}, h('th', { scope: 'row' }, h('code', {}, name)), h('td', { class: 'value' }, show(value)))), { id });
}

function letterBody(view) {
  const { letter } = view;
  return [
    facts([
      ['Message id', h('code', {}, letter.messageID)],
      ['Type', letter.type],
      ['Failed on', h('code', {}, letter.failedQueue)],
      ['Published to', letter.exchange ? `${letter.exchange}, routing key ${letter.routingKey}` : `default exchange, routing key ${letter.routingKey}`],
      ['Saga', letter.sagaID && h('a', { href: `#/sagas/${enc(letter.sagaID)}` }, letter.sagaID)],
      ['Error type', badge(letter.errorType, 'error')],
      ['Reason', h('span', { id: 'dl-reason', class: 'reason' }, letter.reason)],
      ['Attempts', String(letter.attempts)],
      ['Failures', String(letter.failures)],
      ['First failed', [when(letter.firstFailedAt), ' (', ago(letter.firstFailedAt), ')']],
      ['Last failed', [when(letter.lastFailedAt), ' (', ago(letter.lastFailedAt), ')']],
      ['Fingerprint', h('a', { href: `#/dead-letters${query({ fingerprint: letter.fingerprint })}` }, letter.fingerprint)],
      ['Replays', String(letter.replays)],
    ], { id: 'dl-facts' }),
    h('h2', {}, 'Headers'), keyValues('Headers', view.headers, 'dl-headers'),
    h('h2', {}, 'Body'), h('pre', { id: 'dl-body', class: 'code', tabindex: '0' }, view.body),
    h('h2', {}, 'Properties'), keyValues('Properties', view.properties, 'dl-properties'),
    h('h2', {}, 'History'),
    table('History', ['At', 'What', 'Detail'], view.history.map((event) =>
      h('tr', { 'data-test': 'dl-history' },
        h('td', {}, when(event.at)),
        h('td', {}, badge(event.kind), event.errorType ? ` (${event.errorType})` : '', event.attempts ? `, attempt ${event.attempts}` : ''),
        h('td', { class: 'reason' }, event.detail)))),
  ];
}

export async function renderLetter(section, id, ctx) {
  const path = `/v1/admin/dead-letters/${enc(id)}`;
  const status = h('span', { id: 'dl-status', class: 'badge' });
  const note = h('span', { id: 'dl-note' });
  const replay = h('button', { type: 'button', id: 'replay-preview', class: 'primary' }, 'Replay…');
  const discard = h('button', { type: 'button', id: 'discard-open', class: 'danger' }, 'Discard…');
  const refresh = h('button', { type: 'button', id: 'dl-refresh', class: 'secondary' }, 'Refresh');
  const actions = h('div', { class: 'buttons actions' }, replay, discard, refresh);
  const panel = h('div', { id: 'dl-panel' });
  const result = h('div', { id: 'dl-action-result', role: 'status' });
  const problems = h('div', {});
  const body = h('div', { id: 'dl-detail' }, h('p', { class: 'loading' }, 'Loading the letter…'));
  section.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/dead-letters' }, 'Dead letters'), ' / '),
    h('h1', { tabindex: '-1' }, 'Dead letter ', h('code', {}, id)),
    h('p', { class: 'status-line' }, 'Status: ', status, ' ', note),
    actions, panel, result, problems, body);

  let current = null;
  const load = async () => {
    const view = await get(path, { signal: ctx.signal });
    current = view;
    const { letter } = view;
    status.textContent = letter.status;
    status.className = `badge badge-${letter.status}`;
    replace(note, letter.statusNote ? ['— ', letter.statusNote] : null,
      letter.statusChangedAt ? [' (', ago(letter.statusChangedAt), ')'] : null);
    replay.disabled = letter.status === 'discarded' || letter.status === 'replaying';
    discard.disabled = letter.status === 'discarded';
    replace(body, letterBody(view));
  };
  const reload = reloader(load, problems);
  refresh.addEventListener('click', reload);

  // After an action, read the letter each second until it settles (or 30 s).
  let stopFollowing = () => {};
  const follow = () => {
    stopFollowing();
    const until = Date.now() + 30_000;
    stopFollowing = ctx.poll(async () => {
      await reload();
      return !['replayed', 'discarded'].includes(current?.letter.status) && Date.now() < until;
    }, 1000);
  };
  replay.addEventListener('click', () => {
    result.replaceChildren();
    openReplayPanel(panel, { ids: [id] }, {
      signal: ctx.signal,
      onDone: (answer) => {
        replace(result, h('p', { class: 'notice' },
          answer.count ? 'Replay requested' : 'Nothing was replayed', answer.accepted ? ` (${answer.accepted})` : '', '.'));
        follow();
      },
    });
  });
  discard.addEventListener('click', () => {
    result.replaceChildren();
    openDiscardPanel(panel, { ids: [id] }, {
      what: 'this letter', signal: ctx.signal,
      onDone: () => {
        replace(result, h('p', { class: 'notice' }, 'Discarded.'));
        reload();
      },
    });
  });

  try {
    await load();
  } catch (error) {
    actions.hidden = true;
    body.replaceChildren();
    throw error;
  }
}
