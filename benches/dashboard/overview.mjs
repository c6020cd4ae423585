// Time until every panel of the dashboard's overview shows its figures, in
// Chromium (Debian's, driven by playwright-core): the KPI cards, the chart
// and the four top lists. A fresh tab signs in, then the overview of the
// given range is opened `runs` times (the first is cold for ClickHouse's
// caches, the rest warm); each run is timed from navigation to the last
// panel leaving its loading state. Prints one JSON line.
//
// NODE_PATH=<dir with playwright-core> node benches/dashboard/overview.mjs \
//   '{"base":"http://127.0.0.1:3002","id":"…","secret":"…","project":"…",
//     "from":"2026-01-01","to":"2026-01-30","tz":"UTC","runs":5}'
import { createRequire } from 'node:module';

const { chromium } = createRequire(`${process.env.NODE_PATH}/`)('playwright-core');
const o = JSON.parse(process.argv[2]);
const runs = o.runs || 5;
const url = `${o.base}/dashboard?project=${o.project}&range=custom&from=${o.from}&to=${o.to}&tz=${encodeURIComponent(o.tz || 'UTC')}`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
const result = { url: url.replace(/project=[^&]+/, 'project=…'), runs: [], errors: [] };
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  await page.goto(`${o.base}/dashboard`);
  await page.fill('#client-id', o.id);
  await page.fill('#client-secret', o.secret);
  await page.click('button[type=submit]');
  await page.waitForSelector('#main');
  for (let i = 0; i < runs; i++) {
    const started = Date.now();
    await page.goto(url);
    const panels = await page.waitForFunction(() => {
      const all = [...document.querySelectorAll('#kpis, #chart, [data-dimension]')];
      const done = all.filter((p) => ['ready', 'empty', 'error'].includes(p.dataset.state));
      return all.length >= 6 && done.length === all.length && all.map((p) => `${p.id || p.dataset.dimension}:${p.dataset.state}`);
    }, null, { timeout: 120000, polling: 10 });
    const states = await panels.jsonValue();
    result.runs.push(Date.now() - started);
    if (states.some((s) => !s.endsWith(':ready') && !s.endsWith(':empty'))) result.errors.push(states);
  }
} finally {
  await browser.close();
}
const sorted = [...result.runs].sort((a, b) => a - b);
result.cold_ms = result.runs[0];
result.warm_median_ms = sorted[Math.floor(sorted.length / 2)];
console.log(JSON.stringify(result));
