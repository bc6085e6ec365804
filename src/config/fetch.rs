//! The lazy-fetch settings: `fetch=full|lazy` and `cache_max=<size>`
//! (docs/ARCHITECTURE.md, "Lazy fetch").

/// How much of the database the cache holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FetchMode {
    /// A whole copy: opening downloads what changed, reads never wait on the network.
    #[default]
    Full,
    /// A sparse copy: opening costs the block list and the first chunk; a read of a
    /// chunk the cache lacks fetches it (one ranged read, checked against its block id).
    Lazy,
}

impl FetchMode {
    /// The setting's value for this mode.
    pub fn name(self) -> &'static str {
        match self {
            FetchMode::Full => "full",
            FetchMode::Lazy => "lazy",
        }
    }

    pub fn parse(value: &str) -> Option<FetchMode> {
        match value.trim().to_ascii_lowercase().as_str() {
            "full" => Some(FetchMode::Full),
            "lazy" => Some(FetchMode::Lazy),
            _ => None,
        }
    }
}

/// The smallest `cache_max`: below a few chunks every read would evict.
pub const MIN_CACHE_MAX: u64 = 1 << 20;

/// Parse a size: plain bytes (`1048576`), or a number with a unit `KiB`, `MiB`,
/// `GiB`, `TiB` (powers of 1024; `K`, `M`, `G`, `T`, `KB`, ... mean the same, as in
/// `ls -h`), case-insensitive, with optional spaces between.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = (v[..split].trim(), v[split..].trim());
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(size_error(value)),
    };
    let bytes = if let Ok(n) = number.parse::<u64>() {
        n.checked_mul(1u64 << shift)
    } else {
        number
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f * (1u64 << shift) as f64)
            .filter(|f| *f < u64::MAX as f64)
            .map(|f| f as u64)
    };
    bytes.ok_or_else(|| size_error(value))
}

fn size_error(value: &str) -> String {
    format!("must be a size like 512MiB, 4GiB or a number of bytes; got {value:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units_in_any_case() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("4 gb"), Ok(4 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        for bad in [
            "",
            "MiB",
            "12 parsecs",
            "-1G",
            "1e99T",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn fetch_modes_round_trip() {
        for mode in [FetchMode::Full, FetchMode::Lazy] {
            assert_eq!(FetchMode::parse(mode.name()), Some(mode));
        }
        assert_eq!(FetchMode::parse(" LAZY "), Some(FetchMode::Lazy));
        assert_eq!(FetchMode::parse("cache"), None);
    }
}
