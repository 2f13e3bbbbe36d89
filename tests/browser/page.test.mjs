// The demo page and /client.js in headless chromium against `tickfan demo`:
// rows update, the page reconnects and resumes after the edge restarts, and a
// gap marks a row stale. Every wait polls a condition with a deadline; each
// test saves screenshots to target/browser/ (even when it fails).
//
//   cd tests/browser && npm ci && TICKFAN_BIN=../../target/debug/tickfan node --test
//
// (scripts/browser-test.sh does all of it.)

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  DEADLINE_MS, OUT, freePort, jwt, killAll, launchBrowser, produce, rows, screenshot, startDemo, startEdge, status, waitFor,
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

/**
 * Opens `url` in a fresh context and (unless told not to) waits until the
 * client is connected; `setup(page)` runs before the page loads.
 */
async function open(url, { connected = true, setup, viewport = { width: 1440, height: 720 }, colorScheme, reducedMotion } = {}) {
  await page?.context().close();
  const context = await browser.newContext({ viewport, colorScheme, reducedMotion });
  page = await context.newPage();
  pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  if (setup) setup(page);
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

/** The time and sales list, newest first: {sym, seq, snapshot} per tick row, {sym, gap: [from, to]} per gap row. */
function tape(page) {
  return page.evaluate(() => [...document.querySelectorAll('#tape-rows tr')].map((r) => (r.classList.contains('tape-gap')
    ? { sym: r.dataset.sym, gap: [Number(r.dataset.gapFrom), Number(r.dataset.gapTo)] }
    : { sym: r.dataset.sym, seq: Number(r.dataset.seq), snapshot: r.classList.contains('snap') })));
}

/** Runs `body`, then saves a screenshot named `name` whatever happened (a failed screenshot never hides the body's error). */
async function shooting(name, body) {
  try {
    await body();
  } finally {
    if (page) {
      try {
        console.log(`screenshot: ${await screenshot(page, name)}`);
      } catch (err) {
        console.log(`screenshot ${name} failed: ${err.message.split('\n')[0]}`);
      }
    }
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
      assert.equal(now[s].stale, false, `${s} is fresh: ${JSON.stringify(now[s])}`);
      assert.match(now[s].price, /^\d+\.\d{2,4}$/, `${s} shows a price`);
    }

    // The connection badge is a status, not a button: clicking it changes
    // nothing; a polite live region names the state for screen readers.
    const opened = await page.evaluate(() => window.tickfanDemo.statusLog.length);
    await page.click('[data-testid=status]');
    await rowsGrow(symbols, Object.fromEntries(Object.entries(await rows(page)).map(([s, r]) => [s, r.ticks])));
    assert.equal(await status(page), 'open', 'a click on the badge does not disconnect');
    assert.equal(await page.evaluate(() => window.tickfanDemo.statusLog.length), opened, 'no status change after the click');
    assert.equal(await page.getAttribute('#status-live', 'role'), 'status');
    assert.equal(await page.getAttribute('#status-live', 'aria-live'), 'polite');
    assert.equal(await page.textContent('#status-live'), 'connection open');

    // Time and sales: nothing is selected at first; Enter on a focused row
    // selects it alone, Space adds the next one (arrow keys move).
    const selected = () => page.evaluate(() => [...document.querySelectorAll('#rows tr[aria-selected=true]')].map((r) => r.dataset.symbol));
    assert.deepEqual(await selected(), []);
    assert.equal(await page.textContent('#tape-empty'), 'Select a row to see its time and sales.');
    await page.focus('tr[data-symbol="MSFT"]');
    await page.keyboard.press('Enter');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('Space');
    assert.deepEqual(await selected(), ['MSFT', 'NVDA']);
    assert.equal(await page.evaluate(() => document.activeElement.dataset.symbol), 'NVDA');
    await waitFor('time and sales of MSFT and NVDA, newest first', async () => {
      const list = await tape(page);
      return new Set(list.map((t) => t.sym)).size === 2 && list.length >= 10;
    });
    const list = await tape(page);
    assert.ok(list.every((t) => ['MSFT', 'NVDA'].includes(t.sym) && !t.gap), JSON.stringify(list.slice(0, 5)));
    for (const s of ['MSFT', 'NVDA']) {
      const seqs = list.filter((t) => t.sym === s).map((t) => t.seq);
      assert.ok(seqs.every((q, i) => i === 0 || q < seqs[i - 1]), `${s}: newest first: ${seqs}`);
    }
    assert.match(page.url(), /sel=MSFT,NVDA/, 'the URL keeps the selection');
    await page.click('tr[data-symbol="AAPL"] td.c-last');
    assert.deepEqual(await selected(), ['AAPL'], 'a click selects one row');

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

  test('time and sales over an edge killed and restarted: the client resumes, the list has no hole', () => shooting('resume', async () => {
    // The demo is Kafka and the feed; the page is served by a separate edge on
    // it, which is SIGKILLed and started again on the same port while the feed
    // goes on. The new edge holds nothing of the outage in memory: it reads
    // the missed ticks back from Kafka. The demo's mock cluster keeps about
    // 400 records per partition (5 MB logs of 12 KiB padded records): at the
    // default 1000 ticks/s a couple of seconds of history, less than a restart
    // and reconnect take on a loaded machine; at 30 ticks/s about a minute.
    const demo = await startDemo(await freePort(), ['--rate', '30'], 'resume.demo');
    const port = await freePort();
    let edge = await startEdge(port, demo, [], 'resume.edge');
    const sym = 'AAPL';   // the feed's busiest symbol (Zipf popularity, the well-known tickers first)
    const sent = [];      // every frame the page sends, on every connection
    await open(`${edge.url}?symbols=MSFT,${sym}&tape=5000`, {
      setup: (p) => p.on('websocket', (ws) => ws.on('framesent', ({ payload }) => sent.push(String(payload)))),
    });
    // Every tick the client delivers for the symbol, and every gap.
    await page.evaluate((sym) => {
      const c = window.tickfanDemo.client;
      window.delivered = [];
      c.on('snapshot', ({ symbol, tick }) => symbol === sym && window.delivered.push({ seq: tick.seq, ts: tick.ts, snapshot: true }));
      c.on('tick', ({ symbol, tick }) => symbol === sym && window.delivered.push({ seq: tick.seq, ts: tick.ts }));
      c.on('gap', (g) => window.delivered.push({ gap: g }));
    }, sym);
    await page.click(`tr[data-symbol="${sym}"] td.c-last`);
    assert.equal(await page.getAttribute(`tr[data-symbol="${sym}"]`, 'aria-selected'), 'true');
    await page.waitForFunction(() => document.querySelectorAll('#tape-rows tr').length >= 10 && window.delivered.length >= 10,
      null, { timeout: DEADLINE_MS, polling: 50 });

    const exit = await edge.kill('SIGKILL');
    assert.equal(exit.signal, 'SIGKILL');
    await page.waitForFunction(() => window.tickfanDemo.client.status === 'reconnecting', null, { timeout: DEADLINE_MS, polling: 20 });
    // The connection is gone: nothing more arrives, this is the last tick the client holds.
    const before = await page.evaluate(() => window.delivered.at(-1));
    assert.ok(before && !before.gap, `a last tick: ${JSON.stringify(before)}`);
    // The edge stays away a while (the feed goes on; that ticks were made
    // meanwhile, and replayed, is asserted below).
    await new Promise((r) => setTimeout(r, 2000));
    assert.notEqual(await status(page), 'open');
    console.log(`screenshot: ${await screenshot(page, 'resume-down')}`);
    edge = await startEdge(port, demo, [], 'resume.edge');

    // Back: wait for a live tick, one the feed made after the new edge was ready, in the list.
    const live = await (await page.waitForFunction((t) => window.delivered.find((d) => d.ts / 1000 > t),
      edge.readyAt, { timeout: DEADLINE_MS, polling: 50 })).jsonValue();
    await page.waitForFunction((seq) => document.querySelector(`#tape-rows tr[data-seq="${seq}"]`), live.seq,
      { timeout: DEADLINE_MS, polling: 50 });
    console.log(`screenshot: ${await screenshot(page, 'resume-back')}`);

    // The resubscribe asked to resume from exactly that tick.
    const ops = sent.map((f) => JSON.parse(f)).filter((o) => o.op === 'subscribe');
    const resumed = ops.filter((o) => o.resume);
    assert.equal(resumed.length, 1, `one resuming subscribe: ${JSON.stringify(ops)}`);
    assert.deepEqual(resumed[0].resume[sym], { seq: before.seq, ts: before.ts });
    assert.ok(resumed[0].symbols.includes(sym) && resumed[0].resume.MSFT, 'every symbol held resumes');

    // What the client delivered: no gap, no snapshot after the reconnect, and
    // every seq exactly once, from the first one recorded through the live one.
    const delivered = await page.evaluate(() => window.delivered);
    assert.deepEqual(delivered.filter((d) => d.gap), [], 'no gap');
    const k = delivered.findIndex((d) => d.seq === before.seq);
    const end = delivered.findIndex((d) => d.seq === live.seq);
    assert.ok(k >= 0 && end > k);
    const snap = delivered.slice(k + 1).find((d) => d.snapshot);
    assert.ok(!snap, `resumed ticks are ordinary ticks, but seq ${snap?.seq} came as a snapshot after the reconnect ` +
      `(last before the kill ${before.seq}): the edge did not resume`);
    const seqs = delivered.map((d) => d.seq);
    const holes = seqs.filter((q, i) => i > 0 && q !== seqs[i - 1] + 1).map((q) => `${seqs[seqs.indexOf(q) - 1]}->${q}`);
    assert.deepEqual(holes, [], `contiguous seqs (last before the kill ${before.seq}, first live ${live.seq})`);
    const missed = delivered.slice(k + 1, end).length;
    assert.ok(missed > 0, 'ticks made while the edge was down were replayed');
    console.log(`${sym}: last before the kill ${before.seq}, ${missed} replayed, first live ${live.seq}`);

    // The page's list, newest first: the same seqs, each once, no gap mark,
    // reaching from before the kill through the live tick.
    const list = await tape(page);
    assert.ok(list.every((t) => t.sym === sym && !t.gap), 'only the selected symbol, no gap');
    const shown = list.map((t) => t.seq);
    const bad = shown.filter((q, i) => i > 0 && q !== shown[i - 1] - 1);
    assert.deepEqual(bad, [], 'the list is contiguous');
    assert.ok(shown.at(-1) <= before.seq && shown[0] >= live.seq, `the list spans ${before.seq}..${live.seq}: ${shown.at(-1)}..${shown[0]}`);
    await page.waitForFunction((s) => document.querySelector(`tr[data-symbol="${s}"]`).dataset.stale === 'false', sym,
      { timeout: DEADLINE_MS });
  }));

  test('a reconnect hint counts down live in the notice', () => shooting('hint', async () => {
    const demo = await startDemo(await freePort(), [], 'hint.demo');
    await open(`${demo.url}?symbols=AAPL`);
    await rowsGrow(['AAPL'], {});
    // The hint an edge sends when it drains (the e2e path is the reconnect
    // test's): here with a known delay, so the countdown can be watched.
    await page.evaluate(() => window.tickfanDemo.client._emit('hint', { afterMs: 4000 }));
    const shown = async () => {
      const m = (await page.textContent('#notice')).match(/edge is restarting: reconnecting in (\d+\.\d)s/);
      return m ? Number(m[1]) : null;
    };
    const first = await shown();
    assert.ok(first != null && first <= 4 && first > 2, `the notice shows the delay: ${first}`);
    // It goes down as time passes, without another hint.
    await page.waitForFunction((f) => {
      const m = document.querySelector('#notice').textContent.match(/reconnecting in (\d+\.\d)s/);
      return m && Number(m[1]) <= f - 0.5;
    }, first, { timeout: DEADLINE_MS, polling: 50 });
    await page.waitForFunction(() => /reconnecting in 0\.0s/.test(document.querySelector('#notice').textContent),
      null, { timeout: DEADLINE_MS, polling: 50 });
  }));

  test('a gap marks the row stale until the next tick', () => shooting('gap', async () => {
    // A two-tick outbox and no pacing (the edge would otherwise wait for the
    // page, which reads): a burst for one symbol overflows it, the edge drops
    // the oldest ticks and sends a gap frame.
    const demo = await startDemo(await freePort(), ['--outbox-capacity', '2', '--pacing-patience', '0s'], 'gap.demo');
    const sym = 'GAPTEST';
    await open(`${demo.url}?symbols=${sym}&sel=${sym}`);   // selected: its time and sales show the gap
    assert.equal(await page.getAttribute(`tr[data-symbol="${sym}"]`, 'aria-selected'), 'true');
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
    // The row is selected: its time and sales mark the gap in place.
    const marks = await waitFor('a gap row in the time and sales', async () => {
      const m = (await tape(page)).filter((t) => t.gap);
      return m.length && m;
    });
    assert.ok(marks.every((t) => t.sym === sym && t.gap[0] <= t.gap[1]), `gap rows: ${JSON.stringify(marks)}`);
    assert.match(await page.textContent('#tape-rows tr.tape-gap'), new RegExp(`${sym} gap · seq \\d+(–\\d+)? lost`));

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

/** The quote rows' symbols, top to bottom. */
const order = () => page.evaluate(() => [...document.querySelectorAll('#rows tr')].map((r) => r.dataset.symbol));
/** The quote table's visible header labels. */
const visibleHeaders = () => page.evaluate(() => [...document.querySelectorAll('#quotes th')]
  .filter((th) => getComputedStyle(th).display !== 'none' && th.textContent.trim() && !th.querySelector('.sr-only'))
  .map((th) => th.textContent.trim()));

describe("a trader's watchlist", () => {
  test('change against the previous close; spread, mid, bid × ask sizes, the day\'s range, volume, last trade time',
    () => shooting('day-fields', async () => {
      const demo = await startDemo(await freePort(), ['--rate', '50'], 'day-fields.demo');
      const symbols = ['AAPL', 'MSFT'];
      await open(`${demo.url}?symbols=${symbols.join(',')}`);
      await page.click('#cols-btn');
      for (const col of ['mid', 'size', 'open', 'prev', 'ticks', 'age']) await page.check(`#cols-menu input[data-col=${col}]`);
      await page.click('#cols-btn');
      await rowsGrow(symbols, {});
      // Every cell as the row's last tick implies (retried: a tick may land between a paint and this check).
      let last = null;
      const wrong = await waitFor('every cell agrees with the last tick', async () => (last = await page.evaluate(() => {
        const problems = [];
        const sign = (v) => (v > 0 ? '+' : v < 0 ? '−' : '');
        for (const [s, m] of window.tickfanDemo.model) {
          const t = m.tick, a = t?.attrs;
          if (!a?.prev_close) return [`${s}: no prev_close yet`];
          const cell = (id) => m.tr.querySelector(`td.c-${id}`);
          const close = Number(a.prev_close), pct = (t.price - close) / close * 100, abs = t.price - close;
          const want = {
            chgp: sign(pct) + Math.abs(pct).toFixed(2) + '%', chg: sign(abs) + Math.abs(abs).toFixed(2),
            spread: (t.ask - t.bid).toFixed(2), mid: ((t.bid + t.ask) / 2).toFixed(3),
            bas: `${Number(a.bid_size).toLocaleString('en-US')} × ${Number(a.ask_size).toLocaleString('en-US')}`,
            open: Number(a.open).toFixed(2), high: Number(a.high).toFixed(2), low: Number(a.low).toFixed(2),
            prev: close.toFixed(2), size: t.size.toLocaleString('en-US'),
            time: new Date(Math.floor(t.ts / 1000)).toTimeString().slice(0, 8),
          };
          for (const [id, v] of Object.entries(want)) if (cell(id).textContent !== v) problems.push(`${s} ${id}: ${cell(id).textContent} != ${v}`);
          if (!/^[\d.,]+[KMB]?$/.test(cell('vol').textContent)) problems.push(`${s} vol: ${cell('vol').textContent}`);
          if (cell('chgp').classList.contains('since-load')) problems.push(`${s}: change marked as since page load`);
          const dir = cell('chgp').classList.contains('up') ? 1 : cell('chgp').classList.contains('down') ? -1 : 0;
          if (dir !== Math.sign(pct)) problems.push(`${s}: chg % colour ${dir} for ${pct}`);
        }
        return problems.length ? problems : 'ok';
      })) === 'ok' ? 'ok' : null).catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(last)}`); });
      assert.equal(wrong, 'ok');
      const headers = await visibleHeaders();
      for (const h of ['Symbol', 'Last', 'Chg', 'Chg %', 'Bid', 'Ask', 'Bid × Ask', 'Spread', 'Mid', 'Size', 'Volume', 'Open', 'High', 'Low', 'Prev', 'Time', 'Trend']) {
        assert.ok(headers.includes(h), `column ${h}: ${headers}`);
      }

      // A feed without them (a company's quote record): change since the page
      // opened, in italics, with a title saying so; the day's cells blank.
      await killAll();
      const plain = await startDemo(await freePort(), ['--feed', 'confluent', '--rate', '50'], 'day-fields.plain.demo');
      await open(`${plain.url}?symbols=AAPL`);
      await rowsGrow(['AAPL'], {});
      const cells = await page.evaluate(() => {
        const r = document.querySelector('tr[data-symbol="AAPL"]');
        return { cls: r.querySelector('td.c-chgp').className, title: r.querySelector('td.c-chgp').title,
          high: r.querySelector('td.c-high').textContent, bas: r.querySelector('td.c-bas').textContent };
      });
      assert.match(cells.cls, /since-load/);
      assert.match(cells.title, /since the first price this page saw/);
      assert.equal(cells.high, '–');
      assert.equal(cells.bas, '–');
    }));

  test('a price change flashes briefly, never more than once per 600 ms, with an arrow; not at all with reduced motion',
    () => shooting('flash', async () => {
      const demo = await startDemo(await freePort(), ['--rate', '2000'], 'flash.demo');
      const symbols = ['AAPL', 'MSFT', 'NVDA'];
      await open(`${demo.url}?symbols=${symbols.join(',')}`);
      await rowsGrow(symbols, {});
      await page.waitForFunction(() => window.tickfanDemo.flashLog.filter((f) => f.sym === 'AAPL' && f.off != null).length >= 5,
        null, { timeout: DEADLINE_MS });
      const { log, ticks, animations } = await page.evaluate(() => ({
        log: window.tickfanDemo.flashLog, animations: document.getAnimations().length,
        ticks: Object.fromEntries([...window.tickfanDemo.model].map(([s, m]) => [s, m.ticks])),
      }));
      assert.equal(animations, 0, 'a tint, not an animation');
      for (const s of symbols) {
        const mine = log.filter((f) => f.sym === s);
        for (const [i, f] of mine.entries()) {
          assert.ok(f.planned <= 250, `${s}: a flash of ${f.planned} ms`);
          // Off before the row flashes again, however late its timer ran.
          const next = mine[i + 1];
          if (next) {
            assert.ok(next.on - f.on >= 600, `${s}: flashes ${Math.round(next.on - f.on)} ms apart`);
            assert.ok(f.off != null && f.off <= next.on, `${s}: never stacked: ${JSON.stringify([f, next])}`);
          }
        }
        assert.ok(mine.length < ticks[s], `${s}: fewer flashes (${mine.length}) than ticks (${ticks[s]})`);
      }
      // The direction is an arrow as well as a colour.
      await waitFor('arrows agree with the colours', () => page.evaluate(() => [...document.querySelectorAll('#rows tr')].every((r) => {
        const td = r.querySelector('td.c-last'), arrow = td.querySelector('.dir').textContent;
        return (arrow === '▲' && td.classList.contains('up')) || (arrow === '▼' && td.classList.contains('down'));
      })));

      await open(`${demo.url}?symbols=${symbols.join(',')}`, { reducedMotion: 'reduce' });
      await rowsGrow(symbols, {});
      await page.waitForFunction(() => [...window.tickfanDemo.model.values()].every((m) => m.ticks > 50 && m.lastDir !== 0),
        null, { timeout: DEADLINE_MS });
      assert.deepEqual(await page.evaluate(() => window.tickfanDemo.flashLog), [], 'no flash with reduced motion');
      assert.match(await page.textContent('tr[data-symbol="AAPL"] .dir'), /^[▲▼]$/, 'the arrow stays');
    }));

  test('flash on against off: browser-measured latency with 50 busy rows (figures in target/browser/flash-latency.json)',
    () => shooting('flash-latency', async () => {
      const symbols = Array.from({ length: 50 }, (_, i) => `ROW${String(i).padStart(2, '0')}`);
      // 50 rows at 20 ticks/s each.
      const demo = await startDemo(await freePort(), ['--symbols', symbols.join(','), '--zipf', '0', '--rate', '1000'], 'flash-latency.demo');
      const url = `${demo.url}?symbols=${symbols.join(',')}`;
      const runs = [];
      // A first page warms the browser and the demo up; not counted.
      await open(url);
      await page.waitForFunction(() => window.tickfanDemo.series.length >= 3, null, { timeout: DEADLINE_MS });
      // Four rounds, on and off in alternating order (TICKFAN_FLASH_ROUNDS for a longer run).
      const rounds = Number(process.env.TICKFAN_FLASH_ROUNDS) || 4;
      for (let round = 0; round < rounds; round++) {
        for (const flash of round % 2 ? [false, true] : [true, false]) {
          await open(flash ? url : `${url}&flash=0`);
          await page.waitForFunction((n) => [...window.tickfanDemo.model.values()].filter((m) => m.ticks > 5).length === n,
            symbols.length, { timeout: DEADLINE_MS });
          // Skip two seconds of warm-up, then take six one-second p50s.
          const from = await page.evaluate(() => window.tickfanDemo.series.length) + 2;
          await page.waitForFunction((n) => window.tickfanDemo.series.length >= n, from + 6, { timeout: DEADLINE_MS });
          const got = await page.evaluate((from) => ({
            p50s: window.tickfanDemo.series.slice(from, from + 6).map((s) => s.p50),
            ticks: window.tickfanDemo.series.slice(from, from + 6).reduce((n, s) => n + s.ticks, 0),
            flashes: window.tickfanDemo.counters.flashes,
          }), from);
          const sorted = got.p50s.filter((v) => v != null).sort((a, b) => a - b);
          runs.push({ round, flash, median_p50_ms: sorted[sorted.length >> 1], p50s: got.p50s, ticks: got.ticks, flashes: got.flashes });
          if (flash) assert.ok(got.flashes > 0, 'flashes happened');
          else assert.equal(got.flashes, 0, 'flash=0: none');
          assert.ok(got.ticks > 0);
        }
      }
      const med = (on) => {
        const v = runs.filter((r) => r.flash === on).map((r) => r.median_p50_ms).sort((a, b) => a - b);
        return v.reduce((a, b) => a + b, 0) / v.length;
      };
      // Paired by round: what the flash adds, and how much that moves from round to round.
      const diffs = [];
      for (let r = 0; r < rounds; r++) {
        const [on, off] = [true, false].map((f) => runs.find((x) => x.round === r && x.flash === f).median_p50_ms);
        diffs.push(on - off);
      }
      const mean = diffs.reduce((a, b) => a + b, 0) / diffs.length;
      const sd = Math.sqrt(diffs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, diffs.length - 1));
      const summary = {
        rows: symbols.length, ticks_per_s: 1000, flash_on_p50_ms: med(true), flash_off_p50_ms: med(false),
        paired_diff_ms: { mean, sd, n: diffs.length }, runs,
      };
      fs.writeFileSync(path.join(OUT, 'flash-latency.json'), JSON.stringify(summary, null, 2));
      console.log(`flash latency: on ${summary.flash_on_p50_ms.toFixed(1)} ms, off ${summary.flash_off_p50_ms.toFixed(1)} ms (p50, mean of per-run medians); on − off by round ${mean.toFixed(1)} ± ${sd.toFixed(1)} ms`);
    }));

  test('symbol entry upper-cases and checks the grammar first; an entry with a bad symbol adds nothing',
    () => shooting('entry', async () => {
      const demo = await startDemo(await freePort(), [], 'entry.demo');
      await open(`${demo.url}?symbols=AAPL`);
      await page.fill('#add-input', 'jpm');
      await page.press('#add-input', 'Escape');
      await page.click('button[type=submit]');
      await rowsGrow(['JPM'], {});
      assert.equal((await rows(page)).jpm, undefined, 'no lower-case row');
      await page.fill('#add-input', 'not valid!');
      await page.press('#add-input', 'Escape');
      await page.click('button[type=submit]');
      await page.waitForFunction(() => /invalid symbol: valid!/.test(document.querySelector('#notice').textContent), null, { timeout: DEADLINE_MS });
      assert.deepEqual(Object.keys(await rows(page)).sort(), ['AAPL', 'JPM'], 'nothing added, not even NOT');
      assert.equal(await page.inputValue('#add-input'), 'not valid!', 'the entry stays to be corrected');
      assert.equal(await page.getAttribute('#add-input', 'aria-invalid'), 'true');
      assert.match(await page.textContent('#announce'), /invalid symbol/, 'screen readers hear it');
    }));

  test('a symbol the feed does not carry is marked unknown within seconds; search offers symbols of partitions nobody reads',
    () => shooting('unknown', async () => {
      const demo = await startDemo(await freePort(), [], 'unknown.demo');
      await open(`${demo.url}?symbols=AAPL`);
      await rowsGrow(['AAPL'], {});
      // The edge's directory lists the feed's symbols, read or not.
      const held = await waitFor('the directory lists the demo feed', async () => {
        const list = await (await fetch(new URL('/symbols', demo.url))).json();
        return list.includes('JPM') && list.length >= 40 && list;
      });
      // Only AAPL is subscribed: one partition of the demo's eight is read,
      // so most of the 40+ symbols listed come from partitions nobody reads.
      const reading = await (await fetch(new URL('/partitions', demo.url))).json();
      assert.equal(reading.length, 1, `partitions read: ${JSON.stringify(reading)}`);
      await page.fill('#add-input', 'jp');
      await page.click('#suggest li[data-symbol="JPM"]', { timeout: DEADLINE_MS });
      await rowsGrow(['JPM'], {});

      // ZZZZ: subscribed, then said unknown once its partition is read.
      const asked = Date.now();
      await page.fill('#add-input', 'zzzz');
      await page.press('#add-input', 'Escape');
      await page.click('button[type=submit]');
      await page.waitForFunction(() => document.querySelector('tr[data-symbol="ZZZZ"]')?.dataset.unknown === 'true',
        null, { timeout: DEADLINE_MS, polling: 20 });
      const took = Date.now() - asked;
      console.log(`unknown symbol shown ${took} ms after it was added`);
      const row = await page.evaluate(() => {
        const r = document.querySelector('tr[data-symbol="ZZZZ"]');
        return { cls: r.className, title: r.title, tag: getComputedStyle(r.querySelector('.t-unk')).display,
          wait: getComputedStyle(r.querySelector('.t-wait')).display };
      });
      assert.match(row.cls, /unknown/);
      assert.equal(row.tag, 'inline');
      assert.equal(row.wait, 'none', 'not "waiting" forever');
      assert.match(row.title, /the feed has not carried this symbol/);
      assert.match(await page.textContent('#notice'), /not in the feed: ZZZZ/);
      assert.match(await page.textContent('#announce'), /not in the feed: ZZZZ/);
      // The rest keep flowing.
      await rowsGrow(['AAPL', 'JPM'], Object.fromEntries(Object.entries(await rows(page)).map(([s, r]) => [s, r.ticks])));
    }));

  test('sort by click and keyboard, choose columns, reorder by drag and Alt+arrows, named watchlists in storage and the URL',
    () => shooting('watchlist', async () => {
      // A slow feed: prices hold still long enough to check an order.
      const demo = await startDemo(await freePort(), ['--rate', '20'], 'watchlist.demo');
      const symbols = ['AAPL', 'MSFT', 'NVDA', 'AMZN'];
      await open(`${demo.url}?symbols=${symbols.join(',')}`);
      await rowsGrow(symbols, {});
      const prices = () => page.evaluate(() => [...document.querySelectorAll('#rows tr')].map((r) => Number(r.querySelector('.px').textContent)));
      const sortOf = (col) => page.getAttribute(`#quotes th.c-${col}`, 'aria-sort');

      await page.click('#quotes th.c-last button');
      assert.equal(await sortOf('last'), 'descending');
      await waitFor('highest last price first', async () => { const p = await prices(); return p.every((v, i) => !i || v <= p[i - 1]); });
      await page.click('#quotes th.c-last button');
      assert.equal(await sortOf('last'), 'ascending');
      await waitFor('lowest last price first', async () => { const p = await prices(); return p.every((v, i) => !i || v >= p[i - 1]); });
      // Keyboard: the headers are buttons.
      await page.focus('#quotes th.c-sym button');
      await page.keyboard.press('Enter');
      assert.equal(await sortOf('sym'), 'ascending');
      assert.equal(await sortOf('last'), 'none');
      assert.deepEqual(await order(), ['AAPL', 'AMZN', 'MSFT', 'NVDA']);
      await page.keyboard.press('Enter');
      assert.deepEqual(await order(), ['NVDA', 'MSFT', 'AMZN', 'AAPL']);
      await page.keyboard.press('Enter');
      assert.equal(await sortOf('sym'), 'none');
      assert.deepEqual(await order(), symbols, "a third time: the list's own order");

      // Drag NVDA above AAPL by its grip; Alt+Down moves it back one.
      await page.dragAndDrop('tr[data-symbol="NVDA"] td.c-grip', 'tr[data-symbol="AAPL"] td.c-sym', { targetPosition: { x: 20, y: 3 } });
      await waitFor('NVDA dragged to the top', async () => (await order()).join() === 'NVDA,AAPL,MSFT,AMZN');
      assert.match(page.url(), /symbols=NVDA,AAPL,MSFT,AMZN/);
      await page.focus('tr[data-symbol="NVDA"]');
      await page.keyboard.press('Alt+ArrowDown');
      assert.deepEqual(await order(), ['AAPL', 'NVDA', 'MSFT', 'AMZN']);
      assert.equal(await page.evaluate(() => document.activeElement.dataset.symbol), 'NVDA', 'focus stays on the moved row');
      assert.match(await page.textContent('#announce'), /NVDA moved to position 2/);

      // Column chooser: Volume off, Open on.
      await page.click('#cols-btn');
      assert.equal(await page.getAttribute('#cols-btn', 'aria-expanded'), 'true');
      await page.uncheck('#cols-menu input[data-col=vol]');
      await page.check('#cols-menu input[data-col=open]');
      await page.keyboard.press('Escape');
      assert.equal(await page.isHidden('#cols-menu'), true);
      let headers = await visibleHeaders();
      assert.ok(headers.includes('Open') && !headers.includes('Volume'), `${headers}`);

      // A second named list; the first is kept.
      await page.click('#list-new');
      await page.fill('#list-name', 'Tech');
      await page.press('#list-name', 'Enter');
      await waitFor('an empty list named Tech', async () => (await order()).length === 0 && /list=Tech/.test(page.url()));
      await page.fill('#add-input', 'meta, tsla');
      await page.press('#add-input', 'Escape');
      await page.press('#add-input', 'Enter');
      await rowsGrow(['META', 'TSLA'], {});
      await page.selectOption('#lists', 'Watchlist');
      await rowsGrow(['AAPL', 'NVDA', 'MSFT', 'AMZN'], {});
      assert.deepEqual(await order(), ['AAPL', 'NVDA', 'MSFT', 'AMZN'], 'the first list, in its order');
      assert.match(page.url(), /list=Watchlist(&|$)/);
      assert.match(page.url(), /symbols=AAPL,NVDA,MSFT,AMZN(&|$)/);
      assert.deepEqual((await page.$$eval('#lists option', (os) => os.map((o) => o.value))).sort(), ['Tech', 'Watchlist']);

      // Kept in this browser: a bare ?list=Tech brings the list back, with the chosen columns.
      await page.goto(`${demo.url}?list=Tech`);
      await page.waitForFunction(() => document.querySelector('[data-testid=status]')?.dataset.state === 'open', null, { timeout: DEADLINE_MS });
      await rowsGrow(['META', 'TSLA'], {});
      assert.deepEqual(await order(), ['META', 'TSLA']);
      headers = await visibleHeaders();
      assert.ok(headers.includes('Open') && !headers.includes('Volume'), `columns kept: ${headers}`);
      // Deleting it leaves the other.
      await page.click('#list-del');
      await rowsGrow(['AAPL', 'NVDA', 'MSFT', 'AMZN'], {});
      assert.deepEqual(await page.$$eval('#lists option', (os) => os.map((o) => o.value)), ['Watchlist']);
      assert.equal(await page.isDisabled('#list-del'), true, 'the last list cannot be deleted');
    }));

  test('themes follow the system and a toggle, dense and comfortable rows, a phone layout, labelled controls; screenshots',
    () => shooting('themes', async () => {
      const demo = await startDemo(await freePort(), [], 'themes.demo');
      const symbols = ['AAPL', 'MSFT', 'NVDA', 'AMZN', 'GOOGL', 'META', 'TSLA', 'AVGO'];
      const url = `${demo.url}?symbols=${symbols.join(',')}&sel=AAPL`;
      const shots = [];
      for (const scheme of ['dark', 'light']) {
        for (const width of [1400, 390]) {
          await open(url, { viewport: { width, height: width > 600 ? 800 : 844 }, colorScheme: scheme });
          await rowsGrow(symbols, {});
          await page.waitForFunction(() => document.querySelectorAll('#tape-rows tr').length >= 10, null, { timeout: DEADLINE_MS });
          assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), scheme, `follows prefers-color-scheme: ${scheme}`);
          const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
          assert.equal(bg, scheme === 'dark' ? 'rgb(11, 14, 20)' : 'rgb(244, 246, 249)');
          if (width === 390) {
            assert.deepEqual(await visibleHeaders(), ['Symbol', 'Last', 'Chg %', 'Trend'], 'a phone: symbol, last, change, spark');
            assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), 'no sideways scrolling');
            // The spark is drawn once its symbol has ticked (at most every
            // 250 ms): wait for ink, with a deadline, then say what shows.
            const sparkOf = () => {
              const c = document.querySelector('tr[data-symbol="AAPL"] canvas');
              return { w: c.getBoundingClientRect().width, ink: c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v) => v) };
            };
            await page.waitForFunction(() => {
              const c = document.querySelector('tr[data-symbol="AAPL"] canvas');
              return c && c.getBoundingClientRect().width >= 50
                && c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v) => v);
            }, null, { timeout: DEADLINE_MS, polling: 100 }).catch(() => {});
            const spark = await page.evaluate(sparkOf);
            assert.ok(spark.w >= 50 && spark.ink, `the spark shows: ${JSON.stringify(spark)}`);
          }
          shots.push(await screenshot(page, `page-${width}-${scheme}`));
        }
      }
      console.log(`screenshots: ${shots.join(' ')}`);

      // The toggle wins over the system, and is kept.
      await open(url, { colorScheme: 'light' });
      await page.click('#theme');
      assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark');
      assert.equal(await page.getAttribute('#theme', 'aria-pressed'), 'false');
      await page.reload();
      assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark', 'kept across a reload');

      // Dense rows by default; comfortable on request, kept.
      await rowsGrow(symbols, {});
      const height = () => page.evaluate(() => document.querySelector('tr[data-symbol="AAPL"]').getBoundingClientRect().height);
      const dense = await height();
      assert.ok(dense <= 24, `dense rows: ${dense}px`);
      await page.click('#density');
      const comfy = await height();
      assert.ok(comfy >= 28 && comfy <= 34, `comfortable rows: ${comfy}px`);
      await page.reload();
      await rowsGrow(symbols, {});
      assert.equal(await height(), comfy, 'kept across a reload');

      // Screen readers: "AAPL on XNYS", not "AAPLXNYS"; every control has a name.
      await page.waitForFunction(() => document.querySelector('tr[data-symbol="AAPL"] .venue .v').textContent !== '', null, { timeout: DEADLINE_MS });
      assert.match(await page.textContent('tr[data-symbol="AAPL"] td.c-sym'), /^AAPL on [A-Z]{4}/);
      const unnamed = await page.evaluate(() => [...document.querySelectorAll('button, input, select')].filter((el) => {
        const name = el.getAttribute('aria-label') || el.labels?.[0]?.textContent || el.textContent || el.title;
        return !String(name).trim();
      }).map((el) => el.outerHTML.slice(0, 80)));
      assert.deepEqual(unnamed, []);
      assert.equal(await page.getAttribute('tr[data-symbol="AAPL"] button.rm', 'aria-label'), 'Remove AAPL');
    }));
});
