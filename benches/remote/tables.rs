//! The markdown tables printed at the end of a run.

use super::*;

// Formatting.

pub(super) fn bytes(n: u64) -> String {
    if n < 10 * 1024 {
        format!("{n} B")
    } else if n < 10 * MIB {
        format!("{:.0} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    }
}

pub(super) fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Requests per step, with the HTTP count in parentheses on Azurite.
pub(super) fn reqs(kind: Kind, requests: f64, http: f64) -> String {
    let num = |v: f64| {
        if v.fract() == 0.0 || v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    };
    match kind {
        Kind::Local => num(requests),
        Kind::Azurite => format!("{} ({})", num(requests), num(http)),
    }
}

pub(super) fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Progress on stderr, with the time since the start.
pub(super) fn progress(start: Instant, what: &str) {
    eprintln!("[{:6.1}s] {what}", start.elapsed().as_secs_f64());
}

// Tables.

/// A table's header row (`| a | b |`) and its separator.
pub(super) fn header(w: &mut String, columns: &str) {
    let _ = writeln!(w, "{columns}");
    let _ = writeln!(w, "{}|", "|---".repeat(columns.matches('|').count() - 1));
}

/// "N at M MiB, ...": sample counts per database size.
pub(super) fn at_sizes(counts: impl Iterator<Item = (usize, u64)>) -> String {
    counts
        .map(|(n, mib)| format!("{n} at {mib} MiB"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One table of section A: per row, the step `step` picks (its samples and the bytes
/// it moved `way`), with the full/delta ratio of those bytes.
pub(super) fn delta_table(
    w: &mut String,
    rows: &[DeltaRow],
    way: &str,
    step: fn(&DeltaRow) -> (&Samples, u64),
) {
    header(
        w,
        &format!(
            "| backend | database | sync | ms (median) | requests (HTTP) | bytes {way} | full/delta bytes |"
        ),
    );
    for row in rows {
        let (samples, moved) = step(row);
        let delta_moved = rows
            .iter()
            .find(|d| d.kind == row.kind && d.mib == row.mib && d.mode == "delta")
            .map_or(0, |d| step(d).1);
        let ratio = if row.mode == "full" && delta_moved > 0 {
            format!("{:.0}", moved as f64 / delta_moved as f64)
        } else {
            String::new()
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.kind.name(),
            bytes(row.size),
            row.mode,
            ms(samples.median_ms()),
            reqs(row.kind, samples.requests_per(), samples.http_per()),
            bytes(moved),
            ratio
        );
    }
}

pub(super) fn tables(plan: &Plan, r: &Results, azurite_version: &str) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "# managedblob remote costs: local directory and Azurite{}\n",
        if plan.quick { " (quick run)" } else { "" }
    );
    let _ = writeln!(
        w,
        "requests: managedblob's counted remote calls; (HTTP): the HTTP requests the \
         Azure SDK sent. Azurite {azurite_version} on loopback.\n"
    );

    if !r.delta.is_empty() {
        let _ = writeln!(w, "## A. One-row commit, delta against full\n");
        delta_table(w, &r.delta, "up", |d| (&d.commit, d.commit.per().up));
        let _ = writeln!(
            w,
            "\n## A. Reader's reopen after another host's one-row commit\n"
        );
        delta_table(w, &r.delta, "down", |d| (&d.reopen, d.reopen.per().down));
        let _ = writeln!(
            w,
            "\nSamples: {}.",
            at_sizes(
                r.delta
                    .iter()
                    .filter(|d| d.mode == "delta" && d.kind == Kind::Local)
                    .map(|d| (d.commit.times.len(), d.mib))
            )
        );
    }

    if !r.opens.is_empty() {
        let _ = writeln!(w, "\n## B. Open: warm, cold, and the raw transfer\n");
        header(w, "| backend | database | warm ms | warm requests (HTTP) | cold ms | cold requests (HTTP) | cold bytes down | lazy ms | lazy requests (HTTP) | lazy bytes down | raw ms (no fsync) | raw HTTP | cold/raw | raw + fsync ms | cold/(raw + fsync) |");
        for row in &r.opens {
            let raw_http = match row.kind {
                Kind::Local => "(file copy)".to_string(),
                Kind::Azurite => format!("{:.0}", row.raw.http_per()),
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.2} |",
                row.kind.name(),
                bytes(row.size),
                ms(row.warm.median_ms()),
                reqs(row.kind, row.warm.requests_per(), row.warm.http_per()),
                ms(row.cold.median_ms()),
                reqs(row.kind, row.cold.requests_per(), row.cold.http_per()),
                bytes(row.cold.per().down),
                ms(row.lazy.median_ms()),
                reqs(row.kind, row.lazy.requests_per(), row.lazy.http_per()),
                bytes(row.lazy.per().down),
                ms(row.raw.median_ms()),
                raw_http,
                row.cold.median_ms() / row.raw.median_ms(),
                ms(row.raw_synced.median_ms()),
                row.cold.median_ms() / row.raw_synced.median_ms()
            );
        }
        let _ = writeln!(
            w,
            "\nMedians of {} rounds (warm, cold, lazy, raw interleaved); open includes the first read (`SELECT max(id)`); lazy: a cold open with `fetch=lazy` (the block list, the first chunk, the chunks `max(id)` reads). raw: a file copy (local) or one SDK download into a file (Azurite); raw + fsync adds the fsync of that file, the reference for the cold open, which leaves its cache durable.",
            at_sizes(
                r.opens
                    .iter()
                    .filter(|o| o.kind == Kind::Local)
                    .map(|o| (o.warm.times.len(), o.mib))
            )
        );
    }

    if !r.commits.is_empty() {
        let _ = writeln!(w, "\n## C. Commit latency and batching\n");
        header(w, "| backend | database | one-row autocommit ms (median) | p90 | requests (HTTP) per commit | bytes up per commit |");
        for row in &r.commits {
            let _ = writeln!(
                w,
                "| {} | {} → {} | {} | {} | {} | {} |",
                row.kind.name(),
                bytes(row.size.0),
                bytes(row.size.1),
                ms(row.auto.median_ms()),
                ms(row.auto.p90_ms()),
                reqs(row.kind, row.auto.requests_per(), row.auto.http_per()),
                bytes(row.auto.per().up)
            );
        }
        let _ = writeln!(w);
        header(
            w,
            &format!(
                "| backend | {n} commits as | total s | ms per commit | requests (HTTP) | bytes up |",
                n = r.commits[0].commits
            ),
        );
        for row in &r.commits {
            let n = row.commits as f64;
            let _ = writeln!(
                w,
                "| {} | autocommits | {:.2} | {} | {} | {} |",
                row.kind.name(),
                row.auto_total.as_secs_f64(),
                ms(row.auto_total.as_secs_f64() * 1e3 / n),
                reqs(
                    row.kind,
                    row.auto.total.requests as f64,
                    row.auto.total.http as f64
                ),
                bytes(row.auto.total.up)
            );
            let _ = writeln!(
                w,
                "| {} | one batch | {:.2} | {} | {} | {} |",
                row.kind.name(),
                row.batch_total.as_secs_f64(),
                ms(row.batch_total.as_secs_f64() * 1e3 / n),
                reqs(row.kind, row.batch.requests as f64, row.batch.http as f64),
                bytes(row.batch.up)
            );
        }
    }

    if !r.reads.is_empty() {
        let _ = writeln!(w, "\n## D. Read transactions and freshness\n");
        header(w, "| backend | point select (autocommit) | reads/s (median) | µs per read | requests (HTTP) per second | per 1000 reads |");
        for row in &r.reads {
            let secs = row.per_op * row.reads as f64;
            let per_s = |v: u64| (v as f64 / secs * 10.0).round() / 10.0;
            let _ = writeln!(
                w,
                "| {} | {} | {:.0} | {:.1} | {} | {:.3} |",
                row.kind.name(),
                row.variant,
                percentile(&row.ops, 0.5),
                row.per_op * 1e6,
                reqs(row.kind, per_s(row.cost.requests), per_s(row.cost.http)),
                row.cost.requests as f64 * 1000.0 / row.reads.max(1) as f64
            );
        }
    }

    if !r.builds.is_empty() {
        let _ = writeln!(
            w,
            "\n## Setup: building each database (one transaction, the first upload)\n"
        );
        header(
            w,
            "| backend | database | sync | s | requests (HTTP) | bytes up |",
        );
        for b in &r.builds {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.2} | {} | {} |",
                b.kind.name(),
                bytes(b.size),
                b.mode,
                b.time.as_secs_f64(),
                reqs(b.kind, b.cost.requests as f64, b.cost.http as f64),
                bytes(b.cost.up)
            );
        }
    }
    if !r.latency.is_empty() {
        latency::latency_table(w, &r.latency);
    }
    if !r.mixed.is_empty() {
        mixed::mixed_table(w, &r.mixed);
    }
    if let Some(report) = &r.speedtest1 {
        speedtest1::speedtest1_table(w, report);
    }
    if let Some(report) = &r.units {
        units::units_table(w, report);
    }
    if let Some(report) = &r.lazy {
        lazy::lazy_table(w, report);
    }
    let retries: u64 = r
        .delta
        .iter()
        .map(|d| d.commit.total.retries + d.reopen.total.retries)
        .chain(
            r.opens
                .iter()
                .map(|o| o.warm.total.retries + o.cold.total.retries),
        )
        .chain(
            r.commits
                .iter()
                .map(|c| c.auto.total.retries + c.batch.retries),
        )
        .chain(r.reads.iter().map(|d| d.cost.retries))
        .sum();
    if retries > 0 {
        let _ = writeln!(w, "\n(retries during the run: {retries})");
    }
    s
}
