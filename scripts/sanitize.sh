#!/usr/bin/env bash
# Build and test under a sanitizer: `make test-asan` or `make test-tsan`.
#
#   asan  build-asan: ASan+UBSan (KEYGATE_SANITIZE, Debug), every target, the whole ctest suite.
#   tsan  build-tsan: ThreadSanitizer (KEYGATE_TSAN), the keygate binary, the integration tests.
#
# Sanitizer reports are also written under <build>/sanitizer-logs/ (log_path), because an
# integration test watches keygate from outside and may not notice a report on its stderr
# (a leak at exit, a race that did not change a response). Any report fails the run.
# Environment: JOBS (build and ctest, default 2); ASAN_OPTIONS/UBSAN_OPTIONS/TSAN_OPTIONS
# replace the defaults below.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"
mode="${1:?usage: scripts/sanitize.sh asan|tsan}"
jobs="${JOBS:-2}"

case "$mode" in
asan)
  build=build-asan
  cmake -S . -B "$build" -DKEYGATE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build "$build" -j"$jobs"
  logs="$repo/$build/sanitizer-logs"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}:log_path=$logs/asan"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}:log_path=$logs/ubsan"
  ctest_args=()
  ;;
tsan)
  build=build-tsan
  cmake -S . -B "$build" -DKEYGATE_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$build" -j"$jobs" --target keygate
  logs="$repo/$build/sanitizer-logs"
  opts="halt_on_error=1:second_deadlock_stack=1"
  # Suppressions only for reports understood to be false positives (see the file).
  if [ -f tests/tsan.supp ]; then opts="suppressions=$repo/tests/tsan.supp:$opts"; fi
  export TSAN_OPTIONS="${TSAN_OPTIONS:-$opts}:log_path=$logs/tsan"
  ctest_args=(-L integration)
  ;;
*)
  echo "usage: scripts/sanitize.sh asan|tsan" >&2
  exit 2
  ;;
esac

rm -rf "$logs"
mkdir -p "$logs"
status=0
ctest --test-dir "$build" --output-on-failure -j"$jobs" "${ctest_args[@]}" || status=$?

if compgen -G "$logs/*" >/dev/null; then
  # One process per file; the same report from many keygate runs is shown once in full.
  reports=("$logs"/*)
  echo "sanitize: ${#reports[@]} process(es) reported under $mode; the first report in full:" >&2
  cat "${reports[0]}" >&2
  echo "sanitize: every report, by summary line (all of them are in $logs):" >&2
  cat "${reports[@]}" | grep -h '^SUMMARY\|hard rss\|out of memory' | sort | uniq -c >&2 || true
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "sanitize: $mode FAILED" >&2
  exit "$status"
fi
echo "sanitize: $mode clean"
