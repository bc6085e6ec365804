use crate::address::Target;
use anyhow::Result;
use std::path::Path;
pub enum Replace {
    Never,
    IfMatch(String),
    Always,
}
pub fn pull(_t: &Target, _json: bool) -> Result<u8> {
    anyhow::bail!("not yet")
}
pub fn export(_t: &Target, _o: &Path, _f: bool, _json: bool) -> Result<u8> {
    anyhow::bail!("not yet")
}
pub fn push(_t: &Target, _o: &Path, _r: &Replace, _json: bool) -> Result<u8> {
    anyhow::bail!("not yet")
}
