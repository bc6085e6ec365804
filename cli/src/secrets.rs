//! The last line of defence for "no secret printed": every line this tool prints
//! about a failure (its own errors, the library's, the argument parser's) goes
//! through the library's one redaction, [`managedblob::internal::redact::redact`], which
//! removes SAS signatures, keys and tokens in any percent-encoding (a SAS inside the
//! `file:` URI of a cache open included) and the secret values of the environment.

/// `text` with every secret replaced by `<redacted>`.
pub fn scrub(text: &str) -> String {
    managedblob::internal::redact::redact(text)
}
