// Helpers for the browser tests: the tickfan binary, `tickfan demo` and
// `tickfan produce` as child processes (all killed by `killAll`), headless
// Debian chromium through playwright-core, condition waits with deadlines.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const TARGET = path.resolve(REPO, process.env.CARGO_TARGET_DIR || 'target');
/** The binary under test (`cargo build --bin tickfan` first). */
export const BIN = path.resolve(REPO, process.env.TICKFAN_BIN || path.join(TARGET, 'debug', 'tickfan'));
/** Screenshots and process logs. */
export const OUT = path.resolve(REPO, process.env.TICKFAN_BROWSER_OUT || path.join('target', 'browser'));
export const CHROMIUM = process.env.TICKFAN_CHROMIUM || '/usr/bin/chromium';
/** Upper bound of any single wait; a passing run never waits this long. */
export const DEADLINE_MS = 60_000;

fs.mkdirSync(OUT, { recursive: true });

/** Polls `cond` (sync or async) until it returns something truthy; throws at the deadline. */
export async function waitFor(what, cond, { timeout = DEADLINE_MS, interval = 50 } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const children = new Set();
const logs = new Set(); // logs started by this run (truncated first, then appended to)
// Never leave a demo behind, even when the runner itself is stopped.
process.on('exit', () => { for (const c of children) c.kill('SIGKILL'); });
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => process.exit(130));

/** Starts `tickfan ARGS`, its output appended to OUT/<log>.log; `child.exited` resolves to {code, signal}. */
export function start(args, log) {
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} not found: run cargo build --bin tickfan, or set TICKFAN_BIN`);
  const out = fs.createWriteStream(path.join(OUT, `${log}.log`), { flags: logs.has(log) ? 'a' : 'w' });
  logs.add(log);
  out.write(`\n$ tickfan ${args.join(' ')}\n`);
  const child = spawn(BIN, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1', RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  child.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  children.add(child);
  child.exited.then(() => children.delete(child));
  child.stderr.pipe(out, { end: false });
  child.stdoutLines = readline.createInterface({ input: child.stdout });
  child.stdoutLines.on('line', (l) => out.write(l + '\n'));
  child.exited.then(() => setImmediate(() => out.end()));
  return child;
}

/** SIGKILLs every child still running and waits for them. */
export async function killAll() {
  const left = [...children];
  for (const c of left) c.kill('SIGKILL');
  await Promise.all(left.map((c) => c.exited));
}

/**
 * `tickfan demo --listen 127.0.0.1:PORT ARGS`; resolves once it has printed its
 * page URL and Kafka bootstrap and `/readyz` answers 200.
 * @returns {Promise<{child, url, brokers, topic, stop: (signal?: string) => Promise<object>}>}
 */
export async function startDemo(port, args = [], log = 'demo') {
  const child = start(['demo', '--listen', `127.0.0.1:${port}`, ...args], log);
  const info = {};
  child.stdoutLines.on('line', (l) => {
    let m;
    if ((m = l.match(/ticker page:\s+(\S+)/))) info.url = m[1];
    if ((m = l.match(/kafka bootstrap:\s+(\S+).*topic "([^"]+)"/))) { info.brokers = m[1]; info.topic = m[2]; }
  });
  let exited = null;
  child.exited.then((e) => { exited = e; });
  await waitFor('demo prints its page URL and Kafka bootstrap', () => {
    if (exited) throw new Error(`tickfan demo exited early (${JSON.stringify(exited)}); see ${OUT}/${log}.log`);
    return info.url && info.brokers;
  });
  await waitFor('demo /readyz', async () => {
    if (exited) throw new Error(`tickfan demo exited (${JSON.stringify(exited)}); see ${OUT}/${log}.log`);
    try { return (await fetch(new URL('/readyz', info.url))).ok; } catch (_) { return false; }
  });
  const stop = async (signal = 'SIGTERM') => {
    child.kill(signal);
    let status;
    child.exited.then((e) => { status = e; });
    await waitFor(`demo exits after ${signal}`, () => status);
    return status;
  };
  return { child, ...info, stop };
}

/**
 * `tickfan edge --brokers B --topic T --listen 127.0.0.1:PORT --page ARGS` on
 * the Kafka of a demo (`startDemo`'s `brokers` and `topic`); resolves once
 * `/readyz` answers 200.
 * @returns {Promise<{child, url, readyAt: number, kill: (signal?: string) => Promise<object>}>}
 */
export async function startEdge(port, { brokers, topic }, args = [], log = 'edge') {
  const child = start(['edge', '--brokers', brokers, '--topic', topic, '--listen', `127.0.0.1:${port}`, '--page', ...args], log);
  const url = `http://127.0.0.1:${port}/`;
  let exited = null;
  child.exited.then((e) => { exited = e; });
  await waitFor('edge /readyz', async () => {
    if (exited) throw new Error(`tickfan edge exited (${JSON.stringify(exited)}); see ${OUT}/${log}.log`);
    try { return (await fetch(new URL('/readyz', url))).ok; } catch (_) { return false; }
  });
  const kill = async (signal = 'SIGKILL') => {
    child.kill(signal);
    return child.exited;
  };
  return { child, url, readyAt: Date.now(), kill };
}

/** Runs `tickfan produce ARGS` to completion; rejects on a non-zero exit. */
export async function produce(args, log = 'produce') {
  const { code, signal } = await start(['produce', ...args], log).exited;
  if (code !== 0) throw new Error(`tickfan produce ${args.join(' ')}: exit ${code ?? signal}; see ${OUT}/${log}.log`);
}

/** Debian's chromium, headless. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
}

/** Saves a full-page screenshot as OUT/<name>.png; returns the path. */
export async function screenshot(page, name) {
  const file = path.join(OUT, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** An HS256 JWT of `claims` (as `--jwt-secret SECRET` verifies). */
export function jwt(secret, claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${crypto.createHmac('sha256', secret).update(body).digest('base64url')}`;
}

// ---- page probes (run in the page) ----------------------------------------------

/** The state of every row: {symbol: {ticks, stale, reason, gaps, staleCount, price, subscribed}}. */
export function rows(page) {
  return page.evaluate(() => Object.fromEntries([...document.querySelectorAll('tr[data-symbol]')].map((r) => [
    r.dataset.symbol,
    {
      ticks: Number(r.dataset.ticks), stale: r.dataset.stale === 'true', reason: r.dataset.staleReason || '',
      gaps: Number(r.dataset.gaps), staleCount: Number(r.dataset.staleCount),
      price: r.querySelector('.px').textContent, subscribed: r.dataset.subscribed === 'true',
    },
  ])));
}

/** The connection status badge's state (`connecting`, `open`, `reconnecting`, `closed`). */
export function status(page) {
  return page.evaluate(() => document.querySelector('[data-testid=status]').dataset.state);
}
