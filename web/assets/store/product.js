import { api } from './api.js';
import { h, field, heading, money, problemBox, showProblem, clearProblem } from './ui.js';
import { updateCartCount } from './nav.js';

/** `#/product/<id>` */
export function productView(root, { id }) {
  const title = heading('Product');
  title.id = 'product-name';
  const problem = problemBox();
  const body = h('div', { class: 'product' }, h('p', {}, 'Loading…'));
  root.append(h('p', {}, h('a', { href: '#/' }, '← Search')), title, problem, body);

  api('GET', `/v1/products/${encodeURIComponent(id)}`).then((product) => {
    title.textContent = product.name;
    document.title = `${product.name} · Shopfleet`;
    const quantity = h('input', { id: 'product-qty', type: 'number', min: 1, max: 99, value: '1', inputmode: 'numeric', required: true });
    const add = h('button', { id: 'add-to-cart', type: 'submit' }, 'Add to cart');
    const done = h('p', { class: 'done', role: 'status' });

    async function submit(event) {
      event.preventDefault();
      clearProblem(problem);
      done.replaceChildren();
      add.disabled = true;
      try {
        // PUT sets the line's quantity (it does not add to it), so say what the cart now holds.
        const cart = await api('PUT', `/v1/cart/lines/${encodeURIComponent(product.id)}`,
          { body: { quantity: Number(quantity.value) } });
        const line = cart.lines.find((each) => each.productID === product.id);
        done.replaceChildren(`Your cart now holds ${line?.quantity ?? 0} × ${product.name}. `,
          h('a', { href: '#/cart' }, 'View cart'));
        updateCartCount(cart);
      } catch (error) {
        showProblem(problem, error);
      } finally {
        add.disabled = false;
      }
    }

    body.replaceChildren(
      h('p', { class: 'price', id: 'product-price' }, money(product.price)),
      h('p', { class: 'meta' }, 'Category: ',
        h('a', { href: `#/?category=${encodeURIComponent(product.category)}`, id: 'product-category' }, product.category)),
      h('p', { id: 'product-description' }, product.description),
      h('form', { class: 'add', onsubmit: submit }, field('Quantity', quantity), add),
      done);
  }, (error) => {
    title.textContent = 'This product is not available';
    body.replaceChildren();
    showProblem(problem, error);
  });
}
