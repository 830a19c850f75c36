//! ACME profile names (draft-ietf-acme-profiles): the form a name must
//! have wherever one is given (`[[cas]] acme_profile`, a name's override).

/// Longest profile name accepted.
pub const MAX_PROFILE_LEN: usize = 64;

/// Checks the form of a profile name: 1–64 printable ASCII characters
/// without spaces (profile names are directory keys such as `classic`,
/// `tlsserver`, `shortlived`). Returns it trimmed of nothing: a name with
/// surrounding spaces is refused, not repaired.
pub fn check_acme_profile_name(name: &str) -> Result<&str, String> {
    if name.is_empty() {
        return Err("must not be empty (leave it out for the CA's default profile)".into());
    }
    if name.len() > MAX_PROFILE_LEN {
        return Err(format!("longer than {MAX_PROFILE_LEN} characters"));
    }
    if !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(
            "must be printable ASCII without spaces, as in the CA directory's meta.profiles".into(),
        );
    }
    Ok(name)
}
