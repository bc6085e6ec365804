//! E. Commit latency with round trips: one-row autocommits through a loopback proxy
//! that delays every request by a fixed time (0, 5, 20 ms), as a real account's
//! network would. Per commit: the requests in sequence (rounds at the proxy), the
//! HTTP requests and the time.

use super::*;
use cpu::{Clocks, CpuSpent};
use http_proxy::HttpProxy;

/// What one timed step cost at the proxy.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Step {
    pub(super) time: Duration,
    /// Requests in sequence (see `ProxyCounts::rounds`).
    pub(super) rounds: u64,
    /// HTTP requests forwarded by the proxy.
    pub(super) http: u64,
    /// HTTP requests the Azure SDK counted sending (should equal `http`).
    pub(super) sdk_http: u64,
}

/// Run `f`, timed and counted at `proxy`.
pub(super) fn step<T>(proxy: &HttpProxy, f: impl FnOnce() -> T) -> (T, Step) {
    let (rounds, http, sdk) = (proxy.counts.rounds(), forwarded(proxy), http_now());
    let t = Instant::now();
    let value = f();
    let time = t.elapsed();
    let s = Step {
        time,
        rounds: proxy.counts.rounds() - rounds,
        http: forwarded(proxy) - http,
        sdk_http: http_now() - sdk,
    };
    (value, s)
}

fn forwarded(proxy: &HttpProxy) -> u64 {
    proxy.counts.forwarded.load(Ordering::SeqCst)
}

/// A proxy in front of `azurite`, and an area (a fresh container) whose remote goes
/// through it.
pub(super) fn proxied(azurite: &azurite::Azurite) -> (HttpProxy, Area) {
    let proxy = HttpProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], azurite.port)));
    let mut area = Area::new(Kind::Azurite, Some(azurite));
    let container = area
        .azure
        .as_ref()
        .expect("an Azure area")
        .url()
        .container();
    area.remote = format!(
        "http://{}/{}/{container}?{}",
        proxy.addr,
        azurite::DEV_ACCOUNT,
        azurite::account_sas("rwdlac")
    );
    (proxy, area)
}

/// Section E at one added delay.
pub(super) struct LatencyRow {
    pub(super) delay_ms: u64,
    pub(super) size: u64,
    /// The first commit on a connection opened with no other open in the process.
    pub(super) first: Step,
    /// The commits after it on the same connection.
    pub(super) steady: Vec<Step>,
    /// CPU over all the steady commits.
    pub(super) cpu: CpuSpent,
}

/// E: build a `mib` MiB database through the proxy (no delay), then per delay a
/// fresh connection's first one-row autocommit and `n` more.
pub(super) fn latency(azurite: &azurite::Azurite, plan: &Plan, start: Instant, out: &mut Results) {
    let (mib, n) = plan.e;
    let (proxy, area) = proxied(azurite);
    let blob = format!("latency-{mib}m.db");
    progress(start, &format!("E build {mib} MiB through the proxy"));
    drop(build_blob(&area, &blob, mib, "delta", "", out));
    out.builds.pop(); // the same as section A's build
    let pid = Some(azurite.pid());
    for &delay_ms in &plan.delays {
        progress(
            start,
            &format!("E {delay_ms} ms per request: 1 + {n} autocommits"),
        );
        proxy.set_delay(Duration::from_millis(delay_ms));
        let w = open(&area.uri("w", &blob, ""));
        // The open's freshness check and first read are not the commit's.
        max_id(&w);
        let ((), first) = step(&proxy, || one_row(&w));
        let clocks = Clocks::now(Some(&proxy), pid);
        let steady = (0..n).map(|_| step(&proxy, || one_row(&w)).1).collect();
        let cpu = clocks.spent(Some(&proxy), pid);
        drop(w);
        out.latency.push(LatencyRow {
            delay_ms,
            size: size_of(&area.cache("w", &blob)),
            first,
            steady,
            cpu,
        });
    }
}

/// The table of section E.
pub(super) fn latency_table(w: &mut String, rows: &[LatencyRow]) {
    let _ = writeln!(
        w,
        "\n## E. One-row autocommit with a round trip per request (Azurite behind a delaying proxy)\n"
    );
    header(w, "| added delay | database | commit | requests in sequence | HTTP (proxy) | HTTP (SDK) | ms (median) | p90 | own CPU ms | Azurite CPU ms |");
    for row in rows {
        let n = row.steady.len().max(1) as f64;
        let sum = |f: fn(&Step) -> u64| row.steady.iter().map(f).sum::<u64>() as f64 / n;
        let times: Vec<f64> = row.steady.iter().map(|s| s.time.as_secs_f64()).collect();
        let per_commit = |d: Duration| ms(d.as_secs_f64() * 1e3 / n);
        let _ = writeln!(
            w,
            "| {} ms | {} | first after open | {} | {} | {} | {} | | | |",
            row.delay_ms,
            bytes(row.size),
            row.first.rounds,
            row.first.http,
            row.first.sdk_http,
            ms(row.first.time.as_secs_f64() * 1e3),
        );
        let _ = writeln!(
            w,
            "| {} ms | {} | next {} (mean) | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
            row.delay_ms,
            bytes(row.size),
            row.steady.len(),
            sum(|s| s.rounds),
            sum(|s| s.http),
            sum(|s| s.sdk_http),
            ms(percentile(&times, 0.5) * 1e3),
            ms(percentile(&times, 0.9) * 1e3),
            per_commit(row.cpu.own),
            row.cpu.azurite.map_or("?".into(), per_commit),
        );
    }
    let _ = writeln!(
        w,
        "\nrequests in sequence: rounds at the proxy (a request that starts while none is \
         in flight starts a round; the staged chunks in parallel are one). HTTP (proxy): \
         requests forwarded; HTTP (SDK): requests the Azure SDK counted sending. CPU per \
         commit over the steady commits; own CPU excludes the in-process proxy's threads. \
         At 0 ms the rounds can over-count (a parallel request may finish before the next \
         one arrives). Goal (issue 11): at most 2 in sequence and 2.5 HTTP per steady \
         commit, at most 3 in sequence for the first."
    );
}
