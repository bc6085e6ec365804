//! CPU time beside wall time: this process's own (all its threads, less the
//! in-process proxy's), and Azurite's (from `/proc/<pid>/stat`). On loopback
//! Azurite's CPU per request, not ours, dominates wall time; these say which it is.

use super::*;
use http_proxy::HttpProxy;

/// The clocks at one moment.
pub(super) struct Clocks {
    process: cpu_time::ProcessTime,
    proxy: Duration,
    azurite: Option<Duration>,
}

/// CPU spent between two moments.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct CpuSpent {
    /// This process, less the proxy's threads.
    pub(super) own: Duration,
    /// The loopback proxy's threads (in this process, not ours to count).
    pub(super) proxy: Duration,
    /// The Azurite process; `None` where it is not involved or not readable.
    pub(super) azurite: Option<Duration>,
}

impl Clocks {
    /// Now; the proxy's and Azurite's clocks where given.
    pub(super) fn now(proxy: Option<&HttpProxy>, azurite_pid: Option<u32>) -> Clocks {
        Clocks {
            process: cpu_time::ProcessTime::now(),
            proxy: proxy.map_or(Duration::ZERO, |p| p.counts.cpu()),
            azurite: azurite_pid.and_then(process_cpu),
        }
    }

    /// What was spent since this moment (the same proxy and Azurite as given here).
    pub(super) fn spent(&self, proxy: Option<&HttpProxy>, azurite_pid: Option<u32>) -> CpuSpent {
        let process = self.process.elapsed();
        let proxy = proxy.map_or(Duration::ZERO, |p| p.counts.cpu()) - self.proxy;
        let azurite = match (self.azurite, azurite_pid.and_then(process_cpu)) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before)),
            _ => None,
        };
        CpuSpent {
            own: process.saturating_sub(proxy),
            proxy,
            azurite,
        }
    }
}

/// User + system CPU time of process `pid` (all its threads), from /proc; `None`
/// where /proc is not there.
pub(super) fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// Clock ticks per second of /proc's times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}
