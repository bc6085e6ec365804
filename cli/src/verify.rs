use crate::address::Target;
use anyhow::Result;
pub fn run(_t: &Target, _json: bool) -> Result<u8> {
    anyhow::bail!("not yet")
}
