// static/client.js in node against a scripted WebSocket: connection and
// refusal handling, reconnect delays, snapshot-then-live merging, staleness.
// No browser and no edge needed.

import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { REPO } from './harness.mjs';

const { TickfanClient, backoffDelay } = await import(pathToFileURL(path.join(REPO, 'static', 'client.js')).href);

/** A WebSocket whose peer the test plays. */
class FakeWS {
  static all = [];
  constructor(url, protocols) {
    this.url = new URL(url); this.protocols = protocols; this.readyState = 0; this.sent = []; FakeWS.all.push(this);
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close() { this.readyState = 3; }
  // the edge's side
  open() { this.readyState = 1; this.onopen(); }
  recv(frame) { this.onmessage({ data: JSON.stringify(frame) }); }
  end(code, reason = '') { this.readyState = 3; this.onclose({ code, reason }); }
}

/** A client on FakeWS recording every event, plus the last socket it opened. */
function setup(options = {}) {
  FakeWS.all = [];
  const events = [];
  const c = new TickfanClient('ws://edge.test/ws', { WebSocket: FakeWS, autoConnect: false, ...options });
  for (const t of ['status', 'snapshot', 'tick', 'gap', 'stale', 'fresh', 'error', 'hint'])
    c.on(t, (d) => events.push({ t, ...d }));
  const ws = () => FakeWS.all[FakeWS.all.length - 1];
  const last = (t) => events.filter((e) => e.t === t).pop();
  return { c, events, ws, last };
}

const tick = (symbol, seq, extra = {}) => ({ symbol, seq, price: 100 + seq, size: 1, ts: Date.now() * 1000, ...extra });

test('backoff is full jitter under min(cap, base * 2^attempt)', () => {
  assert.equal(backoffDelay(0, 250, 10_000, () => 0.999999) < 250, true);
  assert.equal(Math.round(backoffDelay(3, 250, 10_000, () => 1)), 2000);
  assert.equal(backoffDelay(20, 250, 10_000, () => 1), 10_000);
  assert.equal(backoffDelay(5, 250, 10_000, () => 0), 0);
});

test('offers the token as a subprotocol (else ?token=), asks ?reject=close, opens at the first frame', () => {
  const opaque = setup({ token: 'not a jwt' });
  opaque.c.connect();
  assert.equal(opaque.ws().url.searchParams.get('token'), 'not a jwt', 'not an HTTP token: in the query');
  assert.equal(opaque.ws().protocols, undefined);
  opaque.c.close();
  const { c, ws, events } = setup({ token: 'a.b.c' });
  const symbols = Array.from({ length: 1200 }, (_, i) => `SYM${String(i).padStart(5, '0')}`);
  c.subscribe(symbols);
  c.connect();
  assert.deepEqual(ws().protocols, ['tickfan', 'tickfan.bearer.a.b.c']);
  assert.equal(ws().url.searchParams.get('token'), null, 'a JWT stays out of the URL');
  assert.equal(ws().url.searchParams.get('reject'), 'close');
  ws().open();
  assert.equal(c.status, 'connecting', 'not open before a frame: an in-band refusal may follow');
  const ops = ws().sent;
  assert.deepEqual(ops.flatMap((o) => o.symbols), symbols);
  assert.ok(ops.every((o) => o.op === 'subscribe' && o.symbols.length <= 500 && JSON.stringify(o).length < 4096));
  ws().recv({ type: 'subscribed', symbols: symbols.slice(0, 10) });
  assert.equal(c.status, 'open');
  assert.deepEqual(events.filter((e) => e.t === 'status').map((e) => e.status), ['connecting', 'open']);
  c.close();
});

test('a refusal in band (1013) waits retry_after_ms plus jitter and never counts as open', () => {
  const { c, ws, events, last } = setup({ symbols: ['AAPL'] });
  c.connect();
  ws().open();
  ws().end(1013, JSON.stringify({ error: 'too many new connections; retry later', retry_after_ms: 2000 }));
  const r = last('status');
  assert.equal(r.status, 'reconnecting');
  assert.equal(r.code, 1013);
  assert.equal(r.reason, 'too many new connections; retry later');
  assert.ok(r.delayMs >= 2000 && r.delayMs <= 2250, `delay ${r.delayMs}`);
  assert.ok(!events.some((e) => e.t === 'status' && e.status === 'open'));
  // 4401: an error event, then the backoff
  c.connect();
  ws().open();
  ws().end(4401, JSON.stringify({ error: 'token expired' }));
  assert.deepEqual([last('error').code, last('error').message], ['unauthorized', 'token expired']);
  assert.ok(last('status').delayMs <= 500, 'second attempt: jitter under 2 * base');
  c.close();
});

test('a failed handshake waits at least 1 s; a lost connection only the jitter; a hint its time', () => {
  const { c, ws, last } = setup({ symbols: ['AAPL'] });
  c.connect();
  ws().end(1006);   // never upgraded: down, or an HTTP 429/503 we cannot read
  assert.ok(last('status').delayMs >= 1000 && last('status').delayMs <= 1250, `delay ${last('status').delayMs}`);
  c.connect();
  ws().open();
  ws().recv({ type: 'subscribed', symbols: ['AAPL'] });
  ws().end(1006);
  assert.ok(last('status').delayMs <= 1000, 'lost after open: the backoff only (third attempt: under 4 * base)');
  c.connect();
  ws().open();
  ws().recv({ type: 'subscribed', symbols: ['AAPL'] });
  ws().recv({ type: 'reconnect', after_ms: 3000 });
  assert.equal(last('hint').afterMs, 3000);
  ws().end(1012, 'edge restarting; reconnect');
  const d = last('status').delayMs;
  assert.ok(d >= 2900 && d <= 3250, `hinted delay ${d}`);
  c.close();
  assert.equal(c.status, 'closed');
});

test('maxHz and mode go with every subscribe, also on resubscribe; conflated ticks are not gaps', () => {
  const { c, ws, events } = setup({ symbols: ['AAPL'], maxHz: 4, mode: 'latest' });
  c.connect();
  ws().open();
  assert.deepEqual(ws().sent, [{ op: 'subscribe', symbols: ['AAPL'], max_hz: 4, mode: 'latest' }]);
  c.subscribe(['MSFT']);
  c.unsubscribe(['MSFT']);
  assert.deepEqual(ws().sent.slice(1), [
    { op: 'subscribe', symbols: ['MSFT'], max_hz: 4, mode: 'latest' },
    { op: 'unsubscribe', symbols: ['MSFT'] },
  ]);
  ws().recv({ type: 'subscribed', symbols: ['AAPL'] });
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 1, { snapshot: true }), tick('AAPL', 9, { conflated: 7 })] });
  assert.equal(c.quote('AAPL').tick.seq, 9);
  assert.equal(c.quote('AAPL').tick.conflated, 7);
  assert.equal(c.quote('AAPL').stale, false, 'a conflated jump is not a gap');
  assert.equal(events.filter((e) => e.t === 'gap').length, 0);
  // Without the options, nothing extra is sent.
  const plain = setup({ symbols: ['AAPL'] });
  plain.c.connect();
  plain.ws().open();
  assert.deepEqual(plain.ws().sent, [{ op: 'subscribe', symbols: ['AAPL'] }]);
  plain.c.close();
  c.close();
});

test('an op ignored as rate_limited is made good: the whole set resubscribed, unconfirmed unsubscribes resent', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { c, ws } = setup({ symbols: ['AAPL', 'MSFT', 'NVDA'] });
  c.connect();
  ws().open();
  ws().recv({ type: 'subscribed', symbols: ['AAPL', 'MSFT', 'NVDA'] });
  c.unsubscribe(['MSFT']);
  c.unsubscribe(['NVDA']);
  ws().recv({ type: 'unsubscribed', symbols: ['MSFT'] });   // NVDA's op was the one ignored
  ws().recv({ type: 'error', code: 'rate_limited', message: 'more than 20 control messages per second; message ignored' });
  ws().sent = [];
  t.mock.timers.tick(999);
  assert.deepEqual(ws().sent, [], 'not before a second');
  t.mock.timers.tick(300);   // 1 s plus at most the 250 ms base of jitter
  assert.deepEqual(ws().sent, [
    { op: 'subscribe', symbols: ['AAPL'] },
    { op: 'unsubscribe', symbols: ['NVDA'] },
  ]);
  c.close();
});

test('symbols refused as unknown_symbol or edge_full are kept and asked for again after the hint', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { c, ws } = setup({ symbols: ['AAPL', 'ZZ1', 'ZZ2', 'ZZ3'] });
  c.connect();
  ws().open();
  ws().recv({ type: 'subscribed', symbols: ['AAPL', 'ZZ1'] });
  ws().recv({ type: 'error', code: 'unknown_symbol', message: 'later', symbols: ['ZZ2', 'ZZ3'], retry_after_ms: 2000 });
  ws().recv({ type: 'error', code: 'edge_full', message: 'later', symbols: ['ZZ3'], retry_after_ms: 1000 });
  assert.deepEqual(c.symbols, ['AAPL', 'ZZ1', 'ZZ2', 'ZZ3'], 'kept');
  c.unsubscribe(['ZZ3']);
  ws().sent = [];
  t.mock.timers.tick(1999);
  assert.deepEqual(ws().sent, [], 'not before retry_after_ms');
  t.mock.timers.tick(300); // plus at most the 250 ms base of jitter
  assert.deepEqual(ws().sent, [{ op: 'subscribe', symbols: ['ZZ2'] }], 'only what is still wanted, once');
  c.close();
});

test('snapshot then live per symbol; gaps, feed and lost connections make a symbol stale', () => {
  const { c, ws, events, last } = setup();
  c.subscribe(['AAPL', 'MSFT']);
  c.connect();
  ws().open();
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 10, { snapshot: true }), tick('AAPL', 9), tick('AAPL', 11), tick('XYZ', 1)] });
  assert.equal(c.quote('AAPL').tick.seq, 11, 'older than the snapshot: ignored');
  assert.deepEqual(events.filter((e) => e.t === 'snapshot' || e.t === 'tick').map((e) => `${e.t}:${e.tick.seq}`), ['snapshot:10', 'tick:11']);

  ws().recv({ type: 'gap', symbol: 'AAPL', from_seq: 12, to_seq: 20 });
  assert.deepEqual(c.quote('AAPL').reasons, ['gap']);
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 21)] });
  assert.equal(c.quote('AAPL').stale, false, 'the next tick is a full quote');
  assert.equal(last('fresh').symbol, 'AAPL');

  ws().recv({ type: 'status', feed: 'stale' });
  assert.deepEqual(c.quote('MSFT').reasons, ['feed']);
  ws().recv({ type: 'status', feed: 'live' });
  assert.equal(c.quote('MSFT').stale, false);

  // Lost: symbols with data go stale until their first tick on the next connection.
  ws().end(1006);
  assert.deepEqual(c.quote('AAPL').reasons, ['disconnected']);
  assert.equal(c.quote('MSFT').stale, false, 'no data, nothing to be stale');
  c.connect();
  ws().open();
  assert.deepEqual(ws().sent, [{ op: 'subscribe', symbols: ['AAPL', 'MSFT'] }], 'resubscribed');
  // The feed restarted (lower seq), and the snapshot was lost to a gap: the first tick is the baseline.
  ws().recv({ type: 'gap', symbol: 'AAPL', from_seq: 3, to_seq: 4 });
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 5), tick('AAPL', 4), tick('AAPL', 6)] });
  assert.equal(c.quote('AAPL').tick.seq, 6);
  assert.equal(c.quote('AAPL').stale, false);

  c.unsubscribe(['AAPL']);
  assert.deepEqual(ws().sent.pop(), { op: 'unsubscribe', symbols: ['AAPL'] });
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 7)] });
  assert.equal(c.quote('AAPL'), null);
  ws().recv({ type: 'error', code: 'not_entitled', message: 'no', symbols: ['MSFT'] });
  assert.deepEqual(c.symbols, [], 'rejected symbols are not resubscribed');
  c.close();
});
