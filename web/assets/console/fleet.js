// The Fleet tab: the broker's queues and the workers consuming them, read again every 5 s.

import { get, isQuiet } from './api.js';
import { badge, h, problemBox, replace, table } from './dom.js';

const rate = (value) => (typeof value === 'number' ? `${value.toFixed(1)}/s` : '–');
const timeOfDay = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

function queuesTable(queues) {
  const sorted = [...queues].sort((a, b) => a.name.localeCompare(b.name));
  return table('Queues', ['Queue', 'Type', 'Messages', 'Ready', 'Unacked', 'Consumers', 'Published', 'Delivered'], sorted.map((queue) =>
    h('tr', { 'data-test': 'queue-row', 'data-queue': queue.name, class: queue.consumers === 0 ? 'warn' : null },
      h('td', {}, h('code', {}, queue.name)),
      h('td', {}, queue.type),
      h('td', { class: 'number' }, String(queue.messages)),
      h('td', { class: 'number' }, String(queue.ready)),
      h('td', { class: 'number' }, String(queue.unacked)),
      h('td', { class: 'number', 'data-test': 'queue-consumers' }, String(queue.consumers)),
      h('td', { class: 'number' }, rate(queue.publishRate)),
      h('td', { class: 'number' }, rate(queue.deliverRate)))), { class: 'numbers' });
}

function workersTable(workers) {
  const sorted = [...workers].sort((a, b) => a.service.localeCompare(b.service));
  return table('Workers', ['Service', 'State', 'Queues consumed', 'Consumers'], sorted.map((worker) =>
    h('tr', { 'data-test': 'worker-row', 'data-service': worker.service },
      h('td', {}, worker.service),
      h('td', { 'data-test': 'worker-state' }, badge(worker.state)),
      h('td', { class: 'number' }, worker.queues === undefined ? '–' : `${worker.queuesConsumed} of ${worker.queues}`),
      h('td', { class: 'number' }, String(worker.consumers)))), { class: 'numbers' });
}

export async function renderFleet(section, _params, ctx) {
  const updated = h('p', { id: 'fleet-updated', class: 'muted' });
  const problems = h('div', {});
  const workers = h('div', { id: 'fleet-workers' }, h('p', { class: 'loading' }, 'Loading…'));
  const queues = h('div', { id: 'fleet-queues' }, h('p', { class: 'loading' }, 'Loading…'));
  section.append(
    h('h1', { tabindex: '-1' }, 'Fleet'),
    updated, problems,
    h('h2', {}, 'Workers'),
    h('p', { class: 'muted' }, 'running: consumers on each of its queues; degraded: on some; down: on none.'),
    workers,
    h('h2', {}, 'Queues'), queues);

  const load = async () => {
    const fleet = await get('/v1/admin/fleet', { signal: ctx.signal });
    replace(workers, fleet.workers.length ? workersTable(fleet.workers) : h('p', { class: 'empty' }, 'No worker is connected.'));
    replace(queues, queuesTable(fleet.queues));
    updated.textContent = `Updated at ${timeOfDay.format(new Date())}; read again every 5 s.`;
    problems.replaceChildren();
  };
  await load();
  // A failed refresh keeps the last tables and says why; the next one may succeed.
  ctx.poll(async () => {
    try {
      await load();
    } catch (error) {
      if (!isQuiet(error)) problems.replaceChildren(problemBox(error));
    }
    return true;
  }, 5000);
}
