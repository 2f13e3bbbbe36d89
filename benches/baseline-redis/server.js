#!/usr/bin/env node
// Baseline fan-out server: the classic design from the Redis pub/sub scaling
// tutorial. One process = one instance. It subscribes to ONE Redis channel and,
// for every message published there, calls ws.send() once for every local
// client that wants that symbol. No batching, no per-client queue bound, no
// snapshots, no gap notices: that is the point of the baseline.
//
// Environment:
//   PORT       WebSocket/HTTP port (default 18400); WebSocket path is /ws
//   HOST       listen address (default 127.0.0.1)
//   REDIS_URL  Redis to subscribe to (default redis://127.0.0.1:6390)
//   CHANNEL    channel name (default ticks)
//   LOG_EVERY_MS  stats interval (default 5000)
'use strict';

const http = require('node:http');
const { WebSocketServer, WebSocket } = require('ws');
const Redis = require('ioredis');

const PORT = Number(process.env.PORT || 18400);
const HOST = process.env.HOST || '127.0.0.1';
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6390';
const CHANNEL = process.env.CHANNEL || 'ticks';
const LOG_EVERY_MS = Number(process.env.LOG_EVERY_MS || 5000);

const tag = `[server :${PORT}]`;
const log = (...a) => console.log(new Date().toISOString(), tag, ...a);

// ---- HTTP: /healthz, everything else 404 (the upgrade on /ws is handled by ws) ----
const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok');
    return;
  }
  if (req.url === '/ws') {
    res.writeHead(400, { 'content-type': 'application/json' });
    res.end('{"error":"websocket upgrade required"}');
    return;
  }
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end('{"error":"not found"}');
});

// ---- WebSocket clients ----
const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false });

// Each client carries its own symbol Set (ws.symbols).
wss.on('connection', (ws) => {
  ws.symbols = new Set();
  ws.on('error', () => {}); // a reset peer is just a closed client
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      ws.send('{"type":"error","code":"binary_not_supported","message":"binary frames are not supported"}');
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data.toString());
    } catch {
      ws.send('{"type":"error","code":"bad_json","message":"not valid JSON"}');
      return;
    }
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
      ws.send('{"type":"error","code":"bad_json","message":"not a JSON object"}');
      return;
    }
    if (msg.op !== 'subscribe' && msg.op !== 'unsubscribe') {
      ws.send('{"type":"error","code":"unknown_op","message":"op must be subscribe or unsubscribe"}');
      return;
    }
    if (!Array.isArray(msg.symbols) || !msg.symbols.every((s) => typeof s === 'string')) {
      ws.send('{"type":"error","code":"bad_symbols","message":"symbols must be an array of strings"}');
      return;
    }
    const symbols = [...new Set(msg.symbols)];
    if (msg.op === 'subscribe') {
      for (const s of symbols) ws.symbols.add(s);
      if (symbols.length > 0) ws.send(JSON.stringify({ type: 'subscribed', symbols }));
    } else {
      for (const s of symbols) ws.symbols.delete(s);
      ws.send(JSON.stringify({ type: 'unsubscribed', symbols }));
    }
  });
});

// ---- Redis: ONE subscription, every message to every interested local client ----
const sub = new Redis(REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: null });
let ticksIn = 0;
let sends = 0;
let badIn = 0;

sub.on('ready', () => log(`redis ready (${REDIS_URL})`));
sub.on('error', (e) => log('redis error:', e.message));
sub.on('close', () => log('redis connection closed'));
sub.on('reconnecting', (ms) => log(`redis reconnecting in ${ms} ms`));

sub.subscribe(CHANNEL).then(
  () => log(`subscribed to redis channel "${CHANNEL}"`),
  (e) => {
    log('subscribe failed:', e.message);
    process.exit(1);
  },
);

sub.on('message', (channel, message) => {
  if (channel !== CHANNEL) return;
  ticksIn++;
  let symbol;
  try {
    symbol = JSON.parse(message).symbol;
  } catch {
    badIn++;
    return;
  }
  // Wrapped once per message, not per client.
  const frame = '{"type":"ticks","ticks":[' + message + ']}';
  for (const ws of wss.clients) {
    if (ws.readyState === WebSocket.OPEN && ws.symbols.has(symbol)) {
      ws.send(frame);
      sends++;
    }
  }
});

// ---- stats every LOG_EVERY_MS ----
let last = process.hrtime.bigint();
const stats = setInterval(() => {
  const now = process.hrtime.bigint();
  const secs = Number(now - last) / 1e9;
  last = now;
  let buffered = 0;
  for (const ws of wss.clients) buffered += ws.bufferedAmount;
  const rssMiB = process.memoryUsage().rss / 1048576;
  log(
    `connections=${wss.clients.size} ticks_in/s=${(ticksIn / secs).toFixed(0)} sends/s=${(sends / secs).toFixed(0)}` +
      ` buffered_bytes=${buffered} rss_mib=${rssMiB.toFixed(1)}` +
      (badIn ? ` bad_in=${badIn}` : ''),
  );
  ticksIn = 0;
  sends = 0;
}, LOG_EVERY_MS);

server.listen(PORT, HOST, () => log(`listening on ws://${HOST}:${PORT}/ws (healthz: http://${HOST}:${PORT}/healthz)`));

// ---- shutdown ----
let stopping = false;
function shutdown(sig) {
  if (stopping) return;
  stopping = true;
  log(`${sig}: shutting down`);
  clearInterval(stats);
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  server.close();
  sub.disconnect();
  setTimeout(() => process.exit(0), 200).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
