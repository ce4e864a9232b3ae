#!/usr/bin/env bash
# Longer crash runs by hand: the crash tests of `cargo test` (tacit-cli's `crash` test target)
# with many more kills, in a release build, printing their figures.
#
#   scripts/crash-test.sh          # 50 kills of `tacit serve`, 50 kills of `tacit sync`
#   scripts/crash-test.sh 200      # 200 of each
#
# Each test prints its random seed first; TACIT_CRASH_SEED=<seed> replays the same schedule
# (as far as timing allows). Each test's last line starts with "crash figures:"; they are
# repeated at the end. TACIT_CRASH_DEBUG=1 uses the debug build instead of a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

kills=${1:-50}
case "$kills" in
  '' | *[!0-9]*) echo "usage: $0 [KILLS]   (KILLS: a number, default 50)" >&2; exit 2 ;;
esac
release=--release
[ "${TACIT_CRASH_DEBUG:-}" = 1 ] && release=
log=$(mktemp -t tacit-crash.XXXXXX)
trap 'rm -f "$log"' EXIT
status=0
TACIT_CRASH_KILLS="$kills" cargo test $release -p tacit-cli --test crash -- \
  --nocapture --test-threads=1 2>&1 | tee "$log" || status=$?
echo
echo "== summary ($kills kills per test)"
grep -E 'crash figures:' "$log" || echo "no figures: a test failed before the end"
exit "$status"
