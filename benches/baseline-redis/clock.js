'use strict';
// Microsecond wall clock: process.hrtime.bigint() anchored to Date.now().
//
// Date.now() only has millisecond resolution, so a naive anchor can be off by
// up to 1 ms, and two processes (publisher, probe) could disagree by that much,
// which is larger than the latencies we want to measure. So at start-up we spin
// until Date.now() steps to a new millisecond m: that edge is wall time
// m * 1000 µs exactly, and it lies between the hrtime taken just before the
// previous Date.now() call and the hrtime taken just after the one that saw m.
// We do this a few times (about 1 ms each) and keep the narrowest bracket, so
// a preemption during one try does not matter; the anchor is then good to a
// few µs, and two processes on one machine agree to about that.

const hr = process.hrtime.bigint;

function anchorOnce() {
  let h0 = hr();
  let ms = Date.now();
  let h1 = hr();
  const first = ms;
  let prevH0 = h0;
  while (ms === first) {
    prevH0 = h0;
    h0 = hr();
    ms = Date.now();
    h1 = hr();
  }
  return { ms, lo: prevH0, hi: h1 };
}

function anchor(tries = 5) {
  let best = null;
  for (let i = 0; i < tries; i++) {
    const a = anchorOnce();
    if (!best || a.hi - a.lo < best.hi - best.lo) best = a;
  }
  return {
    wallUs: BigInt(best.ms) * 1000n,
    hr: (best.lo + best.hi) / 2n,
    uncertaintyNs: Number(best.hi - best.lo) / 2,
  };
}

const a = anchor();

/** Microseconds since the Unix epoch, as a BigInt. */
function nowUsBig() {
  return a.wallUs + (hr() - a.hr) / 1000n;
}

/** Microseconds since the Unix epoch, as a Number (exact until year 2255). */
function nowUs() {
  return Number(nowUsBig());
}

module.exports = { nowUs, nowUsBig, anchorUncertaintyNs: a.uncertaintyNs };
