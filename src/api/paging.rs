//! Paging of the list endpoints: the `limit` query parameter (one range
//! and one message for every list) and the opaque cursors that walk a
//! list page by page.

use super::Problem;

/// The most items one page may hold.
const MAX_LIMIT: u64 = 1000;

/// A list's `limit` query parameter: 1 to [`MAX_LIMIT`], `default` when
/// absent.
pub(super) fn limit(raw: Option<u64>, default: u64) -> Result<u64, Problem> {
    let limit = raw.unwrap_or(default);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit {limit} is out of range 1..={MAX_LIMIT}"
        )));
    }
    Ok(limit)
}

/// Cursors are opaque to clients (base64url of a position), so the
/// position's form can change without breaking them.
pub(super) fn cursor_encode(position: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position)
}

/// The position a cursor from [`cursor_encode`] stands for.
pub(super) fn cursor_decode(cursor: &str) -> Result<String, Problem> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .ok_or_else(|| {
            Problem::bad_request(format!(
                "invalid cursor '{}'",
                cursor.chars().take(40).collect::<String>()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_stay_within_one_to_a_thousand() {
        let cases = [
            ("absent", None, Some(50)),
            ("smallest", Some(1), Some(1)),
            ("largest", Some(1000), Some(1000)),
            ("zero", Some(0), None),
            ("one too many", Some(1001), None),
        ];
        for (name, raw, want) in cases {
            match (limit(raw, 50), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{name}"),
                (Err(p), None) => assert_eq!(p.status().as_u16(), 400, "{name}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = cursor_encode("shop.example.test");
        assert_eq!(cursor_decode(&c).ok().as_deref(), Some("shop.example.test"));
        for bad in ["", "!!", "%%%"] {
            assert!(cursor_decode(bad).is_err(), "{bad:?}");
        }
    }
}
