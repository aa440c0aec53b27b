//! Splitting long content into numbered parts that each fit DingTalk's limits.
//!
//! Parts break at paragraph boundaries (`\n\n`) where they can, else at line boundaries, else
//! between characters (never inside a UTF-8 character). A code fence open at a cut is closed at
//! the end of the part and reopened, with its info string, at the start of the next one, so each
//! part renders on its own. With more than one part each starts with `(i/n)`.

/// Default largest part, in bytes of text (numbering and fence repairs included).
///
/// DingTalk documents one limit: a group send's `msgParam` must stay under 15,000 bytes (JSON,
/// so escapes count). 3,500 bytes is ~1,150 Chinese characters or ~3,500 ASCII ones: far under
/// that limit even with heavy escaping and a long title, and under the ~5,000-character length
/// beyond which people report markdown being cut in the client (unverified, protocol reference
/// §3.3). Smaller parts also read better on a phone. The sender additionally measures each part
/// JSON-escaped against the 15,000-byte limit, so pathological text (control characters escape to
/// six bytes) still fits.
pub const DEFAULT_PART_BYTES: usize = 3_500;

/// DingTalk's documented limit on a group send's `msgParam`, in bytes (JSON-encoded).
pub const MSG_PARAM_LIMIT: usize = 15_000;

/// The smallest `max_bytes` [`split_message`] honours: room for numbering, fence repairs and
/// some text. Smaller values are raised to this.
pub const MIN_PART_BYTES: usize = 256;

/// Longest reopened fence line (longer info strings are reopened as a bare fence).
const MAX_REOPEN: usize = 32;

/// Splits `text` into parts of at most `max_bytes` bytes each, numbering included (see the
/// module docs for where it cuts). Text that fits is returned as one unnumbered part.
/// `max_bytes` below [`MIN_PART_BYTES`] is raised to it. [`reassemble`] undoes the split.
pub fn split_message(text: &str, max_bytes: usize) -> Vec<String> {
    split_weighted(text, max_bytes, char::len_utf8)
}

/// The length of `c` inside a JSON string, as serde_json writes it.
pub(crate) fn json_weight(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

fn weight_of(s: &str, weight: impl Fn(char) -> usize) -> usize {
    s.chars().map(weight).sum()
}

fn is_fence(line: &str) -> bool {
    line.trim_start().starts_with("```")
}

/// [`split_message`] with a per-character weight (bytes, or JSON-escaped bytes), `max` being
/// the largest total weight of a rendered part.
pub(crate) fn split_weighted(
    text: &str,
    max: usize,
    weight: impl Fn(char) -> usize + Copy,
) -> Vec<String> {
    let max = max.max(MIN_PART_BYTES);
    if weight_of(text, weight) <= max {
        return vec![text.to_owned()];
    }
    let fences = fence_map(text);
    // Room for a reopened fence line + '\n' at the start and "\n```" at the end.
    let fence_reserve = fences
        .iter()
        .filter_map(|f| f.opener.as_deref())
        .map(|o| weight_of(reopen_line(o), weight) + weight_of("\n\n```", weight))
        .max()
        .unwrap_or(0);
    let mut digits = 1;
    loop {
        // "(" i "/" n ")" + a separator (' ' or '\n', up to 2 JSON-escaped).
        let numbering = 2 * digits + 5;
        let budget = max.saturating_sub(numbering + fence_reserve).max(8);
        let cuts = pack(text, budget, weight);
        let n = cuts.len();
        if n.to_string().len() <= digits {
            return render(text, &cuts, &fences);
        }
        digits += 1;
    }
}

/// For each line: where it ends, and the fence open *after* it, if any.
struct LineFence {
    end: usize,
    /// The opening line of the fence that is open after this line.
    opener: Option<String>,
}

fn fence_map(text: &str) -> Vec<LineFence> {
    let mut out = Vec::new();
    let mut open: Option<String> = None;
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if is_fence(line) {
            open = match open {
                Some(_) => None,
                None => Some(line.trim_end_matches(['\n', '\r']).trim_start().to_owned()),
            };
        }
        out.push(LineFence {
            end: start + line.len(),
            opener: open.clone(),
        });
        start += line.len();
    }
    out
}

/// The fence open at byte offset `cut`: after the line ending at `cut`, or, for a cut inside a
/// line, before that line (both are the state after the last whole line before `cut`).
fn open_fence_at(fences: &[LineFence], cut: usize) -> Option<&str> {
    let i = fences.partition_point(|l| l.end <= cut);
    i.checked_sub(1).and_then(|j| fences[j].opener.as_deref())
}

/// Greedy packing of paragraphs, then lines, then characters into byte ranges of at most
/// `budget` weight each. Returns the end offsets of the parts.
fn pack(text: &str, budget: usize, weight: impl Fn(char) -> usize + Copy) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut used = 0;
    let mut offset = 0;
    let close = |cuts: &mut Vec<usize>, used: &mut usize, at: usize| {
        if *used > 0 {
            cuts.push(at);
            *used = 0;
        }
    };
    for para in text.split_inclusive("\n\n") {
        let w = weight_of(para, weight);
        if w <= budget {
            if used + w > budget {
                close(&mut cuts, &mut used, offset);
            }
            used += w;
            offset += para.len();
            continue;
        }
        for line in para.split_inclusive('\n') {
            let w = weight_of(line, weight);
            if w <= budget {
                if used + w > budget {
                    close(&mut cuts, &mut used, offset);
                }
                used += w;
                offset += line.len();
                continue;
            }
            for c in line.chars() {
                let w = weight(c);
                if used + w > budget {
                    close(&mut cuts, &mut used, offset);
                }
                used += w;
                offset += c.len_utf8();
            }
        }
    }
    if used > 0 || cuts.is_empty() {
        cuts.push(text.len());
    }
    cuts
}

fn reopen_line(opener: &str) -> &str {
    if opener.len() <= MAX_REOPEN {
        opener
    } else {
        "```"
    }
}

fn render(text: &str, cuts: &[usize], fences: &[LineFence]) -> Vec<String> {
    let n = cuts.len();
    let mut parts = Vec::with_capacity(n);
    let mut start = 0;
    let mut open_at_start: Option<&str> = None;
    for (i, &end) in cuts.iter().enumerate() {
        let chunk = &text[start..end];
        let mut body = String::with_capacity(chunk.len() + 16);
        if let Some(opener) = open_at_start {
            body.push_str(reopen_line(opener));
            body.push('\n');
        }
        body.push_str(chunk);
        let open_at_end = if i + 1 < n {
            open_fence_at(fences, end)
        } else {
            None
        };
        if open_at_end.is_some() {
            if !body.ends_with('\n') {
                body.push('\n');
            }
            body.push_str("```");
        }
        let sep = if starts_block(&body) { '\n' } else { ' ' };
        parts.push(format!("({}/{n}){sep}{body}", i + 1));
        open_at_start = open_at_end;
        start = end;
    }
    parts
}

/// Whether `body` starts with markdown that must begin a line (fence, heading, quote, table,
/// list, indentation): the numbering then goes on a line of its own.
fn starts_block(body: &str) -> bool {
    let digits = body.len() - body.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    body.starts_with(['`', '#', '>', '|', '-', '*', '+', ' ', '\t', '\n'])
        || (digits > 0 && body[digits..].starts_with(['.', ')']))
}

/// Whether a fence is open at the end of `s` (scanning whole lines).
fn ends_in_fence(s: &str) -> bool {
    s.split_inclusive('\n').filter(|l| is_fence(l)).count() % 2 == 1
}

/// Undoes [`split_message`]: strips the `(i/n)` numbering and the fence repairs and
/// concatenates. Exact for any text whose lines inside code fences fit in a part (a fenced line
/// that had to be cut between characters comes back with one extra line break).
pub fn reassemble<S: AsRef<str>>(parts: &[S]) -> String {
    let n = parts.len();
    let bodies: Vec<&str> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let p = p.as_ref();
            if n < 2 {
                return p;
            }
            let tag = format!("({}/{n})", i + 1);
            p.strip_prefix(&tag)
                .and_then(|r| r.strip_prefix([' ', '\n']))
                .unwrap_or(p)
        })
        .collect();
    let mut out = String::new();
    let mut reopened = false;
    for (i, body) in bodies.iter().enumerate() {
        let mut b: &str = body;
        if reopened {
            b = b.split_once('\n').map_or("", |(_, rest)| rest);
        }
        reopened = false;
        if let Some(next) = bodies.get(i + 1)
            && let Some(kept) = b.strip_suffix("```")
            && kept.ends_with('\n')
            && is_fence(next)
        {
            let mut candidate = out.clone();
            candidate.push_str(kept);
            if ends_in_fence(&candidate) {
                out = candidate;
                reopened = true;
                continue;
            }
        }
        out.push_str(b);
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
            "一".repeat(100),
            "二".repeat(100),
            "三".repeat(100)
        );
        let parts = split_message(&text, 320);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], format!("(1/3) {}\n\n", "一".repeat(100)));
        assert!(parts.iter().all(|p| p.len() <= 320));
        assert_eq!(reassemble(&parts), text);
    }

    #[test]
    fn never_cuts_inside_a_character_and_reassembles_exactly() {
        let text: String = "长文本😀".repeat(3000);
        let parts = split_message(&text, 500);
        assert!(parts.len() > 10);
        assert!(parts.iter().all(|p| p.len() <= 500));
        assert_eq!(reassemble(&parts), text);
    }

    #[test]
    fn code_fences_are_closed_and_reopened_with_their_language() {
        let code: String = (0..200).map(|i| format!("let x{i} = {i};\n")).collect();
        let text = format!("前言\n\n```rust\n{code}```\n\n结尾");
        let parts = split_message(&text, 400);
        assert!(parts.len() > 2);
        for p in &parts {
            assert!(p.len() <= 400);
            assert_eq!(
                p.lines().filter(|l| is_fence(l)).count() % 2,
                0,
                "balanced fences in {p}"
            );
        }
        assert!(parts[2].starts_with(&format!("(3/{})\n```rust\n", parts.len())));
        assert_eq!(reassemble(&parts), text);
    }

    #[test]
    fn numbering_sits_on_its_own_line_before_block_markdown() {
        for (body, block) in [
            ("### 标题", true),
            ("12. 第十二条", true),
            ("- 项", true),
            ("2024年报告", false),
            ("普通文字", false),
        ] {
            assert_eq!(starts_block(body), block, "{body}");
        }
    }

    #[test]
    fn json_weight_counts_escapes() {
        let s = "a\"\n\u{1}中";
        let w: usize = s.chars().map(json_weight).sum();
        let encoded = serde_json::to_string(s).unwrap();
        assert_eq!(w, encoded.len() - 2);
    }

    #[test]
    fn tiny_limits_are_raised_and_still_respected() {
        let text = "x".repeat(1000);
        let parts = split_message(&text, 10);
        assert!(parts.iter().all(|p| p.len() <= MIN_PART_BYTES));
        assert_eq!(reassemble(&parts), text);
    }
}
