//! Sweeping what killed processes leave behind, removing only files whose owner is
//! provably gone.
//!
//! * Local remote: upload temps, staged blocks, companion temps
//!   ([`crate::backend::local::LocalBackend::sweep`]: proved by taking the lease).
//! * Azure: nothing to remove. Uncommitted staged blocks are not files; Azure
//!   discards them at the blob's next Put Block List or after 7 days.
//! * A cache's directory ([`sweep_cache`], src/leftovers.rs, which the store also
//!   runs at open): download side files of dead pids, sidecar and manifest temps
//!   nobody has open. Hot journals are never touched (SQLite recovers from them).

/// The report a sweep gives (src/backend/inspect.rs, beside the local backend's
/// sweep that fills it in).
pub use crate::backend::inspect::{Leftover, Skipped, SweepReport};
use crate::config::RemoteSpec;
use crate::error::Result;
/// Also what the store runs at open, so it lives below the store (src/leftovers.rs).
pub use crate::leftovers::sweep_cache;

/// Sweep the remote's leftovers.
pub fn sweep_remote(spec: &RemoteSpec, dry_run: bool) -> Result<SweepReport> {
    match spec {
        RemoteSpec::Local(dir) => Ok(super::local(dir)?.sweep(dry_run)?),
        #[cfg(feature = "azure")]
        RemoteSpec::Azure(_) => Ok(SweepReport {
            notes: vec![
                "Azure keeps no files to sweep: uncommitted staged blocks are discarded by \
                 the blob's next Put Block List, or by Azure after 7 days"
                    .into(),
            ],
            ..SweepReport::default()
        }),
        #[cfg(any(test, feature = "testing"))]
        RemoteSpec::Memory(_) => Ok(SweepReport::default()),
    }
}
