//! Live progress of a long job on an interactive card (with `card_template_id`): queued, running
//! with the elapsed time and the estimate, done with the result (or its first part and a note),
//! or failed with the reason, updated in place.
//!
//! The template is the operator's (DingTalk's card builder); it must declare these string
//! variables: `title`, `status`, `task_id`, `prompt`, `elapsed`, `estimate`, `content`.

use std::time::Duration;

use crate::job::BotJob;
use crate::push::CardParams;

/// Most result bytes shown on a card; longer results show their first part and are pushed in
/// full.
pub const CARD_CONTENT_BYTES: usize = 3_000;

/// Where the job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for a worker.
    Queued,
    /// Running.
    Running,
    /// Finished with a result.
    Done,
    /// Failed, timed out or cancelled.
    Failed,
}

impl Stage {
    /// As the card shows it.
    pub fn zh(self) -> &'static str {
        match self {
            Stage::Queued => "排队中",
            Stage::Running => "处理中",
            Stage::Done => "已完成",
            Stage::Failed => "失败",
        }
    }
}

/// The card's `outTrackId` for a job: derived from the task id, so a restarted bot updates the
/// card the first run delivered.
pub fn out_track_id(task_id: &str) -> String {
    format!("bot-card-{task_id}")
}

/// "1 分 5 秒", "45 秒".
pub fn elapsed_zh(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{} 分 {} 秒", s / 60, s % 60)
    } else {
        format!("{s} 秒")
    }
}

/// The card's variables.
pub fn params(
    stage: Stage,
    task_id: &str,
    job: &BotJob,
    elapsed: Option<Duration>,
    estimate: &str,
    content: &str,
) -> CardParams {
    let prompt: String = job.prompt.chars().take(60).collect();
    CardParams::from([
        ("title".to_owned(), "后台任务".to_owned()),
        ("status".to_owned(), stage.zh().to_owned()),
        ("task_id".to_owned(), task_id.to_owned()),
        ("prompt".to_owned(), prompt),
        (
            "elapsed".to_owned(),
            elapsed.map(elapsed_zh).unwrap_or_default(),
        ),
        ("estimate".to_owned(), estimate.to_owned()),
        ("content".to_owned(), content.to_owned()),
    ])
}

/// What a done card shows: the whole result, or its first part (`excerpt(answer, max_bytes)`,
/// e.g. [`Push::excerpt`](crate::Push::excerpt)) and a note.
pub fn done_content(
    answer: &str,
    note_when_cut: &str,
    excerpt: &dyn Fn(&str, usize) -> String,
) -> (String, bool) {
    if answer.len() <= CARD_CONTENT_BYTES {
        return (answer.to_owned(), false);
    }
    let first = excerpt(answer, CARD_CONTENT_BYTES);
    (format!("{first}\n\n{note_when_cut}"), true)
}

/// The start of `text` in at most `max_bytes` bytes, cut after the last paragraph, else line,
/// else character that fits (never inside a UTF-8 character).
pub fn first_part(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    let cut = head
        .rfind("\n\n")
        .or_else(|| head.rfind('\n'))
        .filter(|&i| i > 0)
        .unwrap_or(end);
    head[..cut].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_result_shows_its_first_part_and_a_note() {
        let (short, cut) = done_content("结果", "（略）", &first_part);
        assert_eq!((short.as_str(), cut), ("结果", false));
        let long = "一段结果。\n\n".repeat(1_000);
        let (shown, cut) = done_content(&long, "（完整结果已推送）", &first_part);
        assert!(cut);
        assert!(shown.len() < CARD_CONTENT_BYTES + 100);
        assert!(shown.ends_with("（完整结果已推送）"));
    }

    #[test]
    fn the_first_part_ends_at_a_paragraph_and_never_inside_a_character() {
        assert_eq!(first_part("一二\n\n三四", 10), "一二");
        assert_eq!(first_part("一二三四", 7), "一二");
        assert_eq!(first_part("short", 10), "short");
    }

    #[test]
    fn elapsed_reads_naturally() {
        assert_eq!(elapsed_zh(Duration::from_secs(45)), "45 秒");
        assert_eq!(elapsed_zh(Duration::from_secs(65)), "1 分 5 秒");
    }
}
