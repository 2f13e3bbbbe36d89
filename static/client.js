/**
 * tickfan browser client: a dependency-free ES module for the edge's
 * WebSocket protocol (docs/protocol.md). Every edge serves it at `/client.js`.
 *
 * ```js
 * import { TickfanClient } from '/client.js';
 * const client = new TickfanClient('/ws', { token });   // connects on the next microtask
 * client.on('tick', ({ symbol, tick }) => render(symbol, tick));
 * client.on('stale', ({ symbol, reasons }) => grey(symbol, reasons));
 * client.on('fresh', ({ symbol }) => ungrey(symbol));
 * client.on('status', ({ status, retryAt }) => badge(status, retryAt));
 * client.on('unknown', ({ symbols }) => noSuchSymbol(symbols)); // subscribed, but no tick in the topic
 * client.subscribe(['AAPL', 'MSFT']);
 * ```
 *
 * What it does for you:
 * - **Snapshot, then live, per symbol.** After subscribing, a symbol's
 *   first tick is its snapshot (`"snapshot":true`): it replaces what the
 *   client held. A live tick is applied only when its `seq` is above the last
 *   one applied, so nothing older than the snapshot is. A snapshot always
 *   sets a new baseline. A slow client's outbox can drop the snapshot like
 *   any tick (a `gap` frame says so); the first tick that does arrive, a full
 *   quote, stands in for it.
 * - **Resume after a reconnect** (option `resume`, default on). When it
 *   subscribes again after a lost connection (or after `close()` and
 *   `connect()`), each `subscribe` op carries
 *   `"resume":{"AAPL":{"seq":41,"ts":1764270000123456}}`: for every symbol of
 *   that op of which it holds a tick from an earlier connection, that tick's
 *   `seq` and `ts`, exactly as received. The edge then sends the ticks after
 *   it, as ordinary ticks (no snapshot flag), then live ticks; so for a
 *   resumed symbol the client keeps its last `seq` across the reconnect and
 *   applies only ticks with a higher one: the missed ticks arrive as `tick`
 *   events, in order, each once, and nothing is lost over the outage. Beyond
 *   the edge's resume window the edge sends a `gap` frame (the symbol is
 *   stale until its next tick), then a snapshot, which resets the baseline as
 *   always. Symbols without a tick yet are subscribed as before (snapshot,
 *   then live; the first tick of the connection is the baseline). Resume
 *   entries count toward an op's size: an op holds at most
 *   {@link SUBSCRIBE_CHUNK} symbols and about 3.5 KB, its entries only for
 *   its own symbols. An entry is sent again (by the `rate_limited`,
 *   `unknown_symbol` and `edge_full` retries) until the symbol's first tick
 *   or `gap` of the connection. With `maxHz` or `mode: 'latest'` the edge answers a resume
 *   with the newest tick rather than every missed one; the entry is sent
 *   anyway. If the edge refuses a subscribe as `bad_resume` (it ignored the
 *   whole op), the client subscribes its whole set again without resume, the
 *   first tick of the connection the baseline, as with `resume: false`.
 * - **Staleness.** A symbol is stale while at least one reason holds:
 *   `gap` (a `gap` frame announced lost ticks; the next tick, a full quote,
 *   clears it), `feed` (the edge reported `{"type":"status","feed":"stale"}`;
 *   `live` clears it) or `disconnected` (the connection was lost; the first
 *   tick after the resubscribe clears it: the snapshot, or for a resumed
 *   symbol the first missed or live tick; a resumed symbol that missed
 *   nothing stays stale until its next live tick, as the edge sends nothing
 *   before it and says nothing of a finished replay).
 * - **Reconnect.** After a lost connection it waits
 *   `uniform(0, min(capMs, baseMs * 2^attempt))` (exponential backoff with full
 *   jitter), then reconnects and resubscribes every symbol. It connects with
 *   `?reject=close`, so an edge that refuses the handshake (a `429`/`503`,
 *   which a browser cannot read) closes with 1013 and a JSON reason instead:
 *   it then waits `retry_after_ms` plus the jittered backoff, so clients
 *   refused together do not all come back in the same instant (a `401` comes
 *   as 4401: an `error` event, then the backoff). An attempt that fails before
 *   the upgrade (the edge is down, or refused over HTTP) waits at least
 *   `rejectFloorMs` (1 s, the smallest `Retry-After` an edge sends) plus the
 *   jittered backoff. A `reconnect` hint from a draining edge (`after_ms`)
 *   replaces the backoff: it waits until the hinted time plus up to `baseMs`.
 *   The attempt counter resets once a connection has stayed open `stableMs`.
 *   A connection counts as open at its first frame: an edge admitting a
 *   `reject=close` client sends the feed `status` at once, one refusing in
 *   band sends nothing but the close (`confirmMs` after the upgrade is the
 *   fallback for edges that predate the announcement).
 * - **Rate limits.** When the edge ignores an op as `rate_limited` (it does
 *   not say which), the client sends `subscribe` for its whole set again a
 *   second later (subscribing to a symbol already held changes nothing), and
 *   `unsubscribe` for every symbol it let go of on this connection that the
 *   edge has not confirmed with `unsubscribed` yet.
 * - **Later.** Symbols refused with `unknown_symbol` (the edge has seen no
 *   tick of them yet and the connection already waits for as many such
 *   symbols as it may) or `edge_full` stay in the set and are subscribed
 *   again after the error's `retry_after_ms` plus jitter.
 * - **Unknown symbols.** An `unknown_symbol` error *without*
 *   `retry_after_ms` is not a refusal: the symbols are subscribed, but the
 *   edge has read their partitions (the snapshot rewind) and the topic holds
 *   no tick of them (a typo, a delisted or not yet listed name). The client
 *   keeps them subscribed, asks nothing again, and fires `unknown`; if one
 *   trades later, its first tick arrives as a snapshot as usual.
 * - **Tokens.** Browsers cannot set `Authorization` on a WebSocket, so the
 *   token is offered as a subprotocol, `Sec-WebSocket-Protocol: tickfan,
 *   tickfan.bearer.<token>` (the edge selects `tickfan`), which keeps it out
 *   of URLs and access logs; a token with characters a subprotocol cannot
 *   carry (not a JWT) goes in the `?token=` query parameter. `getToken()` is
 *   called before every attempt, and again `refreshLeadMs` before the JWT's
 *   `exp` to refresh the session in-band (`{"op":"auth"}`).
 *
 * Events are `CustomEvent`s whose `detail` is described at each `@fires`;
 * `client.on(type, fn)` calls `fn(detail)` and returns a function that removes
 * the listener.
 *
 * @module tickfan/client
 */

/** Symbol rule of the protocol: 1–32 characters of `A-Z a-z 0-9 . - _ : /`. */
export const SYMBOL_RE = /^[A-Za-z0-9._\-:/]{1,32}$/;
/** Most symbols sent in one `subscribe`/`unsubscribe` op. */
export const SUBSCRIBE_CHUNK = 500;
/** Rough size cap of one op: under the 4 KiB an edge reads from a socket it refuses in band. */
const OP_BYTES = 3500;
/** Close code of a refusal in band for a `429`/`503` (Try Again Later). */
export const CLOSE_TRY_AGAIN_LATER = 1013;
/** Close code of a refusal in band for a `401`. */
export const CLOSE_UNAUTHORIZED = 4401;

/**
 * Full-jitter exponential backoff: uniform in `[0, min(capMs, baseMs * 2^attempt)]`.
 * @param {number} attempt failed attempts so far (0 for the first retry)
 * @param {number} baseMs @param {number} capMs
 * @param {() => number} [random] uniform in [0, 1)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, baseMs, capMs, random = Math.random) {
  return random() * Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
}

/** `exp` (seconds) of a JWT, or null. */
function jwtExp(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(part + '==='.slice((part.length + 3) % 4))).exp;
    return typeof exp === 'number' ? exp : null;
  } catch (_) {
    return null;
  }
}

/**
 * @typedef {object} Tick A tick as sent by the edge (see docs/protocol.md).
 * @property {string} symbol @property {number} price @property {number} size
 * @property {number} [bid] @property {number} [ask] @property {string} [venue]
 * @property {number} ts event time, µs since the Unix epoch
 * @property {number} seq per-symbol sequence number
 * @property {Object<string,string>} [attrs] @property {true} [snapshot]
 * @property {number} [conflated] with `maxHz` or `mode: 'latest'`: ticks this
 *   one replaced since the previous update (skipped on request, not a gap)
 */

/**
 * @typedef {object} Options
 * @property {string} [token] JWT for an edge with auth on, sent as the
 *   `tickfan.bearer.<token>` subprotocol (or `?token=` if it cannot be one)
 * @property {() => (string|Promise<string>)} [getToken] returns a fresh token;
 *   called before each connection attempt and before `exp` for in-band refresh
 * @property {{baseMs?: number, capMs?: number}} [backoff] default 250 ms / 10 s
 * @property {number} [rejectFloorMs] least wait after an attempt that failed
 *   before the upgrade (default 1000)
 * @property {number} [confirmMs] an upgraded connection without a frame yet
 *   counts as open after this long (default 1000; current edges announce
 *   admission with a first `status` frame at once)
 * @property {number} [stableMs] open this long, the attempt counter resets (default 5000)
 * @property {number} [refreshLeadMs] in-band token refresh this long before `exp` (default 30000)
 * @property {string[]} [symbols] initial subscriptions
 * @property {number} [maxHz] at most this many updates a second per symbol
 *   (`max_hz`; the rest conflated, see docs/protocol.md); default: the edge's
 * @property {'all'|'latest'} [mode] `latest`: while behind, keep only the
 *   newest tick of each symbol (default `all`: every tick)
 * @property {boolean} [resume] after a reconnect, ask the edge for the ticks
 *   missed since the last tick held of each symbol (`resume` in `subscribe`;
 *   default true). `false`: a snapshot per symbol, as before resume existed
 * @property {boolean} [autoConnect] connect on the next microtask (default true)
 * @property {typeof WebSocket} [WebSocket] WebSocket implementation (default: the global)
 */

/**
 * A reconnecting client of one edge (or of a load balancer in front of edges).
 *
 * @fires TickfanClient#status   `{status, attempt, delayMs?, retryAt?, code?, reason?}`;
 *   `status` is `connecting` | `open` | `reconnecting` | `closed`
 * @fires TickfanClient#snapshot `{symbol, tick, receivedAt}`: a snapshot tick replaced the symbol's state
 * @fires TickfanClient#tick     `{symbol, tick, receivedAt}`: a live tick was applied
 * @fires TickfanClient#ticks    `{ticks, receivedAt}`: every tick applied from one frame (snapshots included)
 * @fires TickfanClient#gap      `{symbol, from_seq, to_seq}`: those seqs will not arrive
 * @fires TickfanClient#stale    `{symbol, reasons}`: the symbol became stale, or its reasons changed
 * @fires TickfanClient#fresh    `{symbol}`: the symbol is no longer stale
 * @fires TickfanClient#feed     `{feed}`: `live` or `stale`, from the edge's status frames
 * @fires TickfanClient#hint     `{afterMs, at}`: the edge is draining; reconnect at `at`
 * @fires TickfanClient#subscribed / #unsubscribed `{symbols}`
 * @fires TickfanClient#authenticated `{exp}`
 * @fires TickfanClient#unknown  `{symbols}`: the edge says these subscribed symbols have no tick in
 *   the topic (`unknown_symbol` without `retry_after_ms`); they stay subscribed (show them as
 *   "no such symbol"; a later first tick is a snapshot)
 * @fires TickfanClient#error    `{code, message, symbols}`: an `error` frame (rejected symbols are
 *   dropped), or `code: 'unauthorized'` when the edge refused the token (close 4401)
 */
export class TickfanClient extends EventTarget {
  /**
   * @param {string} [url] WebSocket URL, absolute or relative to the page
   *   (`/ws`, `ws://edge:8080/ws`, `https://lb.example/ws`)
   * @param {Options} [options]
   */
  constructor(url = '/ws', options = {}) {
    super();
    this.url = url;
    this.options = options;
    this.baseMs = options.backoff?.baseMs ?? 250;
    this.capMs = options.backoff?.capMs ?? 10000;
    /** @type {'idle'|'connecting'|'open'|'reconnecting'|'closed'} */
    this.status = 'idle';
    /** Feed status of the current connection: `live`, `stale` or null (not said). */
    this.feed = null;
    /** When the next attempt starts (ms since the epoch), while reconnecting. */
    this.retryAt = null;
    this.attempt = 0;
    this._token = options.token || null;
    // symbol -> {tick, seq (last applied; kept across a reconnect only when
    // resumed), reasons: Set, resume: {seq, ts} sent on this connection until
    // the symbol's first tick or gap of it, else null}
    this._syms = new Map();
    this._unsubPending = new Set(); // unsubscribed on this connection, not yet confirmed
    this._ws = null;
    this._timer = null;
    this._refresh = null;
    this._hintAt = null;
    this._resub = null;
    this._later = new Set(); // refused for now (unknown_symbol, edge_full): subscribed again after the hint
    this._laterTimer = null;
    this._stopped = false;
    for (const s of options.symbols || []) this._entry(s);
    if (options.autoConnect !== false) queueMicrotask(() => this.status === 'idle' && this.connect());
  }

  /**
   * Adds a listener that gets the event's `detail`.
   * @param {string} type @param {(detail: any) => void} fn
   * @returns {() => void} removes the listener
   */
  on(type, fn) {
    const h = (ev) => fn(ev.detail);
    this.addEventListener(type, h);
    return () => this.removeEventListener(type, h);
  }

  /**
   * Subscribes now if connected, and on every reconnect. Symbols already held
   * are left alone; invalid ones are ignored and returned.
   * @param {string[]} symbols @returns {string[]} the invalid ones
   */
  subscribe(symbols) {
    const fresh = [], bad = [];
    for (const s of symbols) {
      if (!SYMBOL_RE.test(s)) bad.push(s);
      else if (!this._syms.has(s)) { this._entry(s); fresh.push(s); this._unsubPending.delete(s); }
    }
    this._op('subscribe', fresh);
    return bad;
  }

  /** Unsubscribes now if connected; the symbols are not resubscribed. @param {string[]} symbols */
  unsubscribe(symbols) {
    const gone = symbols.filter((s) => this._syms.delete(s));
    if (this._ws) for (const s of gone) this._unsubPending.add(s);
    this._op('unsubscribe', gone);
  }

  /** Subscribed symbols. @returns {string[]} */
  get symbols() { return [...this._syms.keys()]; }

  /**
   * A symbol's current state: the last applied tick (null before the first),
   * and why it is stale (empty when fresh).
   * @param {string} symbol
   * @returns {{tick: Tick|null, stale: boolean, reasons: string[]}|null} null if not subscribed
   */
  quote(symbol) {
    const e = this._syms.get(symbol);
    return e ? { tick: e.tick, stale: e.reasons.size > 0, reasons: [...e.reasons] } : null;
  }

  /** Connects (again, after {@link TickfanClient#close}). */
  connect() {
    this._stopped = false;
    clearTimeout(this._timer);
    if (!this._ws) this._attempt();
  }

  /** Closes the connection (code 1000) and stops reconnecting. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    clearTimeout(this._refresh);
    const ws = this._ws;
    this._ws = null;
    if (ws) { this._lost(); ws.close(1000, 'client closed'); }
    this.retryAt = null;
    this._status('closed', {});
  }

  // ---- internals ----------------------------------------------------------

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  _status(status, detail) {
    this.status = status;
    this._emit('status', { status, attempt: this.attempt, ...detail });
  }

  _entry(s) {
    this._syms.set(s, { tick: null, seq: null, reasons: new Set(), resume: null });
  }

  /**
   * A new connection: the symbols holding a tick of an earlier one resume
   * from it (unless `resume: false`) and keep their baseline; the others take
   * the first tick of this connection as theirs.
   */
  _startResume() {
    const on = this.options.resume !== false;
    for (const e of this._syms.values()) {
      const t = e.tick;
      e.resume = on && t && Number.isSafeInteger(t.seq) && t.seq >= 0 && Number.isSafeInteger(t.ts)
        ? { seq: t.seq, ts: t.ts } : null;
      if (!e.resume) e.seq = null;
    }
  }

  _send(msg) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(msg));
  }

  /**
   * Sends `op` in messages of at most SUBSCRIBE_CHUNK symbols and about
   * OP_BYTES, a subscribe's resume entries counted, each in its symbol's op.
   */
  _op(op, symbols) {
    let chunk = [], resume = null, bytes = 0;
    for (const s of symbols) {
      const r = op === 'subscribe' ? this._syms.get(s)?.resume : null;
      // `"SYM",` in symbols, and `"SYM":{"seq":41,"ts":...},` in resume
      const cost = s.length + 3 + (r ? s.length + 4 + JSON.stringify(r).length : 0);
      if (chunk.length && (chunk.length >= SUBSCRIBE_CHUNK || bytes + cost > OP_BYTES)) {
        this._send(this._msg(op, chunk, resume));
        chunk = []; resume = null; bytes = 0;
      }
      chunk.push(s);
      if (r) (resume ??= {})[s] = r;
      bytes += cost;
    }
    if (chunk.length) this._send(this._msg(op, chunk, resume));
  }

  /** An op message; a subscribe carries the delivery options (`maxHz`, `mode`) and its resume entries. */
  _msg(op, symbols, resume) {
    const msg = { op, symbols };
    if (op === 'subscribe') {
      if (this.options.maxHz != null) msg.max_hz = this.options.maxHz;
      if (this.options.mode != null) msg.mode = this.options.mode;
      if (resume) msg.resume = resume;
    }
    return msg;
  }

  /** Adds (`on`) or removes a stale reason; emits `stale`/`fresh` on change. */
  _mark(symbol, e, reason, on) {
    if (on === e.reasons.has(reason)) return;
    if (on) e.reasons.add(reason); else e.reasons.delete(reason);
    if (e.reasons.size) this._emit('stale', { symbol, reasons: [...e.reasons] });
    else this._emit('fresh', { symbol });
  }

  async _attempt() {
    this.retryAt = null;
    this._status('connecting', {});
    let token = this._token;
    if (this.options.getToken) {
      try { token = this._token = await this.options.getToken(); } catch (err) {
        return this._retry({ reason: 'getToken failed: ' + err });
      }
      if (this._stopped) return;
    }
    const u = new URL(this.url, globalThis.location?.href);
    if (u.protocol === 'http:' || u.protocol === 'https:') u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    // A subprotocol value must be an HTTP token (RFC 6455 4.1); a JWT is.
    const asProtocol = token && /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/.test(token);
    if (token && !asProtocol) u.searchParams.set('token', token);
    u.searchParams.set('reject', 'close'); // refusals as close frames we can read
    const WS = this.options.WebSocket || globalThis.WebSocket;
    let ws;
    try {
      ws = this._ws = asProtocol ? new WS(u.href, ['tickfan', `tickfan.bearer.${token}`]) : new WS(u.href);
    } catch (err) {
      return this._retry({ reason: String(err) });
    }
    // An edge admitting a reject=close client sends the feed status at once;
    // one refusing in band sends only the close. So the connection counts as
    // open at its first frame (confirmMs after the upgrade: older edges).
    let upgraded = false, openedAt = 0, confirmTimer = null;
    const confirm = () => {
      if (openedAt || ws !== this._ws) return;
      clearTimeout(confirmTimer);
      openedAt = Date.now();
      this.feed = null;
      for (const [s, e] of this._syms) this._mark(s, e, 'feed', false);
      this._status('open', {});
      this._scheduleRefresh();
    };
    ws.onopen = () => {
      if (ws !== this._ws) return;
      upgraded = true;
      this._unsubPending.clear(); // a new session holds only what we subscribe now
      this._startResume();
      this._op('subscribe', this.symbols);
      confirmTimer = setTimeout(confirm, this.options.confirmMs ?? 1000);
    };
    ws.onmessage = (ev) => {
      if (ws !== this._ws) return;
      confirm();
      this._frame(ev.data);
    };
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._ws = null;
      clearTimeout(confirmTimer);
      clearTimeout(this._refresh);
      if (openedAt) this._lost();
      if (this._stopped) return;
      if (openedAt && Date.now() - openedAt >= (this.options.stableMs ?? 5000)) this.attempt = 0;
      this._retry({ code: ev.code, reason: ev.reason, upgraded, opened: !!openedAt });
    };
  }

  /** The connection is gone: every symbol with data is stale until its next tick. */
  _lost() {
    this.feed = null;
    for (const [s, e] of this._syms) if (e.tick) this._mark(s, e, 'disconnected', true);
  }

  /** Schedules the next attempt after a failed attempt or a lost connection. */
  _retry({ code, reason = '', upgraded = false, opened = false }) {
    let delay, why = reason;
    const jitter = () => backoffDelay(this.attempt++, this.baseMs, this.capMs);
    if (code === CLOSE_TRY_AGAIN_LATER || code === CLOSE_UNAUTHORIZED) {
      // Refused in band: the reason is {"error":...,"retry_after_ms":N}.
      let r = {};
      try { r = JSON.parse(reason); } catch (_) { /* not JSON */ }
      why = r.error || reason;
      const retryAfter = Number(r.retry_after_ms);
      delay = (code === CLOSE_TRY_AGAIN_LATER && retryAfter > 0 ? retryAfter : 0) + jitter();
      if (code === CLOSE_UNAUTHORIZED) this._emit('error', { code: 'unauthorized', message: why, symbols: [] });
    } else if (this._hintAt != null) {
      delay = Math.max(0, this._hintAt - Date.now()) + backoffDelay(0, this.baseMs, this.capMs);
    } else if (!upgraded) {
      // Failed before the upgrade: down, or an HTTP refusal we cannot read.
      delay = (this.options.rejectFloorMs ?? 1000) + jitter();
      why = why || 'connection failed';
    } else {
      delay = jitter();
      why = why || (opened ? 'connection lost' : 'connection failed');
    }
    this._hintAt = null;
    this.retryAt = Date.now() + delay;
    this._status('reconnecting', { delayMs: delay, retryAt: this.retryAt, code, reason: why });
    this._timer = setTimeout(() => this._attempt(), delay);
  }

  _scheduleRefresh(exp = this._token && jwtExp(this._token)) {
    clearTimeout(this._refresh);
    if (!exp || !this.options.getToken) return;
    const lead = this.options.refreshLeadMs ?? 30000;
    this._refresh = setTimeout(async () => {
      try {
        const token = await this.options.getToken();
        this._token = token;
        this._send({ op: 'auth', token });
      } catch (err) {
        this._emit('error', { code: 'token_refresh', message: String(err), symbols: [] });
      }
    }, Math.max(1000, exp * 1000 - lead - Date.now()));
  }

  _frame(data) {
    let m;
    try { m = JSON.parse(data); } catch (_) { return; }
    switch (m.type) {
      case 'ticks': return this._ticks(m.ticks || []);
      case 'gap': {
        const e = this._syms.get(m.symbol);
        if (!e) return;
        e.resume = null; // the edge answered the resume (beyond its window: a snapshot follows)
        this._emit('gap', { symbol: m.symbol, from_seq: m.from_seq, to_seq: m.to_seq });
        return this._mark(m.symbol, e, 'gap', true);
      }
      case 'status':
        this.feed = m.feed;
        this._emit('feed', { feed: m.feed });
        for (const [s, e] of this._syms) this._mark(s, e, 'feed', m.feed === 'stale');
        return;
      case 'reconnect': {
        const afterMs = Math.max(0, Number(m.after_ms) || 0);
        this._hintAt = Date.now() + afterMs;
        return this._emit('hint', { afterMs, at: this._hintAt });
      }
      case 'subscribed': case 'unsubscribed':
        if (m.type === 'unsubscribed') for (const s of m.symbols || []) this._unsubPending.delete(s);
        return this._emit(m.type, { symbols: m.symbols || [] });
      case 'authenticated':
        this._scheduleRefresh(m.exp);
        return this._emit('authenticated', { exp: m.exp });
      case 'error': {
        const symbols = Array.isArray(m.symbols) ? m.symbols : [];
        // Without retry_after_ms, `unknown_symbol` is a notice, not a refusal:
        // the subscription holds, but the topic has no tick of these symbols
        // (their partitions were read and none came). Keep them subscribed,
        // ask nothing again: a first tick, if one ever comes, arrives as a
        // snapshot.
        if (m.code === 'unknown_symbol' && m.retry_after_ms === undefined)
          return this._emit('unknown', { symbols: symbols.filter((s) => this._syms.has(s)) });
        // Rejected symbols (invalid, not entitled, over the cap) would only be
        // rejected again on every reconnect: drop them.
        if (['invalid_symbol', 'not_entitled', 'too_many_symbols'].includes(m.code))
          for (const s of symbols) this._syms.delete(s);
        // The edge ignored a whole subscribe for its resume (which one, it
        // does not say): subscribe the whole set again (idempotent) without
        // resume; the first tick of the connection is then the baseline of
        // the symbols that were waiting for theirs.
        if (m.code === 'bad_resume') {
          for (const e of this._syms.values()) if (e.resume) { e.resume = null; e.seq = null; }
          this._op('subscribe', this.symbols);
        }
        // An op over --control-rate was ignored: resubscribe everything (idempotent) a second later.
        if (m.code === 'rate_limited' && !this._resub) {
          this._resub = setTimeout(() => {
            this._resub = null;
            this._op('subscribe', this.symbols);
            this._op('unsubscribe', [...this._unsubPending]);
          },
            1000 + backoffDelay(0, this.baseMs, this.capMs));
        }
        // The edge will take these later (it has seen no tick of them yet, or
        // it is full): ask again after its retry_after_ms plus jitter.
        if (['unknown_symbol', 'edge_full'].includes(m.code)) {
          for (const s of symbols) if (this._syms.has(s)) this._later.add(s);
          if (this._later.size && !this._laterTimer) {
            const wait = Math.max(0, Number(m.retry_after_ms) || 1000);
            this._laterTimer = setTimeout(() => {
              this._laterTimer = null;
              const again = [...this._later].filter((s) => this._syms.has(s));
              this._later.clear();
              this._op('subscribe', again);
            }, wait + backoffDelay(0, this.baseMs, this.capMs));
          }
        }
        return this._emit('error', { code: m.code, message: m.message || '', symbols });
      }
      default: // unknown frame types are ignored, as the protocol asks
    }
  }

  _ticks(ticks) {
    const receivedAt = Date.now(), applied = [];
    for (const t of ticks) {
      const e = this._syms.get(t.symbol);
      if (!e) continue; // unsubscribed meanwhile
      // e.seq is null until the first tick of this connection (the baseline),
      // unless the symbol resumed: then it is the last seq of the earlier one
      if (!t.snapshot && e.seq != null && !(t.seq > e.seq)) continue; // not newer
      e.tick = t;
      e.seq = t.seq;
      e.resume = null;
      applied.push(t);
      this._emit(t.snapshot ? 'snapshot' : 'tick', { symbol: t.symbol, tick: t, receivedAt });
      this._mark(t.symbol, e, 'gap', false);
      this._mark(t.symbol, e, 'disconnected', false);
    }
    if (applied.length) this._emit('ticks', { ticks: applied, receivedAt });
  }
}
