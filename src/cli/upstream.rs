//! Flags of upstream (Python) Onionbalance that mean nothing here but must still be
//! accepted, so that upstream's wrappers, units and habits keep working.

/// Accepts upstream's `--hs-version v3`; anything else is a usage error saying why.
pub(crate) fn parse_hs_version(s: &str) -> Result<String, String> {
    if s.eq_ignore_ascii_case("v3") {
        Ok("v3".to_owned())
    } else {
        Err(format!(
            "{s:?}: only v3 onion services are supported (v2 was removed from Tor in 2021); \
             give --hs-version v3 or leave the flag out"
        ))
    }
}

/// Accepts a backend's service target as tor's `HiddenServicePort` takes it: `ADDR:PORT`,
/// a bare `PORT`, or `unix:PATH`.
pub(crate) fn parse_service_target(s: &str) -> Result<String, String> {
    if crate::config::is_valid_service_target(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a service target: give ADDR:PORT (e.g. 127.0.0.1:8080), PORT, or \
             unix:PATH"
        ))
    }
}
