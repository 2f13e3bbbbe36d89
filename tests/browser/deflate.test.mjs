// permessage-deflate (RFC 7692) in headless chromium: the ticker page and
// /client.js against `tickfan demo --permessage-deflate` (issue 18, point 3:
// browsers negotiate it themselves, the client needs nothing). A second
// client of the page connects through a TCP tap that reads the WebSocket
// frames going by, so the test sees what JavaScript cannot: that the edge
// answered the offer, that its ticks frames went compressed (RSV1) and the
// browser's requests too, and that what chromium decoded is what was sent.
// Every wait polls a condition with a deadline.
//
// (scripts/browser-test.sh runs it with the others.)

import assert from 'node:assert/strict';
import net from 'node:net';
import zlib from 'node:zlib';
import { after, afterEach, before, describe, test } from 'node:test';
import { DEADLINE_MS, freePort, killAll, launchBrowser, rows, screenshot, startDemo, waitFor } from './harness.mjs';

let browser;
let page;
let pageErrors = [];
const taps = new Set();

before(async () => { browser = await launchBrowser(); });
after(async () => {
  await browser?.close();
  await killAll();
});
afterEach(async () => {
  await page?.context().close();
  page = null;
  for (const t of taps) t.close();
  taps.clear();
  await killAll();
});

/**
 * A TCP proxy from a free port to 127.0.0.1:`port` for WebSocket connections
 * only: it forwards every byte unchanged and decodes the handshake and the
 * frames of each direction. `requests` and `responses` are the handshake
 * heads; `sent` (browser to edge) and `received` (edge to browser) the data
 * messages as {opcode, rsv1, wire: payload bytes on the wire, text}, `text`
 * inflated when RSV1 is set (or {error} when that fails).
 */
async function wsTap(port) {
  const tap = { requests: [], responses: [], sent: [], received: [], sockets: new Set() };
  const server = net.createServer((client) => {
    const edge = net.connect(port, '127.0.0.1');
    tap.sockets.add(client).add(edge);
    client.on('data', frames(tap.requests, tap.sent, () => true));
    edge.on('data', frames(tap.responses, tap.received, (head) => /^HTTP\/1\.1 101 /.test(head)));
    client.pipe(edge);
    edge.pipe(client);
    for (const [a, b] of [[client, edge], [edge, client]]) {
      a.on('error', () => b.destroy());
      a.on('close', () => { b.destroy(); tap.sockets.delete(a); });
    }
  });
  // Port 0: the kernel picks one.
  tap.port = await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
  tap.close = () => { server.close(); for (const s of tap.sockets) s.destroy(); };
  taps.add(tap);
  return tap;
}

/** A 'data' listener decoding one direction: the HTTP head into `heads`, then (if `framed(head)`) frames into `messages`. */
function frames(heads, messages, framed) {
  let buf = Buffer.alloc(0), head = null, message = null;
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (head == null) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      head = buf.subarray(0, end).toString('latin1');
      heads.push(head);
      buf = buf.subarray(end + 4);
    }
    if (!framed(head)) { buf = Buffer.alloc(0); return; }
    for (;;) {
      if (buf.length < 2) return;
      const fin = (buf[0] & 0x80) !== 0, rsv1 = (buf[0] & 0x40) !== 0, opcode = buf[0] & 0x0f;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f, at = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); at = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); at = 10; }
      const key = masked ? buf.subarray(at, at + 4) : null;
      if (masked) at += 4;
      if (buf.length < at + len) return;
      const payload = Buffer.from(buf.subarray(at, at + len));
      buf = buf.subarray(at + len);
      if (key) for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
      if (opcode >= 8) continue;                                 // control frames
      if (opcode !== 0) message = { opcode, rsv1, parts: [] };   // a new message; continuations add to it
      if (!message) continue;
      message.parts.push(payload);
      if (!fin) continue;
      const data = Buffer.concat(message.parts);
      const m = { opcode: message.opcode, rsv1: message.rsv1, wire: data.length };
      try {
        // RFC 7692 7.2.2: append the 00 00 ff ff the sender removed, inflate.
        const plain = m.rsv1
          ? zlib.inflateRawSync(Buffer.concat([data, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH })
          : data;
        m.text = plain.toString('utf8');
      } catch (err) {
        m.error = String(err);
      }
      messages.push(m);
      message = null;
    }
  };
}

/** The edge's /metrics as {"name{labels}": value}. */
async function metrics(url) {
  const text = await (await fetch(new URL('/metrics', url))).text();
  return Object.fromEntries(text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => {
    const i = l.lastIndexOf(' ');
    return [l.slice(0, i), Number(l.slice(i + 1))];
  }));
}

/**
 * Opens the ticker page of `url` subscribed to `symbols`, waits until its rows
 * tick, then starts a second /client.js client in the page, through `tap`,
 * that records every message its (chromium's own) WebSocket delivers and
 * every tick and snapshot it applies, in `window.probe`.
 */
async function openWithProbe(url, tap, symbols, probeSymbols) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 720 } });
  page = await context.newPage();
  pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${url}?symbols=${symbols.join(',')}`);
  await page.waitForFunction(() => document.querySelector('[data-testid=status]')?.dataset.state === 'open',
    null, { timeout: DEADLINE_MS });
  await page.waitForFunction((symbols) => symbols.every((s) => Number(document.querySelector(`tr[data-symbol="${s}"]`)?.dataset.ticks) > 0),
    symbols, { timeout: DEADLINE_MS, polling: 50 });
  await page.evaluate(async ([port, symbols]) => {
    const { TickfanClient } = await import('/client.js');
    const probe = window.probe = { messages: [], applied: [], subscribed: [], unsubscribed: [], errors: [], statuses: [] };
    // The browser's WebSocket, only listened to (the client's WebSocket option).
    class Recording extends WebSocket {
      constructor(...args) {
        super(...args);
        this.addEventListener('message', (ev) => probe.messages.push(ev.data));
      }
    }
    const c = probe.client = new TickfanClient(`ws://127.0.0.1:${port}/ws`, { symbols, WebSocket: Recording });
    c.on('snapshot', ({ symbol, tick }) => probe.applied.push({ symbol, seq: tick.seq, snapshot: true }));
    c.on('tick', ({ symbol, tick }) => probe.applied.push({ symbol, seq: tick.seq }));
    c.on('subscribed', ({ symbols }) => probe.subscribed.push(symbols));
    c.on('unsubscribed', ({ symbols }) => probe.unsubscribed.push(symbols));
    c.on('error', (e) => probe.errors.push(e));
    c.on('status', ({ status }) => probe.statuses.push(status));
  }, [tap.port, probeSymbols]);
  await page.waitForFunction(() => window.probe.client.status === 'open', null, { timeout: DEADLINE_MS });
}

/** Waits until the probe client has applied more than `n` ticks of each of `symbols` (snapshots not counted). */
function probeTicks(symbols, n) {
  return page.waitForFunction(([symbols, n]) => symbols.every((s) => window.probe.applied.filter((a) => a.symbol === s && !a.snapshot).length > n),
    [symbols, n], { timeout: DEADLINE_MS, polling: 50 });
}

/** The probe client's applied ticks: only subscribed symbols, each symbol's seqs increasing. */
function checkApplied(applied, symbols) {
  assert.ok(applied.every((a) => symbols.includes(a.symbol) && Number.isInteger(a.seq)), `symbols ${symbols}: ${JSON.stringify(applied.slice(0, 5))}`);
  for (const s of symbols) {
    const seqs = applied.filter((a) => a.symbol === s).map((a) => a.seq);
    assert.ok(seqs.length > 1 && seqs.every((q, i) => i === 0 || q > seqs[i - 1]), `${s}: increasing seqs: ${seqs}`);
  }
}

/** Runs `body`, then saves a screenshot named `name` whatever happened; no uncaught errors in the page. */
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

const RESPONSE = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';
const header = (head, name) => head.split('\r\n').find((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`))?.replace(/^[^:]*:\s*/, '');

describe('permessage-deflate', () => {
  test('the page and /client.js negotiate it in chromium: compressed ticks decoded, compressed requests understood',
    () => shooting('deflate', async () => {
      const demo = await startDemo(await freePort(), ['--permessage-deflate', '--deflate-min-bytes', '64'], 'deflate.demo');
      const tap = await wsTap(new URL(demo.url).port);
      const symbols = ['AAPL', 'MSFT'], probe = ['AAPL', 'MSFT', 'NVDA'];
      await openWithProbe(demo.url, tap, symbols, probe);

      // (a) Both clients' sockets, as the browser reports them.
      const extensions = await page.evaluate(() => ({
        page: window.tickfanDemo.client._ws.extensions, probe: window.probe.client._ws.extensions,
      }));
      assert.equal(extensions.page, RESPONSE, 'the page\'s socket');
      assert.equal(extensions.probe, RESPONSE, 'the probe client\'s socket');
      // The handshake on the wire: chromium offered it on its own, the edge answered.
      assert.equal(tap.requests.length, 1);
      assert.match(header(tap.requests[0], 'sec-websocket-extensions'), /^permessage-deflate\b/, tap.requests[0]);
      assert.equal(header(tap.responses[0], 'sec-websocket-extensions'), RESPONSE, tap.responses[0]);

      // (b) Ticks arrive, parse, and per symbol their seqs increase.
      await probeTicks(probe, 10);
      // Ask for one more symbol and let one go: more compressed requests on the same connection.
      await page.evaluate(() => { window.probe.client.subscribe(['AMZN']); window.probe.client.unsubscribe(['NVDA']); });
      await page.waitForFunction(() => window.probe.subscribed.some((s) => s.includes('AMZN')) && window.probe.unsubscribed.some((s) => s.includes('NVDA')),
        null, { timeout: DEADLINE_MS });
      const since = await page.evaluate(() => window.probe.applied.length);
      await page.waitForFunction((n) => window.probe.applied.slice(n).filter((a) => a.symbol === 'AMZN').length > 5, since,
        { timeout: DEADLINE_MS, polling: 50 });
      const seen = await page.evaluate(() => ({
        applied: window.probe.applied, messages: window.probe.messages, subscribed: window.probe.subscribed,
        errors: window.probe.errors, statuses: window.probe.statuses,
      }));
      checkApplied(seen.applied, [...probe, 'AMZN']);
      assert.deepEqual(seen.errors, []);
      assert.deepEqual(seen.statuses, ['connecting', 'open'], 'one connection, never lost');
      const ticks = seen.messages.map((m) => JSON.parse(m)).filter((m) => m.type === 'ticks').flatMap((m) => m.ticks);
      assert.ok(ticks.every((t) => [...probe, 'AMZN'].includes(t.symbol) && Number.isInteger(t.seq) && typeof t.price === 'number'),
        `every tick parsed, of a subscribed symbol: ${JSON.stringify(ticks.slice(0, 3))}`);

      // (c) The browser compressed every request, and the edge understood
      // each: the subscribe (its `subscribed` reply), and the later two.
      const sent = tap.sent.filter((m) => m.opcode === 1);
      assert.deepEqual(sent.map((m) => m.error).filter(Boolean), [], 'every request inflates');
      assert.deepEqual(sent.map((m) => [m.rsv1, JSON.parse(m.text).op]), [[true, 'subscribe'], [true, 'subscribe'], [true, 'unsubscribe']],
        'chromium compressed each message');
      assert.deepEqual(JSON.parse(sent[0].text).symbols, probe);
      assert.deepEqual(seen.subscribed[0], probe, 'the compressed subscribe was understood');

      // (d) Ticks frames went compressed, and chromium decoded them: the
      // messages its socket delivered are the ones the tap inflated off the
      // wire, in order (the tap is ahead of the page by whatever is in flight).
      const received = tap.received.filter((m) => m.opcode === 1);
      assert.deepEqual(received.map((m) => m.error).filter(Boolean), [], 'every compressed frame inflates');
      assert.ok(seen.messages.length > 0 && received.length >= seen.messages.length);
      assert.deepEqual(received.slice(0, seen.messages.length).map((m) => m.text), seen.messages, 'what chromium decoded is what was sent');
      const zticks = received.slice(0, seen.messages.length).filter((m) => m.rsv1 && JSON.parse(m.text).type === 'ticks');
      assert.ok(zticks.length >= 5, `compressed ticks frames delivered: ${zticks.length}`);
      // --deflate-min-bytes 64: shorter messages (status, subscribed, ...) go
      // plain, the rest (here every ticks frame) compressed.
      const plain = received.filter((m) => !m.rsv1).map((m) => `${JSON.parse(m.text).type}:${Buffer.byteLength(m.text)}`);
      assert.ok(received.every((m) => m.rsv1 === (Buffer.byteLength(m.text) >= 64)), `compressed from 64 bytes on; plain: ${plain.join(' ')}`);
      const wire = zticks.reduce((n, m) => n + m.wire, 0), text = zticks.reduce((n, m) => n + Buffer.byteLength(m.text), 0);
      console.log(`probe client: ${zticks.length} compressed ticks frames, ${text} bytes of JSON in ${wire} on the wire; ` +
        `uncompressed (type:bytes): ${plain.join(' ') || 'none'}`);

      // The edge counts them, and ended no session over its deflate data.
      const m = await metrics(demo.url);
      assert.ok(m.tickfan_deflate_frames_total >= zticks.length, `tickfan_deflate_frames_total ${m.tickfan_deflate_frames_total}`);
      assert.ok(m.tickfan_deflate_sent_bytes_total < m.tickfan_deflate_text_bytes_total,
        `sent ${m.tickfan_deflate_sent_bytes_total} < text ${m.tickfan_deflate_text_bytes_total}`);
      for (const reason of ['invalid_deflate', 'protocol_error', 'message_too_big', 'invalid_utf8']) {
        assert.equal(m[`tickfan_sessions_ended_total{reason="${reason}"}`], 0, `sessions ended for ${reason}`);
      }

      // The page's own rows kept ticking over its compressed connection.
      const counts = await rows(page);
      await page.waitForFunction(([symbols, counts]) => symbols.every((s) => {
        const r = document.querySelector(`tr[data-symbol="${s}"]`);
        return Number(r.dataset.ticks) > counts[s].ticks && r.dataset.stale === 'false';
      }), [symbols, counts], { timeout: DEADLINE_MS, polling: 50 });
    }));

  test('without --permessage-deflate chromium still offers it, the edge declines, extensions is empty, ticks arrive',
    () => shooting('deflate-off', async () => {
      const demo = await startDemo(await freePort(), ['--deflate-min-bytes', '64'], 'deflate-off.demo');
      const tap = await wsTap(new URL(demo.url).port);
      const symbols = ['AAPL', 'MSFT'];
      await openWithProbe(demo.url, tap, symbols, symbols);
      const extensions = await page.evaluate(() => [window.tickfanDemo.client._ws.extensions, window.probe.client._ws.extensions]);
      assert.deepEqual(extensions, ['', '']);
      assert.equal(tap.requests.length, 1);
      assert.match(header(tap.requests[0], 'sec-websocket-extensions'), /^permessage-deflate\b/, 'offered');
      assert.equal(header(tap.responses[0], 'sec-websocket-extensions'), undefined, 'not answered');

      await probeTicks(symbols, 10);
      const seen = await page.evaluate(() => ({ applied: window.probe.applied, subscribed: window.probe.subscribed }));
      checkApplied(seen.applied, symbols);
      assert.deepEqual(seen.subscribed[0], symbols);
      await waitFor('the tap saw ticks frames', () => tap.received.some((m) => m.text && JSON.parse(m.text).type === 'ticks'));
      assert.ok([...tap.sent, ...tap.received].every((m) => !m.rsv1), 'nothing compressed either way');
      const m = await metrics(demo.url);
      assert.equal(m.tickfan_deflate_frames_total, 0);
    }));
});
