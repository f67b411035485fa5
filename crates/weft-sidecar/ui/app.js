// The dashboard's entry: picks the page for the address (every /ui/ address serves the same
// HTML) and marks the current navigation link.
import { h, replace, $ } from './dom.js';

const path = location.pathname.replace(/\/+$/, '');
const main = $('#main');

async function route() {
  let page = 'instances';
  let mod;
  const m = path.match(/^\/ui\/instances\/(.+)$/);
  if (m) {
    page = 'instance';
    mod = await import('./instance.js');
    await mod.render(main, decodeURIComponent(m[1]));
  } else if (path === '/ui/cluster') {
    page = 'cluster';
    mod = await import('./cluster.js');
    await mod.render(main);
  } else {
    mod = await import('./instances.js');
    await mod.render(main);
  }
  for (const a of document.querySelectorAll('[data-nav]')) {
    const here = a.dataset.nav === page || (page === 'instance' && a.dataset.nav === 'instances');
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

route().catch((e) => {
  replace(main, h('div', { class: 'error', role: 'alert' }, h('h1', {}, 'Could not load the page'), h('p', {}, String(e.message || e))));
});
