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

test('unknown_symbol without retry_after_ms: kept subscribed, never asked again, an unknown event; a later tick is a snapshot', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { c, ws, events } = setup({ symbols: ['AAPL', 'ZZZZ', 'QQQQ'] });
  const unknown = [];
  c.on('unknown', (d) => unknown.push(d));
  c.connect();
  ws().open();
  ws().recv({ type: 'subscribed', symbols: ['AAPL', 'ZZZZ', 'QQQQ'] });
  ws().recv({ type: 'error', code: 'unknown_symbol', message: 'no tick of these symbols in the topic', symbols: ['ZZZZ', 'QQQQ'] });
  assert.deepEqual(unknown, [{ symbols: ['ZZZZ', 'QQQQ'] }]);
  assert.deepEqual(c.symbols, ['AAPL', 'ZZZZ', 'QQQQ'], 'kept');
  assert.equal(events.filter((e) => e.t === 'error').length, 0, 'a notice, not an error');
  ws().sent = [];
  t.mock.timers.tick(60_000);
  assert.deepEqual(ws().sent, [], 'nothing asked again');
  // The symbol starts trading: its first tick is applied as a snapshot.
  ws().recv({ type: 'ticks', ticks: [tick('ZZZZ', 1, { snapshot: true })] });
  assert.equal(events.filter((e) => e.t === 'snapshot' && e.symbol === 'ZZZZ').length, 1);
  // With retry_after_ms it is still the refusal: retried after the hint.
  ws().recv({ type: 'error', code: 'unknown_symbol', message: 'later', symbols: ['QQQQ'], retry_after_ms: 1000 });
  assert.equal(unknown.length, 1);
  t.mock.timers.tick(1300);
  assert.deepEqual(ws().sent, [{ op: 'subscribe', symbols: ['QQQQ'] }]);
  c.close();
});

test('snapshot then live per symbol; gaps, feed and lost connections make a symbol stale (resume off)', () => {
  const { c, ws, events, last } = setup({ resume: false });
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
  assert.deepEqual(ws().sent, [{ op: 'subscribe', symbols: ['AAPL', 'MSFT'] }], 'resubscribed, without resume');
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

test('after a reconnect each subscribe resumes the symbols it holds a tick of: last seq and ts, exactly', () => {
  const { c, ws, events } = setup({ symbols: ['AAPL', 'MSFT', 'NVDA', 'TSLA'] });
  c.connect();
  ws().open();
  assert.deepEqual(ws().sent, [{ op: 'subscribe', symbols: ['AAPL', 'MSFT', 'NVDA', 'TSLA'] }], 'nothing to resume yet');
  const ts = 1764270000123456;   // µs: exact in a double, sent back as received
  ws().recv({ type: 'ticks', ticks: [
    tick('AAPL', 10, { snapshot: true, ts }), tick('AAPL', 11, { ts: ts + 7 }),
    tick('MSFT', 5, { snapshot: true, ts: ts + 1 }), tick('TSLA', 3, { snapshot: true, ts: ts + 2 }),
  ] });
  ws().recv({ type: 'gap', symbol: 'TSLA', from_seq: 4, to_seq: 6 });   // still lost when the connection goes
  ws().end(1006);
  assert.equal(c.quote('AAPL').stale, true);

  c.connect();
  ws().open();
  assert.deepEqual(ws().sent, [{
    op: 'subscribe', symbols: ['AAPL', 'MSFT', 'NVDA', 'TSLA'],
    resume: { AAPL: { seq: 11, ts: ts + 7 }, MSFT: { seq: 5, ts: ts + 1 }, TSLA: { seq: 3, ts: ts + 2 } },
  }], 'NVDA has no tick: a snapshot as usual; TSLA resumes from its last tick, before its gap');
  ws().recv({ type: 'status', feed: 'live' });
  ws().recv({ type: 'subscribed', symbols: ['AAPL', 'MSFT', 'NVDA', 'TSLA'] });
  assert.deepEqual(c.quote('AAPL').reasons, ['disconnected'], 'stale until a tick: the edge says nothing of a finished replay');
  events.length = 0;
  const applied = () => events.filter((e) => e.t === 'tick' || e.t === 'snapshot').map((e) => `${e.tick.symbol}:${e.t}:${e.tick.seq}`);

  // The replay: ordinary ticks above the resumed seq, kept in order, each once.
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 11), tick('AAPL', 12), tick('TSLA', 4), tick('AAPL', 13)] });
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 13), tick('AAPL', 12), tick('AAPL', 14), tick('NVDA', 40, { snapshot: true })] });
  assert.deepEqual(applied(), ['AAPL:tick:12', 'TSLA:tick:4', 'AAPL:tick:13', 'AAPL:tick:14', 'NVDA:snapshot:40'],
    'the resumed baseline holds across the reconnect: not newer, not applied');
  assert.equal(c.quote('AAPL').stale, false, 'the first replayed tick clears disconnected');
  assert.equal(c.quote('TSLA').stale, false);
  assert.equal(events.filter((e) => e.t === 'gap').length, 0);

  // Beyond the window: a gap, stale until the snapshot, which is the new baseline.
  events.length = 0;
  ws().recv({ type: 'gap', symbol: 'MSFT', from_seq: 6, to_seq: 99 });
  assert.deepEqual(c.quote('MSFT').reasons, ['disconnected', 'gap']);
  ws().recv({ type: 'ticks', ticks: [tick('MSFT', 100, { snapshot: true }), tick('MSFT', 101)] });
  assert.equal(c.quote('MSFT').tick.seq, 101);
  assert.equal(c.quote('MSFT').stale, false);
  // A snapshot always resets the baseline, even below it (the feed restarted its numbering).
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 1, { snapshot: true }), tick('AAPL', 2)] });
  assert.deepEqual(applied(), ['MSFT:snapshot:100', 'MSFT:tick:101', 'AAPL:snapshot:1', 'AAPL:tick:2']);

  // Later subscribes on this connection and unsubscribes carry no resume.
  c.subscribe(['META']);
  c.unsubscribe(['NVDA']);
  assert.deepEqual(ws().sent.slice(1), [{ op: 'subscribe', symbols: ['META'] }, { op: 'unsubscribe', symbols: ['NVDA'] }]);
  // A symbol unsubscribed and subscribed again starts afresh: nothing to resume.
  c.unsubscribe(['TSLA']);
  c.subscribe(['TSLA']);
  ws().end(1006);
  c.connect();
  ws().open();
  assert.deepEqual(ws().sent, [{
    op: 'subscribe', symbols: ['AAPL', 'MSFT', 'META', 'TSLA'],
    resume: { AAPL: { seq: 2, ts: c.quote('AAPL').tick.ts }, MSFT: { seq: 101, ts: c.quote('MSFT').tick.ts } },
  }]);
  c.close();
});

test('resume entries count toward an op: at most 500 symbols and about 3.5 KB each, entries in their own op', () => {
  const { c, ws } = setup({ maxHz: 4, mode: 'latest' });
  // Long symbols and big numbers: the entries, not the symbol count, fill the ops.
  const symbols = Array.from({ length: 1500 }, (_, i) => `LONG:SYMBOL/NAME-${String(i).padStart(15, '0')}`);
  assert.ok(symbols.every((s) => s.length === 32));
  const short = Array.from({ length: 1200 }, (_, i) => `S${i}`);
  c.subscribe([...symbols, ...short]);
  c.connect();
  ws().open();
  const ts = 1764270000000000;
  const held = new Map();
  // Every third long symbol and every short one but the multiples of 7 get a tick.
  const ticks = [...symbols.filter((_, i) => i % 3 === 0), ...short.filter((_, i) => i % 7 !== 0)]
    .map((s, i) => tick(s, 1_000_000_000 + i, { snapshot: true, ts: ts + i }));
  for (const t of ticks) held.set(t.symbol, { seq: t.seq, ts: t.ts });
  ws().recv({ type: 'ticks', ticks });
  ws().end(1006);
  c.connect();
  ws().open();
  const ops = ws().sent;
  assert.ok(ops.length > 3, `split in ${ops.length} ops`);
  assert.deepEqual(ops.flatMap((o) => o.symbols), [...symbols, ...short], 'every symbol once, in order');
  // What a symbol adds to an op: `"SYM",` and, when held, `"SYM":{"seq":N,"ts":N},`.
  const cost = (s) => s.length + 3 + (held.has(s) ? s.length + 4 + JSON.stringify(held.get(s)).length : 0);
  const fixed = JSON.stringify({ op: 'subscribe', symbols: [], max_hz: 4, mode: 'latest', resume: {} }).length;
  const resumed = new Map();
  for (const [i, o] of ops.entries()) {
    const bytes = JSON.stringify(o).length, used = o.symbols.reduce((n, s) => n + cost(s), 0);
    assert.equal(o.op, 'subscribe');
    assert.deepEqual([o.max_hz, o.mode], [4, 'latest'], 'the delivery options go with every op');
    assert.ok(o.symbols.length <= 500, `op ${i}: ${o.symbols.length} symbols`);
    assert.ok(used <= 3500 && bytes <= used + fixed, `op ${i}: ${bytes} bytes, ${used} counted`);
    assert.ok(bytes < 4096, 'under the 4 KiB an edge reads from a socket it refuses in band');
    if (i < ops.length - 1) {
      assert.ok(o.symbols.length === 500 || used + cost(ops[i + 1].symbols[0]) > 3500,
        `op ${i} is full: the next op's first symbol did not fit (${used} bytes counted)`);
    }
    const keys = Object.keys(o.resume || {});
    assert.deepEqual(keys, o.symbols.filter((s) => held.has(s)), `op ${i}: entries for its own held symbols only`);
    for (const k of keys) resumed.set(k, o.resume[k]);
  }
  assert.deepEqual(resumed, held, 'every held symbol resumes from its last seq and ts');
  c.close();
});

test('resume: false sends no resume; the first tick of the connection is the baseline', () => {
  const { c, ws } = setup({ symbols: ['AAPL'], resume: false });
  c.connect();
  ws().open();
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 50, { snapshot: true })] });
  ws().end(1006);
  c.connect();
  ws().open();
  assert.deepEqual(ws().sent, [{ op: 'subscribe', symbols: ['AAPL'] }]);
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 7)] });
  assert.equal(c.quote('AAPL').tick.seq, 7);
  c.close();
});

test('a pending resume goes with the rate_limited retry; bad_resume resubscribes without resume', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { c, ws } = setup({ symbols: ['AAPL', 'MSFT', 'NVDA'] });
  c.connect();
  ws().open();
  const ts = 1764270000000000;
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 10, { snapshot: true, ts }), tick('MSFT', 20, { snapshot: true, ts: ts + 1 })] });
  ws().end(1006);
  c.connect();
  ws().open();
  ws().recv({ type: 'ticks', ticks: [tick('AAPL', 11, { ts: ts + 2 })] });   // AAPL's resume was served
  ws().recv({ type: 'error', code: 'rate_limited', message: 'ignored' });
  ws().sent = [];
  t.mock.timers.tick(1300);
  assert.deepEqual(ws().sent, [{ op: 'subscribe', symbols: ['AAPL', 'MSFT', 'NVDA'], resume: { MSFT: { seq: 20, ts: ts + 1 } } }],
    'only MSFT still waits for its resume');

  ws().sent = [];
  ws().recv({ type: 'error', code: 'bad_resume', message: 'bad resume' });
  assert.deepEqual(ws().sent, [{ op: 'subscribe', symbols: ['AAPL', 'MSFT', 'NVDA'] }], 'the whole set, without resume');
  ws().recv({ type: 'ticks', ticks: [tick('MSFT', 3), tick('AAPL', 11), tick('AAPL', 12)] });
  assert.equal(c.quote('MSFT').tick.seq, 3, 'MSFT: the first tick of the connection is its baseline again');
  assert.equal(c.quote('AAPL').tick.seq, 12, 'AAPL kept its baseline: it had its tick of this connection');
  c.close();
});
