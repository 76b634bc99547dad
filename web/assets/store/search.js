import { api } from './api.js';
import { h, field, heading, money, problemBox, showProblem } from './ui.js';
import { navigate } from './nav.js';

const PAGE_SIZE = 12;
const SORTS = [['relevance', 'Relevance'], ['price_asc', 'Price, low to high'],
  ['price_desc', 'Price, high to low'], ['name', 'Name']];
const categories = new Set(); // seen in results, offered as suggestions

// The filters are typed in major units (12.50) and asked for in minor units (1250).
const minor = (text) => (text ? String(Math.round(Number(text) * 100)) : '');

const pageHash = (params) => (String(params) ? `#/?${params}` : '#/');

function result({ product, inStock }) {
  return h('li', { class: 'card', 'data-test': 'result' },
    h('a', { href: `#/product/${encodeURIComponent(product.id)}`, 'data-test': 'result-name' }, product.name),
    h('p', { class: 'price' }, money(product.price)),
    h('p', { class: 'meta' }, `${product.category} · `,
      h('span', { class: inStock ? 'in-stock' : 'out-of-stock' }, inStock ? 'In stock' : 'Out of stock')));
}

/** `#/?q=…&category=…&min=…&max=…&instock=1&sort=…&cursor=…` */
export function searchView(root, { params }) {
  const input = (id, type, value, extra = {}) => h('input', { id, name: id, type, value: value ?? '', ...extra });
  const q = input('search-q', 'search', params.get('q'), { autocomplete: 'off' });
  const category = input('filter-category', 'text', params.get('category'), { list: 'categories', autocomplete: 'off' });
  const min = input('filter-min', 'number', params.get('min'), { min: 0, step: '0.01', inputmode: 'decimal' });
  const max = input('filter-max', 'number', params.get('max'), { min: 0, step: '0.01', inputmode: 'decimal' });
  const inStock = input('filter-instock', 'checkbox', null, { checked: params.get('instock') === '1' });
  const sort = h('select', { id: 'filter-sort' }, SORTS.map(([value, label]) => h('option', { value }, label)));
  sort.value = params.get('sort') ?? 'relevance';
  if (sort.selectedIndex < 0) sort.value = 'relevance';
  const suggestions = h('datalist', { id: 'categories' });

  function submit(event) {
    event.preventDefault();
    const next = new URLSearchParams();
    const entries = [['q', q.value.trim()], ['category', category.value.trim()], ['min', min.value], ['max', max.value],
      ['instock', inStock.checked ? '1' : ''], ['sort', sort.value === 'relevance' ? '' : sort.value]];
    for (const [key, value] of entries) if (value) next.set(key, value);
    navigate(pageHash(next));
  }

  const problem = problemBox();
  const summary = h('p', { class: 'summary', role: 'status' }, 'Searching…');
  const results = h('ol', { id: 'results', class: 'results', 'aria-busy': 'true' });
  const first = h('button', { type: 'button', id: 'first-page', class: 'secondary', hidden: !params.has('cursor') }, 'First page');
  const next = h('button', { type: 'button', id: 'next-page', hidden: true }, 'Next page');
  first.addEventListener('click', () => {
    params.delete('cursor');
    navigate(pageHash(params));
  });

  root.append(heading('Find something'),
    h('form', { class: 'search', role: 'search', onsubmit: submit },
      h('div', { class: 'search-row' },
        h('label', { for: 'search-q', class: 'visually-hidden' }, 'Search products'), q,
        h('button', { type: 'submit', id: 'search-go' }, 'Search')),
      h('fieldset', { class: 'filters' }, h('legend', {}, 'Filters'),
        field('Category', category), suggestions, field('Min price', min), field('Max price', max),
        field('Sort by', sort), field('In stock only', inStock))),
    problem, summary, results, h('div', { class: 'pager' }, first, next));

  const query = new URLSearchParams({ limit: PAGE_SIZE });
  const wanted = [['q', params.get('q')], ['category', params.get('category')], ['minPrice', minor(params.get('min'))],
    ['maxPrice', minor(params.get('max'))], ['inStock', params.get('instock') === '1' ? 'true' : ''],
    ['sort', sort.value === 'relevance' ? '' : sort.value], ['cursor', params.get('cursor')]];
  for (const [key, value] of wanted) if (value) query.set(key, value);

  api('GET', `/v1/products?${query}`).then((page) => {
    results.replaceChildren(...page.items.map(result));
    summary.textContent = page.items.length
      ? `${page.items.length} product${page.items.length === 1 ? '' : 's'} on this page`
      : 'No products match.';
    for (const { product } of page.items) categories.add(product.category);
    suggestions.replaceChildren(...[...categories].sort().map((value) => h('option', { value })));
    if (page.nextCursor) {
      next.hidden = false;
      next.addEventListener('click', () => {
        params.set('cursor', page.nextCursor);
        navigate(pageHash(params));
      });
    }
  }, (error) => {
    summary.textContent = '';
    showProblem(problem, error);
  }).finally(() => results.removeAttribute('aria-busy'));
}
