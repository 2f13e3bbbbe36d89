#!/usr/bin/env node
// Probe: opens WebSocket clients, subscribes each to some symbols, and for
// --duration seconds prints received ticks/s and latency (now - tick.ts) every
// second, checking the shape of every frame and per-symbol seq continuity.
// Works against this baseline and against a tickfan edge (same protocol).
//
//   node probe.js [--url ws://127.0.0.1:18400/ws[,ws://...:18401/ws]] [--clients 2]
//                 [--symbols 10 | --symbols AAPL,MSFT] [--duration 5]
//
// --url       one URL or a comma list; clients are spread round-robin over them
// --symbols   a count N (SYM00000 .. SYM<N-1>, default 10) or a comma list
// The last line is a JSON summary; the exit code is 1 if no tick arrived or
// any frame had the wrong shape.
'use strict';

const WebSocket = require('ws');
const { nowUs } = require('./clock');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
      else out[a.slice(2)] = argv[++i];
    } else throw new Error(`unexpected argument: ${a}`);
  }
  return out;
}
const args = parseArgs(process.argv.slice(2));
const URLS = String(args.url || 'ws://127.0.0.1:18400/ws').split(',');
const CLIENTS = Number(args.clients ?? 2);
const DURATION = Number(args.duration ?? 5);
const symArg = String(args.symbols ?? '10');
const SYMBOLS = /^\d+$/.test(symArg)
  ? Array.from({ length: Number(symArg) }, (_, i) => 'SYM' + String(i).padStart(5, '0'))
  : symArg.split(',').map((s) => s.trim()).filter(Boolean);
const WANTED = new Set(SYMBOLS);

const lat = []; // latencies (µs) of the current second
const allLat = [];
let ticks = 0;
let frames = 0;
let totalTicks = 0;
let totalFrames = 0;
let multiTickFrames = 0;
let shapeErrors = 0;
let unwanted = 0;
let seqGaps = 0;
let seqRegress = 0;
let subscribedOk = 0;
let otherFrames = 0;
const firstErrors = [];
let sample = null;

function shapeError(why, text) {
  shapeErrors++;
  if (firstErrors.length < 5) firstErrors.push(`${why}: ${String(text).slice(0, 200)}`);
}

function checkTick(t) {
  return (
    t !== null &&
    typeof t === 'object' &&
    typeof t.symbol === 'string' &&
    typeof t.price === 'number' &&
    typeof t.size === 'number' &&
    Number.isSafeInteger(t.ts) &&
    Number.isSafeInteger(t.seq) &&
    (t.bid === undefined || typeof t.bid === 'number') &&
    (t.ask === undefined || typeof t.ask === 'number') &&
    (t.venue === undefined || typeof t.venue === 'string')
  );
}

function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
const ms = (us) => (Number.isNaN(us) ? 'n/a' : (us / 1000).toFixed(3) + 'ms');

const sockets = [];
for (let c = 0; c < CLIENTS; c++) {
  const url = URLS[c % URLS.length];
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const lastSeq = new Map();
  sockets.push(ws);
  ws.on('open', () => ws.send(JSON.stringify({ op: 'subscribe', symbols: SYMBOLS })));
  ws.on('error', (e) => console.error(`client ${c} (${url}): ${e.message}`));
  ws.on('message', (data) => {
    const now = nowUs();
    const text = data.toString();
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      return shapeError('not JSON', text);
    }
    if (m.type === 'subscribed') {
      if (Array.isArray(m.symbols) && m.symbols.length === SYMBOLS.length) subscribedOk++;
      else shapeError('subscribed lists other symbols', text);
      return;
    }
    if (m.type !== 'ticks') {
      otherFrames++;
      if (firstErrors.length < 5) firstErrors.push(`other frame: ${text.slice(0, 200)}`);
      return;
    }
    if (!Array.isArray(m.ticks) || m.ticks.length === 0) return shapeError('ticks is not a non-empty array', text);
    frames++;
    if (m.ticks.length !== 1) multiTickFrames++;
    for (const t of m.ticks) {
      if (!checkTick(t)) {
        shapeError('bad tick', JSON.stringify(t));
        continue;
      }
      if (!sample) sample = text;
      if (!WANTED.has(t.symbol)) unwanted++;
      const prev = lastSeq.get(t.symbol);
      if (prev !== undefined) {
        if (t.seq > prev + 1) seqGaps += t.seq - prev - 1;
        else if (t.seq <= prev) seqRegress++;
      }
      lastSeq.set(t.symbol, t.seq);
      ticks++;
      lat.push(now - t.ts);
    }
  });
}

let sec = 0;
const timer = setInterval(() => {
  sec++;
  const sorted = lat.sort((a, b) => a - b);
  const open = sockets.filter((s) => s.readyState === WebSocket.OPEN).length;
  console.log(
    `[probe] t=${sec}s clients_open=${open} ticks/s=${ticks} frames/s=${frames}` +
      ` latency p50=${ms(pct(sorted, 50))} p99=${ms(pct(sorted, 99))} max=${ms(sorted[sorted.length - 1] ?? NaN)}`,
  );
  for (const x of sorted) allLat.push(x);
  totalTicks += ticks;
  totalFrames += frames;
  ticks = 0;
  frames = 0;
  lat.length = 0;
  if (sec >= DURATION) finish();
}, 1000);

function finish() {
  clearInterval(timer);
  for (const s of sockets) s.terminate();
  const sorted = allLat.sort((a, b) => a - b);
  if (sample) console.log(`[probe] sample frame: ${sample.length > 400 ? sample.slice(0, 400) + '...' : sample}`);
  for (const e of firstErrors) console.log(`[probe] note: ${e}`);
  const summary = {
    clients: CLIENTS,
    symbols_per_client: SYMBOLS.length,
    seconds: DURATION,
    subscribed_acks: subscribedOk,
    ticks: totalTicks,
    ticks_per_s: Math.round(totalTicks / DURATION),
    frames: totalFrames,
    multi_tick_frames: multiTickFrames,
    latency_us: {
      p50: pct(sorted, 50),
      p90: pct(sorted, 90),
      p99: pct(sorted, 99),
      max: sorted[sorted.length - 1] ?? null,
      min: sorted[0] ?? null,
    },
    shape_errors: shapeErrors,
    other_frames: otherFrames,
    unwanted_symbols: unwanted,
    seq_missing: seqGaps,
    seq_regressions: seqRegress,
  };
  console.log(JSON.stringify(summary));
  process.exit(totalTicks > 0 && shapeErrors === 0 ? 0 : 1);
}
