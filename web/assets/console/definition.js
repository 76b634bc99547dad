// The saga definition tab: the state machine drawn as an SVG (states as boxes, transitions as
// labelled arrows, layered by BFS depth from the initial state), the Mermaid text, and tables.

import { get } from './api.js';
import { badge, h, svg, table } from './dom.js';

let cached = null;

/**
 * The definition, fetched once per page load (it changes only with a deploy). Not tied to a
 * view's abort signal: the views share the one answer, and leaving one must not cancel it.
 */
export function loadDefinition() {
  cached ??= get('/v1/admin/sagas/definition').catch((error) => {
    cached = null;
    throw error;
  });
  return cached;
}

const BOX = { width: 184, height: 46 };
const GAP = { column: 150, row: 110 };
const PAD = 40;

/** Rows of state names: row n holds the states n transitions away from the initial state. */
function layers(definition) {
  const names = definition.states.map((state) => state.name);
  if (!names.includes(definition.initial)) names.unshift(definition.initial);
  const depth = new Map([[definition.initial, 0]]);
  const queue = [definition.initial];
  while (queue.length > 0) {
    const from = queue.shift();
    for (const transition of definition.transitions) {
      if (transition.from === from && !depth.has(transition.to)) {
        depth.set(transition.to, depth.get(from) + 1);
        queue.push(transition.to);
      }
    }
  }
  const deepest = Math.max(...depth.values());
  const rows = [];
  for (const name of names) {
    // States the initial one never leads to still get drawn, on a row of their own at the end.
    const row = depth.get(name) ?? deepest + 1;
    (rows[row] ??= []).push(name);
  }
  // One pass of the barycentre heuristic: order each row by where its predecessors stand, which
  // untangles most crossings for a machine this size.
  const column = new Map();
  rows.forEach((row, index) => {
    if (index > 0) {
      const weight = (name) => {
        const from = definition.transitions.filter((t) => t.to === name && column.has(t.from)).map((t) => column.get(t.from));
        return from.length ? from.reduce((a, b) => a + b, 0) / from.length : Number.MAX_SAFE_INTEGER;
      };
      row.sort((a, b) => weight(a) - weight(b));
    }
    row.forEach((name, position) => column.set(name, position - (row.length - 1) / 2));
  });
  return rows.filter(Boolean);
}

/** Where the line from a box's centre towards `toward` leaves the box. */
function border(center, toward) {
  const dx = toward.x - center.x;
  const dy = toward.y - center.y;
  if (dx === 0 && dy === 0) return center;
  const scale = Math.min(
    dx === 0 ? Infinity : (BOX.width / 2) / Math.abs(dx),
    dy === 0 ? Infinity : (BOX.height / 2) / Math.abs(dy));
  return { x: center.x + dx * scale, y: center.y + dy * scale };
}

/** Splits a label into lines of about `width` characters. */
function wrap(text, width = 24) {
  const lines = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + word.length + 1 > width) {
      lines.push(line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

// Label text is 10.5px: about 6px a character and 12px a line (no measuring: the SVG may not be
// in the document yet).
const labelBox = (lines, x, y) => {
  const width = Math.max(...lines.map((line) => line.length)) * 6 + 6;
  const height = lines.length * 12 + 2;
  return { left: x - width / 2, right: x + width / 2, top: y - height / 2, bottom: y + height / 2 };
};
const overlap = (a, b) => Math.max(0, Math.min(a.right, b.right) - Math.max(a.left, b.left))
  * Math.max(0, Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top));

/**
 * Places a label near the middle of its edge where it covers no box and no other label: tries
 * points along the curve, then beside it, and takes the least bad one when all collide.
 */
function placeLabel(lines, pointAt, normal, taken) {
  const candidates = [[0.5, 0], [0.4, 0], [0.6, 0], [0.5, -16], [0.5, 16], [0.3, 0], [0.7, 0], [0.4, -16], [0.6, 16], [0.5, -30], [0.5, 30]];
  let best = null;
  for (const [t, shift] of candidates) {
    const point = pointAt(t);
    const x = point.x + normal.x * shift;
    const y = point.y + normal.y * shift;
    const box = labelBox(lines, x, y);
    const cost = taken.reduce((sum, other) => sum + overlap(box, other), 0);
    if (!best || cost < best.cost) best = { x, y, box, cost };
    if (cost === 0) break;
  }
  taken.push(best.box);
  return best;
}

function label(lines, x, y) {
  const node = svg('text', { x, y, class: 'edge-label', 'text-anchor': 'middle', 'dominant-baseline': 'middle' });
  lines.forEach((line, index) => {
    node.append(svg('tspan', { x, dy: index === 0 ? `${-(lines.length - 1) * 0.55}em` : '1.1em' }, document.createTextNode(line)));
  });
  return node;
}

/** The diagram as an <svg>; `current` names a state to highlight. */
export function drawDiagram(definition, { id, current, markerId = `${id || 'diagram'}-arrow` } = {}) {
  const rows = layers(definition);
  const widest = Math.max(...rows.map((row) => row.length));
  const width = PAD * 2 + widest * BOX.width + (widest - 1) * GAP.column;
  const height = PAD * 2 + rows.length * BOX.height + (rows.length - 1) * GAP.row;
  const center = new Map();
  rows.forEach((row, rowIndex) => {
    const rowWidth = row.length * BOX.width + (row.length - 1) * GAP.column;
    row.forEach((name, index) => {
      center.set(name, {
        x: (width - rowWidth) / 2 + index * (BOX.width + GAP.column) + BOX.width / 2,
        y: PAD + rowIndex * (BOX.height + GAP.row) + BOX.height / 2,
        row: rowIndex,
        index,
      });
    });
  });

  const titleId = `${id || 'diagram'}-title`;
  const root = svg('svg', {
    id, viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-labelledby': titleId, class: 'diagram',
  });
  root.append(
    svg('title', { id: titleId }, document.createTextNode(
      `State machine of the ${definition.name} saga: ${definition.states.length} states, ${definition.transitions.length} transitions`)),
    svg('defs', {}, svg('marker', {
      id: markerId, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 8, markerHeight: 8, orient: 'auto-start-reverse',
    }, svg('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }))));

  // Labels keep off the boxes and off each other.
  const taken = [...center.values()].map((point) => ({
    left: point.x - BOX.width / 2 - 4, right: point.x + BOX.width / 2 + 4, top: point.y - BOX.height / 2 - 4, bottom: point.y + BOX.height / 2 + 4,
  }));
  const edges = svg('g', { class: 'edges' });
  const labels = svg('g', { class: 'edge-labels' });
  const seen = new Map();
  for (const transition of definition.transitions) {
    const from = center.get(transition.from);
    const to = center.get(transition.to);
    if (!from || !to) continue;
    const pair = `${transition.from}→${transition.to}`;
    const repeat = seen.get(pair) ?? 0;
    seen.set(pair, repeat + 1);
    let start;
    let control;
    let end;
    let path;
    if (from === to) {
      const x = from.x + BOX.width / 2;
      const loop = 36 + repeat * 16;
      start = { x, y: from.y - 10 };
      end = { x, y: from.y + 10 };
      control = { x: x + loop, y: from.y };
      path = `M${start.x},${start.y} C${x + loop},${from.y - 30} ${x + loop},${from.y + 30} ${end.x},${end.y}`;
    } else if (from.row === to.row && Math.abs(from.index - to.index) === 1) {
      // Neighbours on a row: a straight arrow across the gap, the two directions apart.
      const direction = Math.sign(to.x - from.x);
      const y = from.y + (direction > 0 ? -9 : 9) + repeat * 6;
      start = { x: from.x + direction * BOX.width / 2, y };
      end = { x: to.x - direction * BOX.width / 2, y };
      control = { x: (start.x + end.x) / 2, y };
      path = `M${start.x},${start.y} L${end.x},${end.y}`;
    } else {
      // Every other arrow bends a little to its left, so the two directions between a pair of
      // states part, and more when it skips rows or boxes, so it passes beside those in between.
      const dx = to.x - from.x;
      const dy = to.y - from.y;
      const length = Math.hypot(dx, dy);
      const skipped = from.row === to.row ? Math.abs(from.index - to.index) : Math.abs(to.row - from.row) - 1;
      const bend = 26 + skipped * 60 + repeat * 24;
      control = { x: (from.x + to.x) / 2 + (dy / length) * bend, y: (from.y + to.y) / 2 - (dx / length) * bend };
      start = border(from, control);
      end = border(to, control);
      path = `M${start.x},${start.y} Q${control.x},${control.y} ${end.x},${end.y}`;
    }
    const pointAt = (t) => ({
      x: (1 - t) ** 2 * start.x + 2 * (1 - t) * t * control.x + t ** 2 * end.x,
      y: (1 - t) ** 2 * start.y + 2 * (1 - t) * t * control.y + t ** 2 * end.y,
    });
    const along = { x: end.x - start.x, y: end.y - start.y };
    const size = Math.hypot(along.x, along.y) || 1;
    const lines = wrap(transition.on);
    const spot = placeLabel(lines, pointAt, { x: -along.y / size, y: along.x / size }, taken);
    edges.append(svg('g', { class: 'edge', 'data-test': 'diagram-edge' },
      svg('title', {}, document.createTextNode(`${transition.from} → ${transition.to}: ${transition.on}`)),
      svg('path', { d: path, class: 'edge-line', 'marker-end': `url(#${markerId})` })));
    labels.append(label(lines, spot.x, spot.y));
  }

  const start = center.get(definition.initial);
  const entry = svg('g', { class: 'entry' },
    svg('circle', { cx: start.x, cy: start.y - BOX.height / 2 - 26, r: 7 }),
    svg('path', { d: `M${start.x},${start.y - BOX.height / 2 - 19} L${start.x},${start.y - BOX.height / 2}`, class: 'edge-line', 'marker-end': `url(#${markerId})` }));

  const states = svg('g', { class: 'states' });
  const byName = new Map(definition.states.map((state) => [state.name, state]));
  for (const [name, point] of center) {
    const state = byName.get(name) ?? { name, terminal: false, status: '' };
    const classes = ['state', state.terminal ? 'terminal' : 'open', name === definition.initial && 'initial', name === current && 'current']
      .filter(Boolean).join(' ');
    const group = svg('g', { class: classes, 'data-test': 'diagram-state', 'data-state': name });
    group.append(
      svg('title', {}, document.createTextNode(`${name}${state.terminal ? ' (terminal)' : ''}; the customer sees ${state.status}`)),
      svg('rect', { x: point.x - BOX.width / 2, y: point.y - BOX.height / 2, width: BOX.width, height: BOX.height, rx: state.terminal ? 22 : 6 }),
      svg('text', { x: point.x, y: point.y - 6, 'text-anchor': 'middle', 'dominant-baseline': 'middle', class: 'state-name' }, document.createTextNode(name)),
      svg('text', { x: point.x, y: point.y + 12, 'text-anchor': 'middle', 'dominant-baseline': 'middle', class: 'state-status' },
        document.createTextNode(state.status || '')));
    states.append(group);
  }

  root.append(edges, entry, states, labels);
  return root;
}

export async function renderDefinition(section) {
  const title = h('h1', { tabindex: '-1' }, 'Saga definition');
  const loading = h('p', { class: 'loading' }, 'Loading the definition…');
  section.append(title, loading);
  const definition = await loadDefinition();
  title.textContent = `Saga definition: ${definition.name}`;
  loading.remove();
  section.append(
    h('p', {}, `${definition.states.length} states, ${definition.transitions.length} transitions, starting in `,
      h('code', {}, definition.initial), '. Rows are the number of steps from the start.'),
    h('ul', { class: 'legend', 'aria-label': 'Legend' },
      h('li', {}, h('span', { class: 'swatch swatch-open', 'aria-hidden': 'true' }), 'open state'),
      h('li', {}, h('span', { class: 'swatch swatch-terminal', 'aria-hidden': 'true' }), 'terminal state (nothing more happens)')),
    h('div', { class: 'diagram-wrap', tabindex: '0', role: 'region', 'aria-label': 'State diagram' },
      drawDiagram(definition, { id: 'saga-diagram' })),
    h('details', {},
      h('summary', {}, 'Mermaid text'),
      h('pre', { id: 'saga-mermaid', class: 'code' }, definition.mermaid || '')),
    h('h2', {}, 'States'),
    table('States', ['State', 'Terminal', 'Order status'], definition.states.map((state) =>
      h('tr', { 'data-test': 'definition-state' },
        h('td', {}, h('code', {}, state.name)),
        h('td', {}, state.terminal ? badge('terminal') : 'no'),
        h('td', {}, state.status)))),
    h('h2', {}, 'Transitions'),
    table('Transitions', ['From', 'On', 'To'], definition.transitions.map((transition) =>
      h('tr', { 'data-test': 'definition-transition' },
        h('td', {}, h('code', {}, transition.from)),
        h('td', {}, transition.on),
        h('td', {}, h('code', {}, transition.to))))));
}
