//! Splitting long content into numbered parts that each fit DingTalk's limits.

/// Default maximum bytes of one part's text. Group sends allow 15,000 bytes of `msgParam`
/// (JSON-encoded, so escapes count); 3,500 bytes of text leaves room for the title, the numbering
/// and escaping of quotes and newlines, and stays under the ~5,000-character rendering limit
/// people report for markdown.
pub const DEFAULT_PART_BYTES: usize = 3_500;

/// Splits `text` into parts of at most `max_bytes` (before numbering), on paragraph, then line,
/// then character boundaries (never inside a UTF-8 character). A code fence open at a cut is
/// closed at the end of the part and reopened at the start of the next. With more than one part,
/// each is prefixed `(i/n) `.
pub fn split_message(text: &str, max_bytes: usize) -> Vec<String> {
    let max = max_bytes.max(64);
    // Room for the fence we may add at both ends.
    let budget = max - 8;
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut in_fence = false;
    for piece in pieces(text, budget) {
        if !current.is_empty() && current.len() + piece.len() > budget {
            if in_fence {
                current.push_str("\n```");
            }
            parts.push(std::mem::take(&mut current));
            if in_fence {
                current.push_str("```\n");
            }
        }
        for line in piece.lines() {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
            }
        }
        current.push_str(&piece);
    }
    if !current.is_empty() || parts.is_empty() {
        parts.push(current);
    }
    let n = parts.len();
    if n == 1 {
        return parts;
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| format!("({}/{n}) {p}", i + 1))
        .collect()
}

/// Cuts text into pieces no longer than `budget`: whole paragraphs where they fit, else lines,
/// else character runs. Concatenating the pieces gives back the text.
fn pieces(text: &str, budget: usize) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split_inclusive("\n\n") {
        if para.len() <= budget {
            out.push(para.to_owned());
            continue;
        }
        for line in para.split_inclusive('\n') {
            if line.len() <= budget {
                out.push(line.to_owned());
                continue;
            }
            let mut chunk = String::new();
            for ch in line.chars() {
                if chunk.len() + ch.len_utf8() > budget {
                    out.push(std::mem::take(&mut chunk));
                }
                chunk.push(ch);
            }
            if !chunk.is_empty() {
                out.push(chunk);
            }
        }
    }
    out
}

/// Undoes [`split_message`]'s numbering and fence repairs (for tests and receivers).
pub fn reassemble(parts: &[String]) -> String {
    let n = parts.len();
    let mut out = String::new();
    for (i, p) in parts.iter().enumerate() {
        let mut body = if n > 1 {
            let prefix = format!("({}/{n}) ", i + 1);
            p.strip_prefix(&prefix).unwrap_or(p).to_owned()
        } else {
            p.clone()
        };
        if i > 0 && body.starts_with("```\n") && out.ends_with("\n```") {
            out.truncate(out.len() - 4);
            body = body[4..].to_owned();
        }
        out.push_str(&body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_unnumbered_part() {
        assert_eq!(split_message("你好", 100), ["你好"]);
    }

    #[test]
    fn long_text_splits_on_paragraphs_and_numbers_parts() {
        let text = format!(
            "{}\n\n{}\n\n{}",
            "一".repeat(40),
            "二".repeat(40),
            "三".repeat(40)
        );
        let parts = split_message(&text, 130);
        assert_eq!(parts.len(), 3);
        assert!(parts[0].starts_with("(1/3) 一"));
        assert!(parts.iter().all(|p| p.len() <= 130 + 8));
        assert_eq!(reassemble(&parts), text);
    }

    #[test]
    fn never_cuts_inside_a_character_and_reassembles_exactly() {
        let text: String = "长文本😀".repeat(3000);
        let parts = split_message(&text, 500);
        assert!(parts.len() > 10);
        assert!(parts.iter().all(|p| p.len() <= 500 + 10));
        assert_eq!(reassemble(&parts), text);
    }

    #[test]
    fn code_fences_are_closed_and_reopened() {
        let code: String = (0..200).map(|i| format!("let x{i} = {i};\n")).collect();
        let text = format!("前言\n\n```rust\n{code}```\n\n结尾");
        let parts = split_message(&text, 400);
        assert!(parts.len() > 2);
        for p in &parts {
            assert_eq!(p.matches("```").count() % 2, 0, "balanced fences in {p}");
        }
        assert_eq!(reassemble(&parts), text);
    }
}
