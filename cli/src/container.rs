//! `create-container`: the remote itself, before a first open can create a blob in it
//! (the VFS never creates an Azure container: a mistyped URL fails instead).

use anyhow::{anyhow, Result};
use managedblob::internal::config::parse_remote;
use managedblob::internal::ops::{self, Created};
use serde_json::json;

use crate::output::print_json;

pub fn create(remote: &str, json: bool) -> Result<u8> {
    let spec = parse_remote(remote).map_err(|why| anyhow!("--remote is invalid: {why}"))?;
    let (name, outcome) = ops::create_container(&spec)?;
    let created = outcome == Created::Created;
    if json {
        print_json(&json!({ "remote": name, "created": created }));
    } else if created {
        println!("created {name}");
    } else {
        println!("{name} already exists: nothing to do");
    }
    Ok(0)
}
