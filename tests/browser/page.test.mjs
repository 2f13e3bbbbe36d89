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
async function open(url, { connected = true, setup } = {}) {
  await page?.context().close();
  const context = await browser.newContext({ viewport: { width: 1440, height: 720 } });
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
    await page.click('tr[data-symbol="AAPL"] td.px');
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
    await page.click(`tr[data-symbol="${sym}"] td.px`);
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
