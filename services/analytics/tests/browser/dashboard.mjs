// Drives Debian's Chromium with playwright-core through the dashboard:
// sign-in refusals, the overview of a known range (KPI cards, top pages and
// countries), a click that filters the page, the filtered URL reopened in a
// new page, the funnel, retention and events views, share links (open, with
// a password, revoked, and asked about another project), and screenshots.
// Prints one JSON line of what the pages showed; the Rust test compares it
// with the insights API's answers.
//
// node dashboard.mjs '<json: base, projects, read, root, write, range, funnel, shares, screenshots>'
import zlib from 'node:zlib';
import { createRequire } from 'node:module';

const { chromium } = createRequire(`${process.env.NODE_PATH}/`)('playwright-core');
const input = JSON.parse(process.argv[2]);
const { base, projects, range } = input;
const rangeQuery = `range=custom&from=${range.from}&to=${range.to}&tz=${encodeURIComponent(range.tz)}`;
const summary = { pageErrors: [] };

// The page's own files, as a browser gets them, gzipped.
async function sizes() {
  const html = await (await fetch(`${base}/dashboard`)).text();
  const files = { 'index.html': html };
  for (const m of html.matchAll(/(?:href|src)="([^"]+)"/g)) {
    files[m[1]] = await (await fetch(new URL(m[1], `${base}/dashboard`))).text();
  }
  const out = { files: {}, gzipped: 0, raw: 0 };
  for (const [name, text] of Object.entries(files)) {
    const gz = zlib.gzipSync(Buffer.from(text), { level: 9 }).length;
    out.files[name] = { raw: Buffer.byteLength(text), gzipped: gz };
    out.gzipped += gz;
    out.raw += Buffer.byteLength(text);
  }
  return out;
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

async function newPage(options = {}) {
  const context = await browser.newContext(Object.assign({ viewport: { width: 1280, height: 900 } }, options));
  const page = await context.newPage();
  page.on('pageerror', (e) => summary.pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/the server responded with a status of (401|403|404)/.test(m.text())) {
      summary.pageErrors.push(m.text());
    }
  });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
  return page;
}

async function signIn(page, client) {
  await page.fill('#client-id', client.id);
  await page.fill('#client-secret', client.secret);
  await page.click('button[type=submit]');
}

async function loginError(page) {
  await page.waitForFunction(() => document.querySelector('#login-error')?.textContent);
  return page.textContent('#login-error');
}

// Waits for the overview's KPI cards and its pages and countries lists.
async function overviewReady(page) {
  await page.waitForFunction(() => {
    const ready = (sel) => ['ready', 'empty'].includes(document.querySelector(sel)?.dataset.state);
    return ready('#kpis') && ready('[data-dimension=pages]') && ready('[data-dimension=countries]') && ready('#chart');
  }, null, { timeout: 30000 });
}

async function readKpis(page) {
  return page.$$eval('[data-kpi]', (cards) => Object.fromEntries(cards.map((c) => [c.dataset.kpi,
    { value: Number(c.dataset.value), text: c.querySelector('.value').textContent }])));
}

async function readRows(page, dimension) {
  return page.$$eval(`[data-dimension=${dimension}] .row`, (rows) => rows.slice(0, 3).map((r) => ({ value: r.dataset.value, views: r.dataset.views })));
}

try {
  summary.sizes = await sizes();

  // Sign-in refusals, then a root client.
  const page = await newPage();
  await page.goto(`${base}/dashboard`);
  await page.waitForSelector('#client-id');
  await signIn(page, { id: input.read.id, secret: 'sec_wrong' });
  summary.wrongSecret = await loginError(page);
  await signIn(page, input.write);
  // Submitting clears the message before the answer arrives: wait for a new one.
  await page.waitForFunction((before) => {
    const text = document.querySelector('#login-error')?.textContent;
    return text && text !== before;
  }, summary.wrongSecret);
  summary.writeClient = await page.textContent('#login-error');
  await signIn(page, input.root);
  await page.waitForSelector('#main');

  // The overview of the known range.
  const started = Date.now();
  await page.goto(`${base}/dashboard?project=${projects.a}&${rangeQuery}`);
  await overviewReady(page);
  summary.overview = {
    readyMs: Date.now() - started,
    kpis: await readKpis(page),
    pages: await readRows(page, 'pages'),
    countries: await readRows(page, 'countries'),
    projectsOffered: await page.$$eval('#project option', (o) => o.map((x) => x.value)),
  };
  await page.screenshot({ path: `${input.screenshots}/overview-1280.png`, fullPage: true });

  // A click on the top page filters everything; the URL carries the filter.
  await page.click('[data-dimension=pages] .row');
  await page.waitForFunction(() => location.search.includes('filters'));
  await overviewReady(page);
  summary.filtered = {
    url: page.url(),
    kpis: await readKpis(page),
    chips: await page.$$eval('.chip', (c) => c.map((x) => x.dataset.filter)),
  };
  await page.screenshot({ path: `${input.screenshots}/overview-filtered-1280.png`, fullPage: true });

  // The filtered URL in a new page (a new tab signs in again: sessionStorage is per tab).
  const again = await newPage();
  await again.goto(summary.filtered.url);
  await again.waitForSelector('#client-id');
  await signIn(again, input.read);
  await overviewReady(again);
  summary.reopened = { kpis: await readKpis(again), url: again.url() };

  // Funnel, retention, events.
  const funnelUrl = `${base}/dashboard?view=funnel&project=${projects.a}&${rangeQuery}&funnel=${encodeURIComponent(JSON.stringify({
    steps: input.funnel.steps, window: input.funnel.window, groupBy: input.funnel.groupBy,
  }))}`;
  await page.goto(funnelUrl);
  await page.waitForFunction(() => document.querySelector('#funnel')?.dataset.state === 'ready');
  summary.funnel = await page.$$eval('#funnel [data-count]', (s) => s.map((x) => x.dataset.count));
  await page.screenshot({ path: `${input.screenshots}/funnel-1280.png`, fullPage: true });

  await page.goto(`${base}/dashboard?view=retention&project=${projects.a}&${rangeQuery}`);
  await page.waitForFunction(() => document.querySelector('#retention')?.dataset.state === 'ready');
  summary.retention = await page.$eval('#retention tbody tr', (tr) => ({
    cohort: tr.dataset.cohort,
    day0: tr.querySelector('[data-period="0"]').dataset.value,
    day1: tr.querySelector('[data-period="1"]').dataset.value,
  }));
  await page.screenshot({ path: `${input.screenshots}/retention-1280.png`, fullPage: true });

  await page.goto(`${base}/dashboard?view=events&project=${projects.a}&${rangeQuery}`);
  await page.waitForSelector('#events tr.event');
  await page.click('#events tr.event');
  summary.events = {
    first: await page.$eval('#events tr.event', (tr) => tr.dataset.id),
    rows: await page.$$eval('#events tr.event', (r) => r.length),
    detail: await page.textContent('#events tr.detail pre'),
  };
  await page.screenshot({ path: `${input.screenshots}/events-1280.png` });

  // Phone width, and dark.
  const phone = await newPage({ viewport: { width: 375, height: 800 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  await phone.goto(`${base}/dashboard?project=${projects.a}&${rangeQuery}`);
  await phone.waitForSelector('#client-id');
  await phone.screenshot({ path: `${input.screenshots}/login-375.png` });
  await signIn(phone, input.read);
  await overviewReady(phone);
  summary.phoneOverflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await phone.screenshot({ path: `${input.screenshots}/overview-375.png`, fullPage: true });
  await phone.screenshot({ path: `${input.screenshots}/overview-375-top.png` });
  const dark = await newPage({ colorScheme: 'dark' });
  await dark.goto(`${base}/dashboard?project=${projects.a}&${rangeQuery}`);
  await dark.waitForSelector('#client-id');
  await signIn(dark, input.read);
  await overviewReady(dark);
  await dark.screenshot({ path: `${input.screenshots}/overview-dark-1280.png`, fullPage: true });

  // Share links, in pages that never signed in.
  const withRange = (path) => path.replace('#', `?${rangeQuery}#`);
  const open = await newPage();
  await open.goto(`${base}${withRange(input.shares.open)}`);
  await overviewReady(open);
  const [id, token] = input.shares.open.replace('/share/', '').split('#');
  summary.share = {
    kpis: await readKpis(open),
    otherProject: await open.evaluate(async ({ base, id, token, b, range }) => (await fetch(
      `${base}/share/${id}/insights/${b}/metrics?startDate=${range.from}&endDate=${range.to}`,
      { headers: { 'x-share-token': token } })).status, { base, id, token, b: projects.b, range }),
  };
  await open.screenshot({ path: `${input.screenshots}/share-1280.png` });

  const locked = await newPage();
  await locked.goto(`${base}${withRange(input.shares.locked)}`);
  await locked.waitForSelector('#share-password');
  summary.locked = { asked: true };
  await locked.fill('#share-password', 'not it');
  await locked.click('button[type=submit]');
  await locked.waitForFunction(() => document.querySelector('#password-error')?.textContent);
  summary.locked.wrong = await locked.textContent('#password-error');
  await locked.fill('#share-password', input.shares.password);
  await locked.click('button[type=submit]');
  await overviewReady(locked);
  summary.locked.kpis = await readKpis(locked);

  const revoked = await newPage();
  await revoked.goto(`${base}${withRange(input.shares.revoked)}`);
  await revoked.waitForSelector('.error');
  summary.revoked = await revoked.textContent('.error');
} finally {
  await browser.close();
}
console.log(JSON.stringify(summary));
