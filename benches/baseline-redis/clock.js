'use strict';
// Microsecond wall clock: process.hrtime.bigint() anchored to Date.now().
//
// Date.now() only has millisecond resolution, so a naive anchor can be off by
// up to 1 ms, and two processes (publisher, probe) could disagree by that much,
// which is larger than the latencies we want to measure. We therefore wait (at
// most ~1 ms, once, at start-up) for Date.now() to step to a new millisecond
// and take the hrtime at that edge: the anchor is then good to a few µs.

function anchor() {
  const first = Date.now();
  let ms = first;
  let hr = process.hrtime.bigint();
  while (ms === first) {
    hr = process.hrtime.bigint();
    ms = Date.now();
  }
  return { wallUs: BigInt(ms) * 1000n, hr };
}

const a = anchor();

/** Microseconds since the Unix epoch, as a BigInt. */
function nowUsBig() {
  return a.wallUs + (process.hrtime.bigint() - a.hr) / 1000n;
}

/** Microseconds since the Unix epoch, as a Number (exact until year 2255). */
function nowUs() {
  return Number(nowUsBig());
}

module.exports = { nowUs, nowUsBig };
