//! The acknowledgement of acked delivery: the one-frame message a collector sends back to a
//! publisher to say which of its session's messages are settled (`docs/wire-format.md`,
//! "Acknowledged delivery").

use serde::{Deserialize, Serialize};

use super::error::DecodeError;
use super::header::FORMAT_VERSION;

/// A collector's acknowledgement for one publisher session: every message of `session` whose
/// `seq` is below `through` is settled, stored durably or refused for good; `refused` of them
/// were refused, as counted since the collector started (a restarted collector counts from 0:
/// a publisher keeps the highest count it saw). A session's end (its `seq` the number of
/// records) is settled like a record, so `through` passes the record count by one once the end
/// is stored.
///
/// Acknowledgements are cumulative: a later one says everything an earlier one did, so a lost
/// or repeated acknowledgement does no harm.
///
/// ```
/// use ndbridge::wire::Ack;
///
/// let ack = Ack { session: "6f1c2a9e0b3d4c5f".into(), through: 120, refused: 0 };
/// let frame = ack.to_json();
/// assert_eq!(Ack::parse(&frame)?, ack);
/// # Ok::<(), ndbridge::wire::DecodeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The publisher session acknowledged.
    pub session: String,
    /// Every `seq` below this is settled.
    pub through: u64,
    /// How many of the settled messages the collector refused (could not decode or store for
    /// good); the rest were stored.
    pub refused: u64,
}

/// The frame as it crosses: the acknowledgement and the format version.
#[derive(Serialize, Deserialize)]
struct Frame<'a> {
    v: u64,
    #[serde(borrow)]
    session: std::borrow::Cow<'a, str>,
    through: u64,
    refused: u64,
}

impl Ack {
    /// The acknowledgement's frame: `{"v":1,"session":...,"through":N,"refused":R}`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&Frame {
            v: FORMAT_VERSION,
            session: self.session.as_str().into(),
            through: self.through,
            refused: self.refused,
        })
        .expect("an acknowledgement serializes")
    }

    /// Reads an acknowledgement's frame; other fields are ignored (later versions may add
    /// some).
    pub fn parse(frame: &[u8]) -> Result<Ack, DecodeError> {
        let Frame {
            v,
            session,
            through,
            refused,
        } = serde_json::from_slice(frame).map_err(|e| DecodeError::NotJson {
            reason: format!("acknowledgement: {e}"),
        })?;
        if v != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: v,
                supported: FORMAT_VERSION,
            });
        }
        if refused > through {
            return Err(DecodeError::InvalidField {
                field: "refused".into(),
                expected: "at most `through`",
                found: format!("{refused} (through {through})"),
            });
        }
        Ok(Ack {
            session: session.into_owned(),
            through,
            refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_reads_back_and_ignores_fields_it_does_not_know() {
        let ack = Ack {
            session: "s\"1".into(),
            through: u64::MAX,
            refused: 3,
        };
        assert_eq!(Ack::parse(&ack.to_json()), Ok(ack));
        let later = br#"{"v":1,"session":"a","through":2,"refused":0,"credit":100}"#;
        assert_eq!(Ack::parse(later).unwrap().through, 2);
    }

    #[test]
    fn a_malformed_ack_says_what_is_wrong() {
        for bad in [
            &b"{}"[..],
            b"[1]",
            br#"{"v":1,"session":"a","through":-1,"refused":0}"#,
            br#"{"v":1,"session":"a","through":1}"#,
            b"\xff",
        ] {
            assert!(
                matches!(Ack::parse(bad), Err(DecodeError::NotJson { .. })),
                "{bad:?}"
            );
        }
        let newer = br#"{"v":2,"session":"a","through":1,"refused":0}"#;
        assert!(matches!(
            Ack::parse(newer),
            Err(DecodeError::UnsupportedVersion { found: 2, .. })
        ));
        let more_refused = br#"{"v":1,"session":"a","through":1,"refused":2}"#;
        assert!(matches!(
            Ack::parse(more_refused),
            Err(DecodeError::InvalidField { .. })
        ));
    }
}
