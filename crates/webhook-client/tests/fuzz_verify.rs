//! Standard Webhooks verification under hostile headers (proptest): any header values, any
//! clock, any body never panic, and only a signature made with the secret over exactly
//! these bytes is accepted.

use proptest::prelude::*;
use webhook_client::{SigningSecret, VerifyError, sign, verify};

fn secret() -> SigningSecret {
    SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap()
}

/// Timestamps that break arithmetic, beside ordinary ones.
fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0),
        any::<i64>(),
        1_700_000_000i64..1_800_000_000,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_headers_and_clocks_never_panic_or_verify(
        id in proptest::option::of("\\PC{0,40}"),
        ts in proptest::option::of(prop_oneof![timestamp().prop_map(|t| t.to_string()), "\\PC{0,24}"]),
        sig in proptest::option::of(prop_oneof!["\\PC{0,120}", "(v1,[A-Za-z0-9+/=]{0,60} ?){0,4}"]),
        body in prop::collection::vec(any::<u8>(), 0..256),
        now in timestamp(),
    ) {
        let header = |name: &str| match name {
            "webhook-id" => id.as_deref(),
            "webhook-timestamp" => ts.as_deref(),
            "webhook-signature" => sig.as_deref(),
            _ => None,
        };
        prop_assert!(verify(&[secret()], header, &body, now).is_err());
    }

    #[test]
    fn a_real_signature_verifies_and_any_change_to_the_body_does_not(
        id in "[a-z0-9_]{1,40}",
        body in prop::collection::vec(any::<u8>(), 1..256),
        flip in any::<prop::sample::Index>(),
        skew in -300i64..=300,
        now in 1_700_000_000i64..1_800_000_000,
    ) {
        let ts = now + skew;
        let signature = format!("v1,garbage {}", sign(&secret(), &id, ts, &body));
        let ts_text = ts.to_string();
        let header = |name: &str| match name {
            "webhook-id" => Some(id.as_str()),
            "webhook-timestamp" => Some(ts_text.as_str()),
            "webhook-signature" => Some(signature.as_str()),
            _ => None,
        };
        prop_assert_eq!(verify(&[secret()], header, &body, now), Ok(()));
        let mut changed = body.clone();
        changed[flip.index(body.len())] ^= 1;
        prop_assert_eq!(
            verify(&[secret()], header, &changed, now),
            Err(VerifyError::NoMatchingSignature)
        );
        prop_assert_eq!(
            verify(&[SigningSecret::generate()], header, &body, now),
            Err(VerifyError::NoMatchingSignature)
        );
    }
}

#[test]
fn a_timestamp_at_the_edge_of_i64_is_out_of_tolerance_not_an_overflow() {
    let header = |name: &str| match name {
        "webhook-id" => Some("msg"),
        "webhook-timestamp" => Some("-9223372036854775808"),
        "webhook-signature" => Some("v1,AAAA"),
        _ => None,
    };
    assert_eq!(
        verify(&[secret()], header, b"{}", 1_750_000_000),
        Err(VerifyError::TimestampOutOfTolerance)
    );
}
