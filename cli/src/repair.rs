use crate::address::Target;
use anyhow::Result;
use std::path::PathBuf;
pub fn break_lease(_t: &Target, _y: bool, _json: bool) -> Result<u8> {
    anyhow::bail!("not yet")
}
pub fn sweep(_r: Option<&str>, _c: &[PathBuf], _d: bool, _json: bool) -> Result<u8> {
    anyhow::bail!("not yet")
}
