import { api, isAnonymousCart } from './api.js';
import { get, set, setJSON } from './session.js';
import { h, field, heading, problemBox, showProblem, clearProblem } from './ui.js';
import { navigate, updateAccount, updateCartCount } from './nav.js';

/** Logs in, handing the server the anonymous cart to merge into the customer's. */
export async function logIn(email, password) {
  const body = { email, password };
  if (isAnonymousCart(get('cartId'))) body.cartId = get('cartId');
  const session = await api('POST', '/v1/auth/login', { body, auth: false });
  setJSON('tokens', { ...session, email });
  set('cartId', null); // merged (and emptied) by the server
  updateAccount();
  updateCartCount();
}

// Where to go after signing in: a page of this shop (`next` is a path such as /checkout).
const afterwards = (params) => {
  const next = params.get('next') ?? '';
  return next.startsWith('/') && !next.startsWith('/login') && !next.startsWith('/register') ? `#${next}` : '#/';
};
const carry = (params) => (params.get('next') ? `?next=${encodeURIComponent(params.get('next'))}` : '');

function accountForm({ title, note, fields, button, submit, problem, footer }) {
  const form = h('form', { class: 'stack', novalidate: true }, fields, problem, button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearProblem(problem);
    button.disabled = true;
    try {
      await submit();
    } finally {
      button.disabled = false;
    }
  });
  return [heading(title), note, form, footer].filter(Boolean);
}

/** `#/login?next=/checkout` */
export function loginView(root, { params }) {
  const email = h('input', { id: 'login-email', type: 'email', autocomplete: 'email' });
  const password = h('input', { id: 'login-password', type: 'password', autocomplete: 'current-password' });
  const problem = problemBox();
  const note = params.get('expired') ? 'Your session has ended. Please log in again.'
    : params.get('next') ? 'Please log in to continue.' : null;
  root.append(...accountForm({
    title: 'Log in',
    note: note && h('p', { class: 'note', role: 'status' }, note),
    fields: [field('Email', email), field('Password', password)],
    button: h('button', { id: 'login-go', type: 'submit' }, 'Log in'),
    problem,
    async submit() {
      try {
        await logIn(email.value.trim(), password.value);
        navigate(afterwards(params));
      } catch (error) {
        showProblem(problem, error);
      }
    },
    footer: h('p', {}, 'New here? ', h('a', { href: `#/register${carry(params)}` }, 'Create an account')),
  }));
}

/** `#/register?next=/checkout` */
export function registerView(root, { params }) {
  const name = h('input', { id: 'register-name', type: 'text', autocomplete: 'name' });
  const email = h('input', { id: 'register-email', type: 'email', autocomplete: 'email' });
  const password = h('input', { id: 'register-password', type: 'password', autocomplete: 'new-password' });
  const problem = problemBox();
  root.append(...accountForm({
    title: 'Create an account',
    fields: [field('Name', name), field('Email', email), field('Password', password, 'At least 8 characters.')],
    button: h('button', { id: 'register-go', type: 'submit' }, 'Create account'),
    problem,
    async submit() {
      let registered = false;
      try {
        await api('POST', '/v1/auth/register',
          { body: { email: email.value.trim(), password: password.value, name: name.value.trim() }, auth: false });
        registered = true;
        await logIn(email.value.trim(), password.value);
        navigate(afterwards(params));
      } catch (error) {
        showProblem(problem, error);
        if (registered) problem.prepend(h('p', {}, 'Your account was created, but logging in failed.'));
      }
    },
    footer: h('p', {}, 'Have an account? ', h('a', { href: `#/login${carry(params)}` }, 'Log in')),
  }));
}
