//! The dashboard's HTML. No inline script or style anywhere (the CSP forbids both): the
//! script finds its work through `data-*` attributes.

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use workflow_core::{Priority, Task, TaskStatus};
use workflow_dispatch::channels::ChannelView;
use workflow_dispatch::routing::RouteView;
use workflow_dispatch::{DeliveryPayload, TaskStatusView};

use super::{Lang, Overview, TargetRow, TaskQuery, Ui, Viewer, encode};

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn status_label(lang: Lang, s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Pending => lang.t("等待中", "pending"),
        TaskStatus::Processing => lang.t("投递中", "processing"),
        TaskStatus::Retrying => lang.t("重试中", "retrying"),
        TaskStatus::Completed => lang.t("已完成", "completed"),
        TaskStatus::Failed => lang.t("失败", "failed"),
        TaskStatus::Cancelled => lang.t("已取消", "cancelled"),
    }
}

fn priority_label(lang: Lang, p: Priority) -> &'static str {
    match p {
        Priority::Critical => lang.t("紧急", "critical"),
        Priority::High => lang.t("高", "high"),
        Priority::Medium => lang.t("中", "medium"),
        Priority::Low => lang.t("低", "low"),
    }
}

fn badge(lang: Lang, s: TaskStatus) -> Markup {
    html! { span class={"badge " (s.as_str())} { (status_label(lang, s)) } }
}

/// A URL as shown: scheme, host and path; the query (which may hold a token) is cut.
fn shown_url(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

fn destination(task: &Task) -> String {
    match DeliveryPayload::read(&task.payload) {
        Ok(p) => match (p.channel, p.url) {
            (Some(c), _) => format!("channel: {c}"),
            (None, Some(u)) => shown_url(u).to_owned(),
            (None, None) => String::new(),
        },
        Err(_) => String::new(),
    }
}

fn package_field<'a>(task: &'a Task, path: &[&str]) -> &'a str {
    let Ok(p) = DeliveryPayload::read(&task.payload) else {
        return "";
    };
    let mut v = p.package;
    for key in path {
        match v.get(*key) {
            Some(next) => v = next,
            None => return "",
        }
    }
    v.as_str().unwrap_or("")
}

fn layout(ui: &Ui, viewer: Option<&Viewer>, active: &str, title: &str, body: &Markup) -> Markup {
    let lang = viewer.map_or(Lang::Zh, |v| v.lang);
    let nav = [
        ("overview", "/", lang.t("概览", "Overview")),
        ("tasks", "/tasks", lang.t("任务", "Tasks")),
        ("targets", "/targets", lang.t("目标", "Targets")),
        (
            "channels",
            "/channels",
            lang.t("渠道与路由", "Channels & routes"),
        ),
    ];
    html! {
        (DOCTYPE)
        html lang=(lang.t("zh-CN", "en")) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (lang.t("任务分发", "Dispatcher")) }
                link rel="stylesheet" href=(ui.path("/assets/app.css"));
                script src=(ui.path("/assets/app.js")) defer {}
            }
            body data-base=(ui.path("")) {
                header.top {
                    a.brand href=(ui.path("/")) { (lang.t("任务分发", "Dispatcher")) }
                    @if let Some(v) = viewer {
                        nav {
                            @for (key, path, label) in nav {
                                a.active[key == active] href=(ui.path(path)) { (label) }
                            }
                        }
                        div.right {
                            @match v.lang {
                                Lang::Zh => a href="?lang=en" { "English" },
                                Lang::En => a href="?lang=zh" { "中文" },
                            }
                            form.inline method="post" action=(ui.path("/logout")) {
                                input type="hidden" name="csrf" value=(v.csrf);
                                button type="submit" { (lang.t("退出", "Log out")) }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub(super) fn error_page(status: StatusCode, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html {
            head { meta charset="utf-8"; title { (status.as_u16()) } }
            body { h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) } p.error { (message) } }
        }
    }
}

pub(super) fn login(ui: &Ui, lang: Lang, error: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(e) = error { p.error { (e) } }
        form.login method="post" action=(ui.path("/login")) {
            label for="key" { (lang.t("API 密钥", "API key")) }
            input #key type="password" name="key" autocomplete="current-password" required;
            button type="submit" { (lang.t("登录", "Log in")) }
        }
        p.hint { (lang.t(
            "首次启动时，控制台打印了登录链接和 API 密钥（也保存在数据目录的 api_key 文件中）。",
            "The first start printed a login link and the API key (also kept in the data directory's api_key file).",
        )) }
    };
    layout(ui, None, "", lang.t("登录", "Log in"), &body)
}

pub(super) fn overview(ui: &Ui, viewer: &Viewer, o: &Overview) -> Markup {
    let lang = viewer.lang;
    let ms = |v: Option<u64>| v.map_or("–".to_owned(), |v| format!("{v} ms"));
    let cards = [
        (
            "created_per_sec",
            lang.t("每秒新建", "Created / s"),
            format!("{:.1}", o.rates.created_per_sec),
        ),
        (
            "delivered_per_sec",
            lang.t("每秒投递", "Delivered / s"),
            format!("{:.1}", o.rates.delivered_per_sec),
        ),
        (
            "latency_p50_ms",
            lang.t("投递延迟 p50", "Latency p50"),
            ms(o.rates.latency_p50_ms),
        ),
        (
            "latency_p95_ms",
            lang.t("投递延迟 p95", "Latency p95"),
            ms(o.rates.latency_p95_ms),
        ),
        (
            "failed_last_min",
            lang.t("近一分钟失败", "Failures, last min"),
            o.rates.failed_last_min.to_string(),
        ),
        (
            "retries_last_min",
            lang.t("近一分钟重试", "Retries, last min"),
            o.rates.retries_last_min.to_string(),
        ),
        (
            "open_breakers",
            lang.t("打开的熔断器", "Open breakers"),
            o.open_breakers.to_string(),
        ),
        (
            "in_flight",
            lang.t("投递中", "In flight"),
            o.in_flight.to_string(),
        ),
    ];
    let body = html! {
        section.cards #overview data-live=(ui.path("/overview.json")) {
            @for (key, label, value) in &cards {
                div.card { div.label { (label) } div.value data-k=(key) { (value) } }
            }
        }
        section.chart {
            h2 { (lang.t("最近两分钟（每秒）", "Last two minutes (per second)")) }
            canvas #rate-chart width="960" height="220" {}
            p.legend {
                span.created { (lang.t("新建", "created")) }
                span.delivered { (lang.t("投递成功", "delivered")) }
                span.failed { (lang.t("投递失败", "failed")) }
            }
        }
        section.split {
            div {
                h2 { (lang.t("按优先级的积压", "Backlog by priority")) }
                table {
                    tbody {
                        @for p in Priority::ALL {
                            tr { th { (priority_label(lang, p)) }
                                 td.num data-backlog=(p.as_str()) { (o.backlog.get(p.as_str()).copied().unwrap_or(0)) } }
                        }
                    }
                }
            }
            div {
                h2 { (lang.t("按状态的任务", "Tasks by status")) }
                table {
                    tbody {
                        @for s in TaskStatus::ALL {
                            tr { th { a href=(ui.path(&format!("/tasks?status={}", s.as_str()))) { (status_label(lang, s)) } }
                                 td.num data-status=(s.as_str()) { (o.by_status.get(s.as_str()).copied().unwrap_or(0)) } }
                        }
                    }
                }
            }
        }
        p.hint { (lang.t("速率与延迟为本实例的数据；任务数量来自数据库。", "Rates and latency are this instance's; task counts are the database's.")) }
    };
    layout(
        ui,
        Some(viewer),
        "overview",
        lang.t("概览", "Overview"),
        &body,
    )
}

fn select(name: &str, current: &str, any: &str, options: &[(String, String)]) -> Markup {
    html! {
        select #(name) name=(name) {
            option value="" selected[current.is_empty()] { (any) }
            @for (value, label) in options {
                option value=(value) selected[current == value] { (label) }
            }
        }
    }
}

pub(super) fn tasks(
    ui: &Ui,
    viewer: &Viewer,
    q: &TaskQuery,
    tasks: &[Task],
    next: Option<i64>,
) -> Markup {
    let lang = viewer.lang;
    let any = lang.t("全部", "any");
    let statuses: Vec<_> = TaskStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), status_label(lang, *s).to_owned()))
        .collect();
    let priorities: Vec<_> = Priority::ALL
        .iter()
        .map(|p| (p.as_str().to_owned(), priority_label(lang, *p).to_owned()))
        .collect();
    let risks: Vec<_> = ["critical", "high", "medium", "low"]
        .iter()
        .map(|r| ((*r).to_owned(), (*r).to_owned()))
        .collect();
    let types: Vec<_> = [
        "negative_evidence_intervention",
        "source_engagement",
        "competitor_alert",
    ]
    .iter()
    .map(|t| ((*t).to_owned(), (*t).to_owned()))
    .collect();
    let live = q.cursor.trim().is_empty();
    let rows_url = format!("{}?{}", ui.path("/tasks/rows"), q.query_string(false));
    let next_url = next.map(|cursor| {
        let mut more = q.clone();
        more.cursor = cursor.to_string();
        format!("{}?{}", ui.path("/tasks"), more.query_string(true))
    });
    let body = html! {
        @if let Some(n) = q.retried {
            p.notice { (lang.t("已重新排队的失败任务：", "Failed tasks queued again: ")) (n) }
        }
        form.filters method="get" action=(ui.path("/tasks")) {
            label { (lang.t("状态", "Status")) (select("status", &q.status, any, &statuses)) }
            label { (lang.t("优先级", "Priority")) (select("priority", &q.priority, any, &priorities)) }
            label { (lang.t("风险等级", "Risk level")) (select("risk_level", &q.risk_level, any, &risks)) }
            label { (lang.t("任务类型", "Task type")) (select("task_type", &q.task_type, any, &types)) }
            label { (lang.t("渠道", "Channel")) input name="channel" value=(q.channel); }
            label { (lang.t("目标", "Target")) input name="target" value=(q.target) placeholder="https://host:443"; }
            label { (lang.t("起始（UTC）", "From (UTC)")) input type="datetime-local" name="from" value=(q.from); }
            label { (lang.t("截止（UTC）", "To (UTC)")) input type="datetime-local" name="to" value=(q.to); }
            label { (lang.t("任务 ID", "Task id")) input name="id" placeholder="wf_…"; }
            button type="submit" { (lang.t("筛选", "Filter")) }
            a.button href=(ui.path("/tasks")) { (lang.t("清除", "Clear")) }
        }
        form.inline.bulk method="post" action=(ui.path("/tasks/retry-failed")) {
            input type="hidden" name="csrf" value=(viewer.csrf);
            @for (name, value) in [("priority", &q.priority), ("channel", &q.channel), ("target", &q.target),
                                   ("task_type", &q.task_type), ("risk_level", &q.risk_level),
                                   ("from", &q.from), ("to", &q.to)] {
                @if !value.is_empty() { input type="hidden" name=(name) value=(value); }
            }
            button type="submit" { (lang.t("重试所有符合筛选的失败任务", "Retry every failed task matching the filter")) }
        }
        div.scroll {
            table.tasks {
                thead { tr {
                    th { "ID" } th { (lang.t("状态", "Status")) } th { (lang.t("优先级", "Priority")) }
                    th { (lang.t("类型", "Type")) } th { (lang.t("风险", "Risk")) } th { (lang.t("品牌", "Brand")) }
                    th { (lang.t("投递到", "Destination")) } th { (lang.t("创建时间（UTC）", "Created (UTC)")) }
                    th { (lang.t("尝试", "Attempts")) } th { (lang.t("最近错误", "Last error")) }
                } }
                tbody #task-rows data-live=[live.then_some(&rows_url)] { (task_rows(ui, lang, tasks)) }
            }
        }
        @if let Some(next_url) = &next_url {
            p { a.button #next-page href=(next_url) { (lang.t("下一页", "Next page")) " →" } }
        }
        @if !live { p { a href=(format!("{}?{}", ui.path("/tasks"), q.query_string(false))) { "← " (lang.t("第一页（实时）", "First page (live)")) } } }
    };
    layout(ui, Some(viewer), "tasks", lang.t("任务", "Tasks"), &body)
}

pub(super) fn task_rows(ui: &Ui, lang: Lang, tasks: &[Task]) -> Markup {
    html! {
        @if tasks.is_empty() {
            tr { td.empty colspan="10" { (lang.t("没有符合条件的任务。", "No task matches.")) } }
        }
        @for t in tasks {
            tr data-task=(t.id) {
                td { a href=(ui.path(&format!("/tasks/{}", encode(&t.id)))) { code { (t.id) } } }
                td { (badge(lang, t.status)) }
                td { (priority_label(lang, t.priority)) }
                td { (package_field(t, &["task_type"])) }
                td { (package_field(t, &["evidence_data", "risk_level"])) }
                td { (package_field(t, &["evidence_data", "brand_name"])) }
                td.url { (destination(t)) }
                td { (time(t.created_at)) }
                td.num { (t.attempt) }
                td.error { (t.last_error.as_deref().map(|e| e.chars().take(120).collect::<String>()).unwrap_or_default()) }
            }
        }
    }
}

pub(super) fn task(ui: &Ui, viewer: &Viewer, view: &TaskStatusView) -> Markup {
    let lang = viewer.lang;
    let t = &view.task;
    let package = DeliveryPayload::read(&t.payload)
        .map(|p| serde_json::to_string_pretty(p.package).unwrap_or_default())
        .unwrap_or_default();
    let action = |name: &str, label: &str| {
        html! {
            form.inline method="post" action=(ui.path(&format!("/tasks/{}/{name}", encode(&t.id)))) {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button type="submit" #(format!("{name}-button")) { (label) }
            }
        }
    };
    let body = html! {
        div.actions {
            @if view.deliveries.iter().any(|d| matches!(d.task.status, TaskStatus::Failed | TaskStatus::Cancelled)) {
                (action("retry", lang.t("重试", "Retry")))
            }
            @if view.deliveries.iter().any(|d| !d.task.status.is_final()) {
                (action("cancel", lang.t("取消", "Cancel")))
            }
            a href=(ui.path("/tasks")) { "← " (lang.t("任务列表", "All tasks")) }
        }
        section #task-live data-live=(ui.path(&format!("/tasks/{}/live", encode(&t.id)))) {
            (task_live(lang, view))
        }
        h2 { (lang.t("投递的任务包", "The package as delivered")) }
        pre.package { (package) }
    };
    layout(ui, Some(viewer), "tasks", &t.id, &body)
}

/// The parts of a task's page that change: summary, attempts, callback, events.
pub(super) fn task_live(lang: Lang, view: &TaskStatusView) -> Markup {
    let t = &view.task;
    html! {
        dl.summary {
            dt { (lang.t("状态", "Status")) } dd #task-status data-status=(view.status().as_str()) { (badge(lang, view.status())) }
            dt { (lang.t("优先级", "Priority")) } dd { (priority_label(lang, t.priority)) }
            dt { (lang.t("投递到", "Destination")) } dd.url { (destination(t)) }
            dt { (lang.t("创建时间", "Created")) } dd { (time(t.created_at)) " UTC" }
            dt { (lang.t("下次尝试", "Next attempt")) } dd { (t.next_run_at.filter(|_| !t.status.is_final()).map(time).unwrap_or_else(|| "–".into())) }
            dt { (lang.t("尝试次数", "Attempts")) } dd { (t.attempt) " / " (t.max_attempts) }
            @if let Some(e) = &t.last_error { dt { (lang.t("最近错误", "Last error")) } dd.error { (e) } }
        }
        @if view.fans_out() {
            h2 { (lang.t("投递（每个目标一个）", "Deliveries (one per target)")) }
            div.scroll {
                table #deliveries {
                    thead { tr {
                        th { (lang.t("目标", "Target")) } th { (lang.t("状态", "Status")) }
                        th { (lang.t("尝试次数", "Attempts")) } th { (lang.t("最近错误", "Last error")) }
                    } }
                    tbody {
                        @for d in &view.deliveries {
                            tr data-delivery=(d.task.id) {
                                td.url { (d.target) }
                                td { (badge(lang, d.task.status)) }
                                td { (d.task.tries) " / " (d.task.max_attempts) }
                                td.error { (d.task.last_error.as_deref().unwrap_or("–")) }
                            }
                        }
                    }
                }
            }
        }
        h2 { (lang.t("投递尝试", "Attempts")) }
        ol.timeline #attempts {
            @if view.attempts.is_empty() { li.empty { (lang.t("尚无尝试。", "No attempt yet.")) } }
            @for a in &view.attempts {
                li class=(a.outcome) data-attempt=(a.n) {
                    div.when { "#" (a.n) " · " (time(a.started_at)) " UTC · " (a.duration_ms) " ms" }
                    div {
                        span class={"badge " (a.outcome)} { (a.outcome) }
                        @if let Some(code) = a.status_code { " HTTP " (code) }
                    }
                    @if let Some(e) = &a.error { div.error { (e) } }
                    @if let Some(r) = &a.response { pre.response { (r.chars().take(500).collect::<String>()) } }
                }
            }
        }
        h2 { (lang.t("回调（最新；历史见状态变更）", "Callback (latest; every report is in the history)")) }
        @match &t.callback {
            Some(c) => p #callback { strong { (c.status) } @if let Some(n) = &c.note { " — " (n) } " · " (time(c.at)) " UTC" },
            None => p #callback.empty { (lang.t("接收方尚未回调。", "The receiver has not called back yet.")) },
        }
        h2 { (lang.t("状态变更", "History")) }
        ol.events {
            @for e in &view.events {
                li {
                    span.when { (time(e.at)) } " "
                    @match e.from {
                        Some(from) if from == e.to => {}
                        Some(from) => { (status_label(lang, from)) " → " (status_label(lang, e.to)) " · " }
                        None => { (status_label(lang, e.to)) " · " }
                    }
                    (e.reason)
                }
            }
        }
    }
}

pub(super) fn targets(ui: &Ui, viewer: &Viewer, rows: &[TargetRow], total: usize) -> Markup {
    let lang = viewer.lang;
    let body = html! {
        p.hint { (lang.t(
            "每个投递目标（URL 的源或渠道）各有一个熔断器。失败率按最近的窗口计算；近期延迟为最新 10 个任务最后一次尝试的中位数。",
            "Each target (a URL's origin, or a channel) has its own breaker. Failure rates are over its recent window; recent latency is the median of the last attempt of its 10 newest tasks.",
        )) }
        @if total > rows.len() {
            p.notice { (lang.t("目标过多，仅按名称显示前 ", "Too many targets: showing the first ")) (rows.len()) " / " (total) }
        }
        div.scroll {
            table {
                thead { tr {
                    th { (lang.t("目标", "Target")) } th { (lang.t("熔断器", "Breaker")) }
                    th { (lang.t("失败率", "Failure rate")) } th { (lang.t("连续失败", "Failures in a row")) }
                    th { (lang.t("熔断次数", "Trips")) } th { (lang.t("重新探测", "Probe in")) }
                    th { (lang.t("投递中", "In flight")) } th { (lang.t("近期延迟", "Recent latency")) }
                } }
                tbody {
                    @if rows.is_empty() { tr { td.empty colspan="8" { (lang.t("尚未投递到任何目标。", "Nothing delivered yet.")) } } }
                    @for row in rows {
                        @let s = &row.breaker;
                        tr {
                            td.url { (row.key) }
                            td { span class={"badge breaker-" (s.state.as_str())} { (s.state.as_str()) } }
                            td.num { @if s.calls > 0 { (format!("{:.0} %", 100.0 * f64::from(s.failures) / f64::from(s.calls))) " (" (s.failures) "/" (s.calls) ")" } @else { "–" } }
                            td.num { (s.consecutive_failures) }
                            td.num { (s.trips) }
                            td { (s.retry_in.map(|d| format!("{} s", d.as_secs())).unwrap_or_else(|| "–".into())) }
                            td.num { (row.running) }
                            td.num { (row.latency_ms.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "–".into())) }
                        }
                    }
                }
            }
        }
    };
    layout(
        ui,
        Some(viewer),
        "targets",
        lang.t("目标", "Targets"),
        &body,
    )
}

pub(super) fn channels(
    ui: &Ui,
    viewer: &Viewer,
    channels: &[ChannelView],
    routes: &[RouteView],
) -> Markup {
    let lang = viewer.lang;
    let body = html! {
        div.scroll {
            table {
                thead { tr {
                    th { (lang.t("名称", "Name")) } th { (lang.t("类型", "Kind")) }
                    th { (lang.t("限速", "Rate limits")) } th { (lang.t("签名", "Signed")) } th { (lang.t("自定义模板", "Custom template")) }
                } }
                tbody {
                    @if channels.is_empty() { tr { td.empty colspan="5" { (lang.t("未配置渠道。", "No channel configured.")) } } }
                    @for c in channels {
                        tr {
                            td { a href=(ui.path(&format!("/tasks?channel={}", encode(&c.name)))) { (c.name) } }
                            td { (c.kind) }
                            td { (c.rate_limits.join(", ")) }
                            td { (if c.signed { lang.t("是", "yes") } else { lang.t("否", "no") }) }
                            td { (if c.custom_template { lang.t("是", "yes") } else { lang.t("否", "no") }) }
                        }
                    }
                }
            }
        }
        p.hint { (lang.t("从不显示渠道的 URL 与密钥。", "Channel URLs and secrets are never shown.")) }
        h2 { (lang.t("路由规则", "Routes")) }
        p.hint { (lang.t(
            "未指定目标的任务按顺序匹配规则，第一条匹配的规则决定投递到哪些渠道；SIGHUP 重新加载。",
            "A task whose request names no target goes where the first matching rule says; SIGHUP reloads them.",
        )) }
        div.scroll {
            table #routes {
                thead { tr {
                    th { (lang.t("名称", "Name")) } th { (lang.t("条件", "When")) } th { (lang.t("投递到", "To")) }
                } }
                tbody {
                    @if routes.is_empty() { tr { td.empty colspan="3" { (lang.t(
                        "未配置路由规则：每个任务投递到请求中的 webhook_url 或渠道。",
                        "No routes configured: each task goes to the webhook_url or channels its request names.",
                    )) } } }
                    @for r in routes {
                        tr {
                            td { (r.name) }
                            td {
                                @if r.default { em { (lang.t("默认（其余全部）", "default (everything else)")) } }
                                @for (key, values) in &r.when { div { code { (key) } " = " (values.join(" | ")) } }
                            }
                            td { (r.to.join(", ")) }
                        }
                    }
                }
            }
        }
    };
    layout(
        ui,
        Some(viewer),
        "channels",
        lang.t("渠道与路由", "Channels & routes"),
        &body,
    )
}
