//! Looking for secrets in captured log output (the logging tests of the shell and of
//! the CLI include this file). A secret counts as leaked when any run of ten or more
//! letters and digits from it appears, so every encoding of it (raw, percent-encoded,
//! form-encoded, cut at a `+` or `/`) is caught.

/// Fail when any long alphanumeric run of `secret` (named `what`) is in `text`.
pub fn assert_not_in(text: &str, what: &str, secret: &str) {
    let fragments: Vec<&str> = secret
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|run| run.len() >= 10)
        .collect();
    assert!(
        !fragments.is_empty(),
        "{what} has no run long enough to look for"
    );
    for run in fragments {
        assert!(!text.contains(run), "{what} appears in the log output");
    }
}

/// The decoded `sig` of a SAS query string (`sv=...&sig=<percent-encoded>`).
pub fn sas_signature(sas: &str) -> String {
    url::form_urlencoded::parse(sas.trim_start_matches('?').as_bytes())
        .find(|(key, _)| key == "sig")
        .map(|(_, value)| value.into_owned())
        .expect("a SAS with a sig")
}
