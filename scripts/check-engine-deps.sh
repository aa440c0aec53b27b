#!/usr/bin/env bash
# workflow-core is the generic job engine: any Rust service may use it as its job queue, so it
# must not depend on the product's crates (DESIGN.md section 2). Fails, naming the offender,
# when `cargo tree` shows one among its normal (non-dev) dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(task-package|webhook-client|circuit-breaker|workflow-dispatch|async-tasks|service-kit|dingtalk-[a-z-]+|dispatcher|dingtalk-bot|dispatcher-client) '
tree="$(cargo tree --locked -p workflow-core -e normal --prefix none --all-features)"
if offenders="$(grep -E "$forbidden" <<<"$tree" | sort -u)" && [ -n "$offenders" ]; then
    echo "workflow-core must not depend on product crates; it does on:" >&2
    echo "$offenders" >&2
    exit 1
fi
echo "workflow-core depends on no product crate"
