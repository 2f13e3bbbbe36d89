//! What the driver and the workers exchange: a [`Request`], and the
//! [`Report`] that answers it, which merges over worker processes (latency
//! histograms travel in hdrhistogram's V2 format, base64).

use std::collections::BTreeMap;

use base64::{prelude::BASE64_STANDARD, Engine as _};
use hdrhistogram::{
    serialization::{Deserializer as HistogramReader, Serializer as _, V2Serializer},
    Histogram,
};
use serde::{Deserialize, Serialize};

/// A command to the clients (of one process, or of every worker process).
#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Request {
    /// How many clients are connected (and the last connect failure), and
    /// the counters so far.
    Status,
    /// Start the measured window: stall the slow clients, record latency,
    /// and in `storm` close and reconnect every client. `epoch_us` (wall
    /// clock) starts the per-second admission counts of every process.
    /// Counters and the clients' CPU so far.
    Measure { epoch_us: i64 },
    /// Counters, the latency since the last sample, storm progress.
    Sample,
    /// End the window: counters, the window's latency, the storm, the
    /// clients' CPU so far.
    End,
    /// Close every client: ticks per client.
    Stop,
}

/// The answer to a [`Request`]; answers of several processes merge into one.
#[derive(Serialize, Deserialize, Debug, Default)]
pub(super) struct Report {
    #[serde(default)]
    pub(super) connected: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_error: Option<String>,
    #[serde(default)]
    pub(super) totals: Totals,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) latency: Option<Hist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) storm: Option<StormReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) per_client: Option<TickRange>,
    /// User + system CPU seconds of the clients' threads so far (summed over
    /// processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) clients_cpu: Option<f64>,
}

impl Report {
    pub(super) fn merge(mut self, o: Report) -> Report {
        self.connected += o.connected;
        self.last_error = self.last_error.or(o.last_error);
        self.totals = self.totals.plus(o.totals);
        self.latency = merge(self.latency, o.latency, |a, b| a.add(&b));
        self.storm = merge(self.storm, o.storm, StormReport::add);
        self.per_client = merge(self.per_client, o.per_client, |a, b| TickRange {
            min: a.min.into_iter().chain(b.min).min(),
            max: a.max.into_iter().chain(b.max).max(),
        });
        self.clients_cpu = merge(self.clients_cpu, o.clients_cpu, |a, b| a + b);
        self
    }
}

fn merge<T>(a: Option<T>, b: Option<T>, f: impl FnOnce(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// Cumulative counts of everything the clients received.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy)]
pub(super) struct Totals {
    pub(super) ticks: u64,
    pub(super) frames: u64,
    /// Text of the messages received, as decoded (inflated when compressed).
    pub(super) bytes: u64,
    /// Bytes read from the TCP streams after the handshake: WebSocket
    /// frames as they came, headers and control frames included,
    /// compressed when permessage-deflate was negotiated.
    #[serde(default)]
    pub(super) wire_bytes: u64,
    pub(super) gaps: u64,
    /// The `conflated` counts of the ticks received: ticks the edge replaced
    /// by a newer one at the clients' request.
    #[serde(default)]
    pub(super) conflated: u64,
    /// Connections made (storm reconnects included) on which
    /// permessage-deflate was negotiated, and on which it was not.
    #[serde(default)]
    pub(super) deflate_connections: u64,
    #[serde(default)]
    pub(super) plain_connections: u64,
}

impl Totals {
    fn plus(self, o: Totals) -> Totals {
        Totals {
            ticks: self.ticks + o.ticks,
            frames: self.frames + o.frames,
            bytes: self.bytes + o.bytes,
            wire_bytes: self.wire_bytes + o.wire_bytes,
            gaps: self.gaps + o.gaps,
            conflated: self.conflated + o.conflated,
            deflate_connections: self.deflate_connections + o.deflate_connections,
            plain_connections: self.plain_connections + o.plain_connections,
        }
    }
}

/// Fewest and most ticks a client received.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy)]
pub(super) struct TickRange {
    pub(super) min: Option<u64>,
    pub(super) max: Option<u64>,
}

/// What the storm did so far.
#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub(super) struct StormReport {
    /// Clients connected and resubscribed again.
    pub(super) reconnected: u64,
    /// Clients that got a tick frame since.
    pub(super) back: u64,
    /// Successful handshakes per second since the storm.
    pub(super) admitted: Vec<u64>,
    /// Rejected handshakes by HTTP status.
    pub(super) rejected: BTreeMap<u16, u64>,
    /// Other failed attempts (refused, reset, timed out).
    pub(super) errors: u64,
    /// Per client, from the close to the first tick frame after resubscribing (µs).
    pub(super) times: Hist,
}

impl StormReport {
    fn add(mut self, o: StormReport) -> StormReport {
        self.reconnected += o.reconnected;
        self.back += o.back;
        if self.admitted.len() < o.admitted.len() {
            self.admitted.resize(o.admitted.len(), 0);
        }
        for (a, b) in self.admitted.iter_mut().zip(o.admitted) {
            *a += b;
        }
        for (status, n) in o.rejected {
            *self.rejected.entry(status).or_default() += n;
        }
        self.errors += o.errors;
        self.times = self.times.add(&o.times);
        self
    }

    pub(super) fn admitted_total(&self) -> u64 {
        self.admitted.iter().sum()
    }

    pub(super) fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// A latency histogram (µs); on the wire, hdrhistogram's V2 format in base64.
#[derive(Debug, Clone)]
pub(super) struct Hist(pub(super) Histogram<u64>);

impl Default for Hist {
    fn default() -> Hist {
        Hist(Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"))
    }
}

impl Hist {
    fn add(mut self, o: &Hist) -> Hist {
        // Value by value: a value past this one's bounds is clamped.
        for v in o.0.iter_recorded() {
            let (value, count) = (v.value_iterated_to(), v.count_at_value());
            self.0.saturating_record_n(value, count);
        }
        self
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut bytes)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_str(&BASE64_STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hist, D::Error> {
        use serde::de::Error;
        let text = String::deserialize(d)?;
        let bytes = BASE64_STANDARD.decode(text).map_err(D::Error::custom)?;
        let h = HistogramReader::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(D::Error::custom)?;
        Ok(Hist(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the workers send merges into what one process would have seen.
    #[test]
    fn reports_survive_the_wire_and_merge() {
        let report = |latencies: &[u64], admitted: Vec<u64>, status: u16, ticks: u64| {
            let mut latency = Hist::default();
            let mut times = Hist::default();
            for &v in latencies {
                latency.0.record(v).unwrap();
                times.0.record(v * 10).unwrap();
            }
            let report = Report {
                totals: Totals {
                    ticks,
                    frames: 1,
                    bytes: 10,
                    wire_bytes: 4,
                    gaps: 0,
                    conflated: 3,
                    deflate_connections: ticks,
                    plain_connections: 1,
                },
                latency: Some(latency),
                storm: Some(StormReport {
                    reconnected: 1,
                    back: 1,
                    admitted,
                    rejected: BTreeMap::from([(status, 2)]),
                    errors: 0,
                    times,
                }),
                per_client: Some(TickRange {
                    min: Some(ticks),
                    max: Some(ticks),
                }),
                clients_cpu: Some(ticks as f64 / 4.0),
                ..Report::default()
            };
            let line = serde_json::to_string(&report).unwrap();
            serde_json::from_str::<Report>(&line).unwrap()
        };
        let merged = Report::default()
            .merge(report(&[100, 200], vec![3, 1], 429, 7))
            .merge(report(&[300_000], vec![2], 503, 5));
        assert_eq!(merged.totals.ticks, 12);
        assert_eq!(merged.totals.bytes, 20);
        assert_eq!(merged.totals.conflated, 6);
        assert_eq!(merged.totals.wire_bytes, 8);
        assert_eq!(merged.totals.deflate_connections, 12);
        assert_eq!(merged.totals.plain_connections, 2);
        assert_eq!(merged.clients_cpu, Some(3.0));
        let latency = merged.latency.unwrap().0;
        assert_eq!(latency.len(), 3);
        assert!(latency.equivalent(latency.max(), 300_000));
        let storm = merged.storm.unwrap();
        assert_eq!(storm.admitted, [5, 1]);
        assert_eq!(storm.rejected, BTreeMap::from([(429, 2), (503, 2)]));
        assert_eq!((storm.reconnected, storm.back), (2, 2));
        assert_eq!(storm.times.0.len(), 3);
        let range = merged.per_client.unwrap();
        assert_eq!((range.min, range.max), (Some(5), Some(7)));
    }
}
