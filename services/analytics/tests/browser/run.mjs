// Drives Debian's Chromium with playwright-core through pages that load the
// published @openpanel/web tracker: two page views and a custom event on an
// allowed origin, then one page on an origin the project does not allow.
// Prints a JSON summary of what the browser saw on stdout.
//
// node run.mjs <edge url> <client id> <allowed port> <blocked port> <tracker.global.js>
import http from 'node:http';
import fs from 'node:fs';
import { createRequire } from 'node:module';

// ES modules ignore NODE_PATH: resolve playwright-core from it explicitly.
const { chromium } = createRequire(`${process.env.NODE_PATH}/`)('playwright-core');

const [edge, clientId, allowedPort, blockedPort, trackerFile] = process.argv.slice(2);
const tracker = fs.readFileSync(trackerFile);

// Only a client id and trackScreenViews, plus where our edge lives.
const page = (title, body) => `<!doctype html><html><head><title>${title}</title>
<script>
  window.op = window.op || function (...args) { (window.op.q = window.op.q || []).push(args); };
  window.op('init', { apiUrl: ${JSON.stringify(edge)}, clientId: ${JSON.stringify(clientId)}, trackScreenViews: true });
</script>
<script src="/op1.js" defer async></script>
</head><body>${body}</body></html>`;

const pages = {
  '/one.html': page('One', '<a id="next" href="/two.html">next</a>'),
  '/two.html': page('Two', `<button id="signup" onclick="window.op('track', 'signup_clicked', { plan: 'pro' })">sign up</button>`),
  '/blocked.html': page('Blocked', `<button id="blocked" onclick="window.op('track', 'blocked_clicked')">x</button>`),
};

function serve(port) {
  const server = http.createServer((req, res) => {
    const path = req.url.split('?')[0];
    if (path === '/op1.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      return res.end(tracker);
    }
    if (pages[path]) {
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end(pages[path]);
    }
    res.writeHead(404);
    res.end();
  });
  return new Promise((resolve) => server.listen(Number(port), '127.0.0.1', () => resolve(server)));
}

const servers = [await serve(allowedPort), await serve(blockedPort)];
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const summary = { accepted: [], blocked: [], preflights: 0, userAgent: '' };
try {
  const context = await browser.newContext();
  const tab = await context.newPage();
  summary.userAgent = await tab.evaluate(() => navigator.userAgent);
  const tracked = () => tab.waitForResponse((r) => r.url() === `${edge}/track` && r.request().method() === 'POST', { timeout: 20000 });

  let seen = tracked();
  await tab.goto(`http://127.0.0.1:${allowedPort}/one.html`);
  summary.accepted.push((await seen).status());

  seen = tracked();
  await tab.click('#next');
  summary.accepted.push((await seen).status());

  seen = tracked();
  await tab.click('#signup');
  summary.accepted.push((await seen).status());

  // The blocked origin: the tracker tries, the edge refuses, nothing is stored.
  const failures = [];
  tab.on('requestfailed', (r) => { if (r.url().startsWith(edge)) failures.push(r.failure()?.errorText ?? 'failed'); });
  tab.on('response', (r) => { if (r.url().startsWith(edge)) summary.blocked.push(r.status()); });
  await tab.goto(`http://127.0.0.1:${blockedPort}/blocked.html`);
  await tab.waitForTimeout(1500);
  await tab.click('#blocked');
  await tab.waitForTimeout(1500);
  summary.blockedFailures = failures;
} finally {
  await browser.close();
  servers.forEach((s) => s.close());
}
console.log(JSON.stringify(summary));
