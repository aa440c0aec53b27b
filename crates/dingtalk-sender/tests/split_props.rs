//! Properties of `split_message` / `reassemble` on generated text.

use dingtalk_sender::{reassemble, split_message};
use proptest::prelude::*;

/// Short lines (so no line is ever cut between characters), with paragraphs, code fences with
/// and without a language, multi-byte characters and blank lines.
fn markdown_line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z 中文😀é#*-]{0,20}",
        1 => Just("```".to_owned()),
        1 => Just("```rust".to_owned()),
        1 => Just(String::new()),
    ]
}

fn markdown() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(markdown_line(), 0..300),
        any::<bool>(),
    )
        .prop_map(|(lines, nl)| {
            let mut s = lines.join("\n");
            if nl {
                s.push('\n');
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn parts_fit_reassemble_exactly_and_balance_fences(text in markdown(), max in 256usize..1200) {
        let parts = split_message(&text, max);
        prop_assert!(!parts.is_empty());
        for p in &parts {
            prop_assert!(p.len() <= max, "part of {} bytes over {}", p.len(), max);
            let fences = p.split('\n').filter(|l| l.trim_start().starts_with("```")).count();
            if parts.len() > 1 {
                // Each part renders alone: a fence open inside a part is closed in it, unless
                // the original text itself leaves it open at its very end.
                prop_assert!(fences % 2 == 0 || std::ptr::eq(p, parts.last().unwrap()));
            }
        }
        if parts.len() > 1 {
            let n = parts.len();
            for (i, p) in parts.iter().enumerate() {
                let tag = format!("({}/{n})", i + 1);
                prop_assert!(p.starts_with(&tag), "part {} lacks {}", i, tag);
            }
        }
        prop_assert_eq!(reassemble(&parts), text);
    }

    #[test]
    fn long_lines_are_cut_between_characters_only(
        text in "[a-z中😀 \n]{0,3000}",
        max in 256usize..600,
    ) {
        let parts = split_message(&text, max);
        for p in &parts {
            // `String` guarantees valid UTF-8; the limit is the property.
            prop_assert!(p.len() <= max);
        }
        prop_assert_eq!(reassemble(&parts), text);
    }
}
