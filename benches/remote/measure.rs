//! What a step cost (managedblob's counters and the HTTP requests the Azure SDK
//! sent) and timed samples of steps.

use super::*;

// HTTP requests, counted from the Azure SDK's transport policy, which logs one debug
// event per request it sends (SDK retries are off in managedblob).

pub(super) static HTTP: AtomicU64 = AtomicU64::new(0);

pub(super) struct HttpCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for HttpCounter {
    fn on_event(
        &self,
        _event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        HTTP.fetch_add(1, Ordering::Relaxed);
    }
}

pub(super) fn count_http_requests() {
    use tracing_subscriber::prelude::*;
    let only_transport = tracing_subscriber::filter::Targets::new().with_target(
        "typespec_client_core::http::policies::transport",
        tracing::Level::DEBUG,
    );
    let _ = tracing_subscriber::registry()
        .with(HttpCounter.with_filter(only_transport))
        .try_init();
}

pub(super) fn http_now() -> u64 {
    HTTP.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------
// Costs.

/// What one step cost, from the counters of `PRAGMA managedblob_status`.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cost {
    pub(super) requests: u64,
    pub(super) http: u64,
    pub(super) up: u64,
    pub(super) down: u64,
    pub(super) retries: u64,
}

impl Cost {
    /// The counters of the store behind `c`, and the process's HTTP count.
    pub(super) fn of(c: &Connection) -> Cost {
        let s = status(c);
        let r = &s["requests"];
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        Cost {
            requests: n("total"),
            http: http_now(),
            up: n("bytes_up"),
            down: n("bytes_down"),
            retries: n("retries"),
        }
    }

    /// Before the first open of a store: its counters start at zero.
    pub(super) fn fresh() -> Cost {
        Cost {
            http: http_now(),
            ..Cost::default()
        }
    }

    pub(super) fn since(self, before: Cost) -> Cost {
        Cost {
            requests: self.requests - before.requests,
            http: self.http - before.http,
            up: self.up - before.up,
            down: self.down - before.down,
            retries: self.retries - before.retries,
        }
    }

    pub(super) fn plus(self, o: Cost) -> Cost {
        Cost {
            requests: self.requests + o.requests,
            http: self.http + o.http,
            up: self.up + o.up,
            down: self.down + o.down,
            retries: self.retries + o.retries,
        }
    }
}

/// Timed samples of one step with their costs.
#[derive(Default)]
pub(super) struct Samples {
    pub(super) times: Vec<f64>,
    pub(super) total: Cost,
}

impl Samples {
    pub(super) fn push(&mut self, t: Duration, cost: Cost) {
        self.times.push(t.as_secs_f64());
        self.total = self.total.plus(cost);
    }
    pub(super) fn n(&self) -> u64 {
        self.times.len().max(1) as u64
    }
    pub(super) fn median_ms(&self) -> f64 {
        percentile(&self.times, 0.5) * 1e3
    }
    pub(super) fn p90_ms(&self) -> f64 {
        percentile(&self.times, 0.9) * 1e3
    }
    /// Mean cost per sample.
    pub(super) fn per(&self) -> Cost {
        let n = self.n();
        let div = |v: u64| (v as f64 / n as f64).round() as u64;
        Cost {
            requests: div(self.total.requests),
            http: div(self.total.http),
            up: div(self.total.up),
            down: div(self.total.down),
            retries: self.total.retries,
        }
    }
    /// Mean requests per sample, to one decimal (not rounded away).
    pub(super) fn requests_per(&self) -> f64 {
        self.total.requests as f64 / self.n() as f64
    }
    pub(super) fn http_per(&self) -> f64 {
        self.total.http as f64 / self.n() as f64
    }
}

pub(super) fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}
