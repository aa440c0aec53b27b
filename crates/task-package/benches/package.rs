//! The request hot path of `POST /workflow/tasks`: parse and validate the seed's body, build the
//! task package, serialise it (what is stored and sent), and a receiver's parse + validate.
//!
//! Run with: `cargo bench -p task-package -- --warm-up-time 1 --measurement-time 3`

#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use task_package::{CreateTaskRequest, TaskPackage, create_task_package};

const SEED: &str = include_str!("../tests/golden/seed_request.json");

fn package(c: &mut Criterion) {
    let body = SEED.as_bytes();
    let request = CreateTaskRequest::from_json_slice(body).expect("the seed's body is valid");
    let now = chrono::Utc::now();
    let mut pkg = create_task_package(&request, now);
    pkg.delivery_instructions.callback_url =
        Some("http://127.0.0.1:8080/workflow/tasks/wf_1732435200_0a1b2c3d/callback".to_owned());
    pkg.delivery_instructions.callback_token = Some("0123456789abcdef".repeat(4));
    let bytes = pkg.to_json_bytes();

    let mut group = c.benchmark_group("task_package");
    group.throughput(Throughput::Elements(1));
    group.bench_function("request_parse_validate", |b| {
        b.iter(|| CreateTaskRequest::from_json_slice(std::hint::black_box(body)))
    });
    group.bench_function("create_package", |b| {
        b.iter(|| create_task_package(std::hint::black_box(&request), now))
    });
    group.bench_function("package_to_json", |b| {
        b.iter(|| std::hint::black_box(&pkg).to_json_bytes())
    });
    group.bench_function("package_to_value", |b| {
        // The dispatcher stores the package as a `serde_json::Value` inside the task payload.
        b.iter(|| serde_json::to_value(std::hint::black_box(&pkg)))
    });
    group.bench_function("package_validate", |b| {
        b.iter(|| std::hint::black_box(&pkg).validate())
    });
    group.bench_function("package_parse_validate", |b| {
        b.iter(|| TaskPackage::from_json_slice(std::hint::black_box(&bytes)))
    });
    group.bench_function("request_to_package_json", |b| {
        // Everything the API does to a body before it is stored.
        b.iter(|| {
            let r = CreateTaskRequest::from_json_slice(std::hint::black_box(body)).expect("valid");
            create_task_package(&r, now).to_json_bytes()
        })
    });
    group.finish();
}

criterion_group!(benches, package);
criterion_main!(benches);
