// The demo page and /client.js in headless chromium against `tickfan demo`:
// rows update, the page reconnects and resumes after the edge restarts, and a
// gap marks a row stale. Every wait polls a condition with a deadline; each
// test saves screenshots to target/browser/ (even when it fails).
//
//   cd tests/browser && npm ci && TICKFAN_BIN=../../target/debug/tickfan node --test
//
// (scripts/browser-test.sh does all of it.)

import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  DEADLINE_MS, OUT, freePort, jwt, killAll, launchBrowser, produce, rows, screenshot, startDemo, status, waitFor,
} from './harness.mjs';

let browser;
let page;
let pageErrors = [];

before(async () => { browser = await launchBrowser(); });
after(async () => {
  await browser?.close();
  await killAll();
});
afterEach(async () => {
  await page?.context().close();
  page = null;
  await killAll();
});

/** Opens `url` in a fresh context and (unless told not to) waits until the client is connected. */
async function open(url, { connected = true } = {}) {
  await page?.context().close();
  const context = await browser.newContext({ viewport: { width: 1440, height: 720 } });
  page = await context.newPage();
  pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(url);
  if (connected) {
    await page.waitForFunction(() => document.querySelector('[data-testid=status]')?.dataset.state === 'open',
      null, { timeout: DEADLINE_MS });
  }
  return page;
}

/** Waits until every symbol's row has more than `counts[symbol]` ticks (and, with `fresh`, is not stale). */
function rowsGrow(symbols, counts, fresh = false) {
  return page.waitForFunction(([symbols, counts, fresh]) => symbols.every((s) => {
    const r = document.querySelector(`tr[data-symbol="${s}"]`);
    return r && Number(r.dataset.ticks) > (counts[s] ?? 0) && (!fresh || r.dataset.stale === 'false');
  }), [symbols, counts, fresh], { timeout: DEADLINE_MS, polling: 50 });
}

/** Runs `body`, then saves a screenshot named `name` whatever happened. */
async function shooting(name, body) {
  try {
    await body();
  } finally {
    if (page) console.log(`screenshot: ${await screenshot(page, name)}`);
  }
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
}

describe('demo page', () => {
  test('rows update live; symbols can be searched, added and removed', () => shooting('rows-update', async () => {
    const demo = await startDemo(await freePort(), [], 'rows-update.demo');
    const symbols = ['AAPL', 'MSFT', 'NVDA'];
    await open(`${demo.url}?symbols=${symbols.join(',')}`);
    const headers = await page.evaluate(() => [...document.querySelectorAll('th')].map((th) => th.textContent));
    for (const h of ['Symbol', 'Last', 'Chg %', 'Bid', 'Ask', 'Size', 'Trend']) assert.ok(headers.includes(h), `column ${h}`);

    // Each row gets ticks, and its last price changes.
    await rowsGrow(symbols, {});
    const first = await rows(page);
    const counts = Object.fromEntries(symbols.map((s) => [s, first[s].ticks]));
    await page.waitForFunction(([symbols, first]) => symbols.every((s) => {
      const r = document.querySelector(`tr[data-symbol="${s}"]`);
      return Number(r.dataset.ticks) > first[s].ticks && r.querySelector('.px').textContent !== first[s].price;
    }), [symbols, first], { timeout: DEADLINE_MS, polling: 50 });
    const now = await rows(page);
    for (const s of symbols) {
      assert.ok(now[s].ticks > counts[s], `${s} ticks grow`);
      assert.equal(now[s].stale, false, `${s} is fresh`);
      assert.match(now[s].price, /^\d+\.\d{2,4}$/, `${s} shows a price`);
    }

    // Search: type the start of a symbol this edge holds, pick the suggestion.
    const held = await (await fetch(new URL('/symbols', demo.url))).json();
    const extra = held.find((s) => !symbols.includes(s));
    assert.ok(extra, `/symbols lists more than the subscribed ones: ${held}`);
    await page.fill('#add-input', extra.slice(0, 3));
    await page.click(`#suggest li[data-symbol="${extra}"]`, { timeout: DEADLINE_MS });
    await rowsGrow([extra], {});
    // Add by typing, remove with the row's button.
    await page.fill('#add-input', 'TSLA');
    await page.press('#add-input', 'Escape');
    await page.click('button[type=submit]');
    await rowsGrow(['TSLA'], {});
    await page.click('tr[data-symbol="MSFT"] button.rm');
    await waitFor('MSFT row removed', async () => !(await rows(page)).MSFT);
    assert.match(page.url(), /symbols=AAPL,NVDA,[^&]*TSLA/, 'the URL keeps the chosen symbols');

    // Header and chart: delivered ticks/s and latency, a point per second.
    await page.waitForFunction(() => window.tickfanDemo.series.filter((s) => s.ticks > 0 && s.p50 != null).length >= 3,
      null, { timeout: DEADLINE_MS });
    const rate = await page.textContent('#rate');
    assert.match(rate, /^[\d,]+$/);
  }));

  test('the page reconnects and resumes after the edge restarts', () => shooting('reconnect', async () => {
    const port = await freePort();
    // A short drain window: the page gets its reconnect hint and the 1012 close within 1 s.
    const args = ['--drain-window', '1s', '--shutdown-grace', '5s'];
    let demo = await startDemo(port, args, 'reconnect.demo');
    const symbols = ['AAPL', 'MSFT'];
    await open(`${demo.url}?symbols=${symbols.join(',')}`);
    await rowsGrow(symbols, {});

    const before = (await page.evaluate(() => window.tickfanDemo.statusLog.length));
    const exit = await demo.stop('SIGTERM');
    assert.equal(exit.code, 0, `demo exits cleanly on SIGTERM: ${JSON.stringify(exit)}`);
    await page.waitForFunction((n) => window.tickfanDemo.statusLog.slice(n).some((s) => s.state === 'reconnecting'),
      before, { timeout: DEADLINE_MS });
    assert.notEqual(await status(page), 'open');
    // Every row is stale while the edge is away, and no tick arrives.
    await page.waitForFunction(() => [...document.querySelectorAll('tr[data-symbol]')].every((r) => r.dataset.stale === 'true'),
      null, { timeout: DEADLINE_MS });
    const down = await rows(page);
    for (const s of symbols) assert.match(down[s].reason, /disconnected/);
    const hint = await page.evaluate(() => window.tickfanDemo.statusLog.find((s) => s.code === 1012));
    assert.ok(hint, 'the edge closed the page with 1012 (after its reconnect hint)');
    await page.waitForFunction(() => document.querySelector('[data-testid=status]').dataset.state === 'reconnecting',
      null, { timeout: DEADLINE_MS, polling: 20 });
    console.log(`screenshot: ${await screenshot(page, 'reconnect-down')}`);

    // Same port, new process (and a new mock cluster: seqs start again).
    demo = await startDemo(port, args, 'reconnect.demo');
    await page.waitForFunction(() => document.querySelector('[data-testid=status]').dataset.state === 'open',
      null, { timeout: DEADLINE_MS });
    const counts = Object.fromEntries(symbols.map((s) => [s, down[s].ticks]));
    // Resubscribed: a new snapshot, then live ticks; the rows are fresh again.
    await rowsGrow(symbols, counts, true);
    await rowsGrow(symbols, Object.fromEntries(Object.entries(await rows(page)).map(([s, r]) => [s, r.ticks])));
  }));

  test('a gap marks the row stale until the next tick', () => shooting('gap', async () => {
    // A two-tick outbox and no pacing (the edge would otherwise wait for the
    // page, which reads): a burst for one symbol overflows it, the edge drops
    // the oldest ticks and sends a gap frame.
    const demo = await startDemo(await freePort(), ['--outbox-capacity', '2', '--pacing-patience', '0s'], 'gap.demo');
    const sym = 'GAPTEST';
    await open(`${demo.url}?symbols=${sym}`);
    await page.waitForFunction((s) => document.querySelector(`tr[data-symbol="${s}"]`)?.dataset.subscribed === 'true',
      sym, { timeout: DEADLINE_MS });
    const burst = (rate, duration) => produce(['--brokers', demo.brokers, '--topic', demo.topic, '--symbols', sym,
      '--rate', String(rate), '--duration', duration], 'gap.produce');

    // Burst until the row turns stale (the first burst may only warm the partition up).
    const end = Date.now() + DEADLINE_MS;
    let seen = null;
    while (!seen) {
      assert.ok(Date.now() < end, `row ${sym} never turned stale: ${JSON.stringify((await rows(page))[sym])}`);
      let done = 0;
      const running = burst(20000, '1s').finally(() => { done = Date.now(); });
      seen = await waitFor('stale row, or the burst over for 5 s', async () => {
        const r = (await rows(page))[sym];
        if (r.stale) return r;
        return done && Date.now() - done > 5000 ? 'none' : null;
      });
      if (seen === 'none') seen = null;
      else console.log(`screenshot: ${await screenshot(page, 'gap-stale')}`);
      await running;
    }
    assert.ok(seen.gaps > 0, `a gap frame arrived: ${JSON.stringify(seen)}`);
    assert.match(seen.reason, /gap/);

    // The protocol does not resync after a gap: the next tick is a full quote and
    // authoritative, so the row is fresh again without a resubscribe.
    await page.waitForFunction((s) => document.querySelector(`tr[data-symbol="${s}"]`).dataset.stale === 'false',
      sym, { timeout: DEADLINE_MS });
    const after = (await rows(page))[sym];
    await burst(20, '2s');   // slow enough for the two-tick outbox
    await rowsGrow([sym], { [sym]: after.ticks }, true);
    console.log(`output: ${OUT}`);
  }));

  test('with auth on, the token goes in the subprotocol, entitlements apply, and the client refreshes in-band',
    () => shooting('auth', async () => {
      const secret = 'browser-tests-hs256-secret-0123456789';
      const demo = await startDemo(await freePort(), ['--jwt-secret', secret], 'auth.demo');
      const mint = (ttl) => jwt(secret, { sub: 'trader-1', exp: Math.floor(Date.now() / 1000) + ttl, symbols: ['AAPL', 'MSFT'] });

      // No token: the handshake is refused (401, invisible to the page), so the page keeps retrying.
      await open(`${demo.url}?symbols=AAPL`, { connected: false });
      await page.waitForFunction(() => window.tickfanDemo.statusLog.filter((s) => s.code === 4401).length >= 2,
        null, { timeout: DEADLINE_MS });
      const log = await page.evaluate(() => window.tickfanDemo.statusLog);
      assert.ok(!log.some((s) => s.state === 'open'), `never open: ${JSON.stringify(log)}`);
      assert.match(await page.textContent('#notice'), /unauthorized.*missing token/);

      // With a token: connected; an entitled symbol ticks, the other is rejected.
      await open(`${demo.url}?symbols=AAPL,NVDA&token=${mint(600)}`);
      await rowsGrow(['AAPL'], {});
      const socket = await page.evaluate(() => {
        const ws = window.tickfanDemo.client._ws;
        return { protocol: ws.protocol, url: ws.url };
      });
      assert.equal(socket.protocol, 'tickfan', 'the edge selected the subprotocol that carried the token');
      assert.doesNotMatch(socket.url, /token=/, 'the token stayed out of the WebSocket URL');
      await page.waitForSelector('tr[data-symbol="NVDA"].rejected', { timeout: DEADLINE_MS });
      assert.match(await page.textContent('#notice'), /not_entitled/);

      // getToken: used for the handshake, and again before `exp` for {"op":"auth"}.
      await page.exposeFunction('mintToken', () => mint(40));
      await page.evaluate(async () => {
        const { TickfanClient } = await import('/client.js');
        const c = new TickfanClient('/ws', { getToken: () => window.mintToken(), refreshLeadMs: 38_000, symbols: ['MSFT'] });
        window.authTest = { authenticated: 0, ticks: 0 };
        c.on('authenticated', () => window.authTest.authenticated++);
        c.on('ticks', ({ ticks }) => { window.authTest.ticks += ticks.length; });
      });
      await page.waitForFunction(() => window.authTest.authenticated >= 1 && window.authTest.ticks > 0,
        null, { timeout: DEADLINE_MS });
    }));

  test('a refused handshake is retried after its Retry-After plus jitter', () => shooting('retry-after', async () => {
    // One open connection per IP: the page's client holds it, so a second
    // client is refused however slow the machine is (a connection-rate limit
    // would refill while a busy machine loads the page). Once the refusal is
    // seen the page's client closes, and the second client's retry gets in.
    const args = ['--max-connections-per-ip', '1'];
    const demo = await startDemo(await freePort(), args, 'retry-after.demo');
    await open(`${demo.url}?symbols=AAPL`);
    await rowsGrow(['AAPL'], {});
    await page.evaluate(async () => {
      const { TickfanClient } = await import('/client.js');
      window.second = [];
      const c = new TickfanClient('/ws', { symbols: ['MSFT'] });
      c.on('status', (d) => window.second.push({ ...d, at: Date.now() }));
    });
    await page.waitForFunction(() => window.second.some((s) => s.status === 'reconnecting'), null, { timeout: DEADLINE_MS });
    await page.evaluate(() => window.tickfanDemo.client.close());
    await page.waitForFunction(() => window.second.some((s) => s.status === 'open'), null, { timeout: DEADLINE_MS });
    const log = await page.evaluate(() => window.second);
    const refused = log.find((s) => s.status === 'reconnecting');
    const opened = log.find((s) => s.status === 'open');
    assert.equal(refused?.code, 1013, `refused in band with 1013: ${JSON.stringify(log)}`);
    assert.match(refused.reason, /too many connections from your address/);
    // retry_after_ms is 1000; the jitter of a first retry is at most the 250 ms base
    assert.ok(refused.delayMs >= 1000 && refused.delayMs <= 1250, `waits Retry-After plus jitter: ${refused.delayMs}`);
    assert.ok(opened.at - refused.at >= 1000, 'not back before Retry-After');
    assert.ok(log.indexOf(refused) < log.indexOf(opened) && !log.slice(0, log.indexOf(refused)).some((s) => s.status === 'open'),
      `the refused attempt never counted as open: ${JSON.stringify(log)}`);
  }));
});
