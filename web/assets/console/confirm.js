// The in-page confirmation an operator action goes through: what will happen, a required reason,
// a confirm button and a way back. (window.confirm cannot ask for a reason, and is awkward to test.)

import { isQuiet } from './api.js';
import { field, h, panelCloser, problemBox } from './dom.js';

/**
 * Opens the panel in `container` (replacing what it held) and focuses the reason.
 * `onConfirm(reason)` does the action; when it resolves the panel closes and `onDone(result)`
 * runs; when it throws, the problem is shown in the panel and the operator may try again.
 */
export function openReasonPanel(container, { title, explanation, ids, confirmLabel, danger = false, onConfirm, onDone }) {
  const reason = h('textarea', { id: ids.reason, name: 'reason', rows: '3', maxlength: '500', required: true });
  const confirm = h('button', { type: 'submit', id: ids.confirm, class: danger ? 'danger' : 'primary' }, confirmLabel);
  const dismiss = h('button', { type: 'button', id: ids.dismiss, class: 'secondary' }, 'Back');
  const problems = h('div', {});
  const form = h('form', { class: 'panel', 'aria-label': title },
    h('h3', {}, title),
    h('p', {}, explanation),
    field('Reason (required, recorded with the action)', reason),
    problems,
    h('div', { class: 'buttons' }, confirm, dismiss));

  const close = panelCloser(container, form, dismiss);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = reason.value.trim();
    if (!text) {
      problems.replaceChildren(h('p', { class: 'problem', role: 'alert' }, 'Give a reason: it is recorded with the action.'));
      reason.focus();
      return;
    }
    problems.replaceChildren();
    confirm.disabled = true;
    try {
      const result = await onConfirm(text);
      close();
      onDone?.(result);
    } catch (error) {
      if (isQuiet(error)) return;
      problems.replaceChildren(problemBox(error));
      confirm.disabled = false;
    }
  });

  container.replaceChildren(form);
  reason.focus();
  return form;
}
