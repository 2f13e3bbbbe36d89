#!/usr/bin/env node
// Publishes JSON ticks to one Redis channel at a fixed total rate.
//
//   node publisher.js [--rate 1000] [--symbols 100 | --symbols AAPL,MSFT]
//                     [--size BYTES] [--duration SECONDS]
//                     [--redis redis://127.0.0.1:6390] [--channel ticks]
//
// --rate      total ticks per second over all symbols (default 1000), paced
//             evenly by a 1 ms timer loop that publishes however many ticks
//             are due since start, so it catches up after any lag
// --symbols   a count N (symbols SYM00000 .. SYM<N-1>, default 100) or a comma
//             list; ticks go round-robin over the symbols, so each symbol gets
//             rate/N per second
// --size      pad each tick with a "pad" string field to about this many bytes
//             of JSON (e.g. 512); without it a tick is ~120 bytes
// --duration  stop after this many seconds (default: run until killed)
//
// Each tick: {"symbol","price","size","bid","ask","venue","ts","seq"[,"pad"]}
// with ts = now in microseconds since the epoch and seq +1 per symbol from 1.
// Prints the achieved rate every second.
'use strict';

const Redis = require('ioredis');
const { nowUs } = require('./clock');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') out.help = true;
    else if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) out[a.slice(2, eq)] = a.slice(eq + 1);
      else out[a.slice(2)] = argv[++i];
    } else throw new Error(`unexpected argument: ${a}`);
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
if (args.help) {
  console.log(require('node:fs').readFileSync(__filename, 'utf8').split('\n').slice(1, 20).map((l) => l.replace(/^\/\/ ?/, '')).join('\n'));
  process.exit(0);
}

const RATE = Number(args.rate ?? 1000);
const SIZE = args.size ? Number(args.size) : 0;
const DURATION = args.duration ? Number(args.duration) : 0;
const REDIS_URL = args.redis || process.env.REDIS_URL || 'redis://127.0.0.1:6390';
const CHANNEL = args.channel || process.env.CHANNEL || 'ticks';
const symArg = String(args.symbols ?? '100');
const SYMBOLS = /^\d+$/.test(symArg)
  ? Array.from({ length: Number(symArg) }, (_, i) => 'SYM' + String(i).padStart(5, '0'))
  : symArg.split(',').map((s) => s.trim()).filter(Boolean);

if (!(RATE > 0) || SYMBOLS.length === 0 || !(SIZE >= 0) || !(DURATION >= 0)) {
  console.error('bad arguments: need --rate > 0, at least one symbol, --size >= 0, --duration >= 0');
  process.exit(2);
}

const VENUES = ['XNAS', 'XNYS', 'ARCX', 'BATS', 'IEXG'];
const state = SYMBOLS.map((symbol, i) => ({
  symbol,
  price: 20 + ((i * 7919) % 480) + ((i * 31) % 100) / 100,
  seq: 0,
  venue: VENUES[i % VENUES.length],
}));
const PAD = 'x'.repeat(Math.max(0, SIZE));
const PAD_OVERHEAD = ',"pad":""'.length;

const round2 = (x) => Math.round(x * 100) / 100;

function makeTick(st) {
  st.seq += 1;
  st.price = Math.max(0.01, round2(st.price + (Math.random() - 0.5) * 0.1));
  const spread = 0.01 * (1 + Math.floor(Math.random() * 3));
  let s = JSON.stringify({
    symbol: st.symbol,
    price: st.price,
    size: 100 * (1 + Math.floor(Math.random() * 10)),
    bid: round2(st.price - spread),
    ask: round2(st.price + spread),
    venue: st.venue,
    ts: nowUs(),
    seq: st.seq,
  });
  if (SIZE > 0) {
    const n = SIZE - s.length - PAD_OVERHEAD;
    if (n > 0) s = s.slice(0, -1) + ',"pad":"' + PAD.slice(0, n) + '"}';
  }
  return s;
}

// ---- Redis: auto-pipelining batches the publishes issued in one event-loop turn ----
const redis = new Redis(REDIS_URL, { enableAutoPipelining: true, maxRetriesPerRequest: null });
redis.on('error', (e) => console.error(new Date().toISOString(), 'redis error:', e.message));

const MAX_IN_FLIGHT = Math.max(10000, RATE); // beyond this we wait (and catch up later)
const MAX_PER_TURN = Math.max(1000, Math.ceil(RATE / 50)); // keep each loop turn short

let next = 0; // round-robin symbol index
let sent = 0; // publishes issued
let acked = 0; // publishes answered by Redis
let failed = 0;
let inFlight = 0;
let receivers = -1; // subscriber count reported by the last PUBLISH
let bytes = 0;
let startHr = 0n;
let stopped = false;

function onAck(n) {
  inFlight--;
  acked++;
  receivers = n;
}
function onFail() {
  inFlight--;
  failed++;
}

function loop() {
  if (stopped) return;
  const elapsedNs = process.hrtime.bigint() - startHr;
  const due = Math.floor((Number(elapsedNs) / 1e9) * RATE);
  let todo = Math.min(due - sent, MAX_PER_TURN, MAX_IN_FLIGHT - inFlight);
  while (todo-- > 0) {
    const st = state[next];
    next = next + 1 === state.length ? 0 : next + 1;
    const msg = makeTick(st);
    bytes += msg.length;
    sent++;
    inFlight++;
    redis.publish(CHANNEL, msg).then(onAck, onFail);
  }
  if (DURATION > 0 && Number(elapsedNs) >= DURATION * 1e9) return finish();
  setTimeout(loop, 1);
}

let lastAcked = 0;
let lastSecHr = 0n;
let reporter;
function report() {
  const now = process.hrtime.bigint();
  const secs = Number(now - lastSecHr) / 1e9;
  lastSecHr = now;
  const total = Number(now - startHr) / 1e9;
  const due = Math.floor(total * RATE);
  console.log(
    `${new Date().toISOString()} [publisher] t=${total.toFixed(0)}s rate=${((acked - lastAcked) / secs).toFixed(0)}/s` +
      ` target=${RATE}/s published=${acked} behind=${due - sent} in_flight=${inFlight}` +
      ` receivers=${receivers} avg_bytes=${sent ? Math.round(bytes / sent) : 0}` +
      (failed ? ` failed=${failed}` : ''),
  );
  lastAcked = acked;
}

async function finish() {
  if (stopped) return;
  stopped = true;
  clearInterval(reporter);
  const secs = Number(process.hrtime.bigint() - startHr) / 1e9;
  try {
    await redis.quit();
  } catch {
    redis.disconnect();
  }
  console.log(
    `${new Date().toISOString()} [publisher] done: ${acked} ticks in ${secs.toFixed(2)} s = ${(acked / secs).toFixed(0)}/s` +
      ` (target ${RATE}/s, ${SYMBOLS.length} symbols, failed ${failed})`,
  );
  process.exit(0);
}

redis.once('ready', () => {
  console.log(
    `${new Date().toISOString()} [publisher] ${REDIS_URL} channel "${CHANNEL}": ${RATE}/s over ${SYMBOLS.length} symbols` +
      ` (${SYMBOLS.slice(0, 3).join(',')}${SYMBOLS.length > 3 ? ',...' : ''})` +
      (SIZE ? `, padded to ~${SIZE} bytes` : '') +
      (DURATION ? `, for ${DURATION} s` : ''),
  );
  startHr = process.hrtime.bigint();
  lastSecHr = startHr;
  reporter = setInterval(report, 1000);
  loop();
});

process.on('SIGTERM', finish);
process.on('SIGINT', finish);
