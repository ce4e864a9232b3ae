#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and fails if any of them
# finds a crash (a panic, a failed assertion, a sanitizer report, a timeout or running out of
# memory). Works from a clean clone: installs the pinned cargo-fuzz if it is missing, rewrites
# the seed corpora from fuzz/examples/write_seed_corpus.rs, and needs only the stable toolchain
# (RUSTC_BOOTSTRAP=1 lets it take the nightly-only flags cargo-fuzz passes).
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 3600       # an hour per target
#   TACIT_FUZZ_TARGETS="client_frame device_certificate" scripts/fuzz.sh 600
#
# Each target starts from the committed seeds (fuzz/corpus/<target>/, never written to) plus
# what earlier runs on this machine found (fuzz/target/work/<target>/, kept between runs, not
# committed). A crashing input is saved as fuzz/artifacts/<target>/crash-*; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
case $seconds in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2 ;; esac
cargo_fuzz_version=0.13.2
export RUSTC_BOOTSTRAP=1

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
  echo "== installing cargo-fuzz $cargo_fuzz_version"
  cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

echo "== seed corpora"
cargo run -q --manifest-path fuzz/Cargo.toml --example write_seed_corpus
if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$(git status --porcelain -- fuzz/corpus)" ]; then
  echo "note: the seed corpora changed (schema or seeds changed): commit fuzz/corpus/" >&2
fi

read -r -d "" -a targets < <(printf '%s\n' ${TACIT_FUZZ_TARGETS:-$(cargo fuzz list)}) || true
echo "== building ${#targets[@]} fuzz targets (AddressSanitizer, debug assertions)"
cargo fuzz build --debug-assertions

work=fuzz/target/work
mkdir -p "$work"
summary=()
failed=()
for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${seconds} s"
  mkdir -p "$work/$target"
  log="$work/$target.log"
  status=ok
  # -timeout: an input taking 10 s is a hang; -rss_limit_mb: 2 GiB is far beyond what any
  # decoder may take (the frame targets check the exact allocation bound themselves).
  if ! cargo fuzz run --debug-assertions "$target" "$work/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; then
    status=FAILED
    failed+=("$target")
    grep -E "panicked at|assertion|ERROR: |SUMMARY|Test unit written" "$log" | head -n 12 >&2 || true
    echo "(full log: $log)" >&2
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  corpus=$(find "$work/$target" -type f | wc -l)
  summary+=("$(printf '%-22s %-7s %12s %10s %8s' "$target" "$status" "${runs:-?}" "${rate:-?}" "$corpus")")
done

echo "== fuzzing summary (${seconds} s per target)"
printf '%-22s %-7s %12s %10s %8s\n' target result executions exec/s corpus
printf '%s\n' "${summary[@]}"
echo "fuzzing: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
