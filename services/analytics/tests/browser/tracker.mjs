// Drives Debian's Chromium with playwright-core through pages that use our
// own tracker (GET /tracker.js of the edge): on an allowed origin, a landing
// page links to an app page that queues a call before the script loads,
// navigates twice with pushState (and repeats a URL), clicks a data-track
// button, calls window.analytics, and leaves through an outbound link (a
// pagehide handler sends one more event, kept alive); an opted-out page and
// a page on an origin the project does not allow.
// Prints one JSON line of what the browser saw.
//
// node tracker.mjs '<json: edge, clientId, allowed, blocked>'
import http from 'node:http';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';

const { chromium } = createRequire(`${process.env.NODE_PATH}/`)('playwright-core');
const { edge, clientId, allowed, blocked } = JSON.parse(process.argv[2]);
const tag = `<script defer src="${edge}/tracker.js" data-client-id="${clientId}"></script>`;
const queue = `<script>window.analytics=window.analytics||function(){(analytics.q=analytics.q||[]).push(arguments)};
analytics('track', 'queued_before_load', { early: true });</script>`;

const pages = {
  '/landing.html': '<a id="go" href="/app.html">open the app</a>',
  '/app.html': `${queue}${tag}
<script>addEventListener('pagehide', () => analytics('track', 'page_left'));</script>
<button id="nav1" onclick="history.pushState({}, '', '/app/page-2')">page 2</button>
<button id="nav2" onclick="history.pushState({}, '', '/app/page-3')">page 3</button>
<button id="same" onclick="history.replaceState({}, '', location.href)">same</button>
<button id="signup" onclick="analytics('track', 'signup', { from: 'api' })">sign up</button>
<button id="buy" data-track="purchase_click" data-track-plan="pro" data-track-price="9"><span id="buy-label">Buy</span></button>
<a id="out" href="http://127.0.0.1:${blocked}/elsewhere.html">elsewhere</a>`,
  '/optout.html': `<script>localStorage.setItem('analytics:disabled', '1')</script>${tag}
<button id="buy" data-track="optout_click">Buy</button>`,
  '/blocked.html': `${tag}<button id="buy" data-track="blocked_click">Buy</button>`,
  '/elsewhere.html': 'elsewhere',
};

function serve(port) {
  const server = http.createServer((req, res) => {
    const body = pages[req.url.split('?')[0]];
    res.writeHead(body ? 200 : 404, { 'content-type': 'text/html' });
    res.end(body ? `<!doctype html><html><head><title>${req.url}</title></head><body>${body}</body></html>` : '');
  });
  return new Promise((resolve) => server.listen(Number(port), '127.0.0.1', () => resolve(server)));
}

const servers = [await serve(allowed), await serve(blocked)];
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const summary = { blocked: [], optOutRequests: 0 };
try {
  const script = await fetch(`${edge}/tracker.js`);
  const text = await script.text();
  summary.raw = Buffer.byteLength(text);
  summary.gzipped = zlib.gzipSync(Buffer.from(text), { level: 9 }).length;
  summary.etag = script.headers.get('etag');
  summary.cache = script.headers.get('cache-control');

  const context = await browser.newContext();
  const tab = await context.newPage();
  const tracked = [];
  tab.on('response', (r) => { if (r.url() === `${edge}/track` && r.request().method() === 'POST') tracked.push(r.status()); });
  // Waits until the edge has answered `n` events of this tab.
  const sent = async (n) => {
    const deadline = Date.now() + 20000;
    while (tracked.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (tracked.length < n) throw new Error(`only ${tracked.length} of ${n} events answered: ${tracked}`);
  };

  await tab.goto(`http://127.0.0.1:${allowed}/landing.html`);
  await tab.click('#go');
  await sent(2); // the queued call and the first view
  await tab.click('#nav1');
  await sent(3);
  // Repeats of the URL shown: no new view.
  await tab.click('#same');
  await tab.click('#nav1');
  await tab.click('#signup');
  await sent(4);
  await tab.click('#nav2');
  await sent(5);
  await tab.click('#buy-label'); // a click inside the tagged element
  await sent(6);
  // Leaving: link_out, then page_left from the pagehide handler (kept alive).
  await tab.click('#out');
  await tab.waitForURL(`http://127.0.0.1:${blocked}/elsewhere.html`);
  await new Promise((r) => setTimeout(r, 1500));
  summary.accepted = tracked;

  // Opted out: no request at all.
  const quiet = await context.newPage();
  quiet.on('request', (r) => { if (r.url() === `${edge}/track`) summary.optOutRequests++; });
  await quiet.goto(`http://127.0.0.1:${allowed}/optout.html`);
  await quiet.waitForTimeout(1000);
  await quiet.click('#buy');
  await quiet.waitForTimeout(1000);
  await quiet.evaluate(() => localStorage.removeItem('analytics:disabled'));

  // A page on an origin the project does not allow: refused by the edge.
  const other = await context.newPage();
  other.on('response', (r) => { if (r.url() === `${edge}/track` && r.request().method() === 'POST') summary.blocked.push(r.status()); });
  other.on('requestfailed', (r) => { if (r.url() === `${edge}/track`) summary.blocked.push(r.failure()?.errorText ?? 'failed'); });
  await other.goto(`http://127.0.0.1:${blocked}/blocked.html`);
  await other.waitForTimeout(1000);
  await other.click('#buy');
  await other.waitForTimeout(1500);
} finally {
  await browser.close();
  servers.forEach((s) => s.close());
}
console.log(JSON.stringify(summary));
