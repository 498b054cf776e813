#!/usr/bin/env bash
# Fuzz keygate's parsers with libFuzzer (clang 14, ASan+UBSan): `make fuzz`.
#
# Builds build-fuzz/fuzz_<target> (KEYGATE_FUZZ=ON) and runs each target for FUZZ_SECONDS
# (default 60) over a copy of its seed corpus, tests/fuzz/corpus/<target>. New inputs go to
# build-fuzz/corpus/<target>, never into the repository. A crash or invariant failure stops
# with its input kept in build-fuzz/crashes/ and this script exits 1; add that input to the
# seed corpus once it is fixed, so the replay tests (ctest fuzz.*) keep it fixed.
#
# Environment: FUZZ_SECONDS (per target), FUZZ_TARGETS (default: all), JOBS (build, default 2),
# CXX_FUZZ (default clang++-14), FUZZ_BUILD_DIR (default build-fuzz).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${FUZZ_SECONDS:-60}"
targets=(${FUZZ_TARGETS:-config path request_head})
jobs="${JOBS:-2}"
cxx="${CXX_FUZZ:-clang++-14}"
build="${FUZZ_BUILD_DIR:-build-fuzz}"

if ! command -v "$cxx" >/dev/null; then
  echo "fuzz: $cxx not found; install clang-14 and libclang-rt-14-dev" >&2
  exit 1
fi

# -O1 without NDEBUG: fast enough, and asserts in the code under test stay armed.
# -Werror stays with the g++ builds: clang warns about things g++ does not (an unused
# constexpr helper), and a warning must not stop the fuzzing.
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DKEYGATE_FUZZ=ON -DKEYGATE_WERROR=OFF \
  -DBUILD_TESTING=OFF >/dev/null
cmake --build "$build" -j"$jobs" --target "${targets[@]/#/fuzz_}"

mkdir -p "$build/crashes"
# Leaks count as findings; UBSan stops at the first report so libFuzzer keeps the input.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=()
summary=()
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  mkdir -p "$corpus"
  cp -n tests/fuzz/corpus/"$t"/* "$corpus"/
  log="$build/fuzz_$t.log"
  echo "fuzz: fuzz_$t for ${seconds}s (log: $log)"
  status=0
  "$build/fuzz_$t" "$corpus" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$build/crashes/$t-" \
    >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  summary+=("fuzz_$t: ${execs:-?} executions, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) files")
  if [ "$status" -ne 0 ]; then
    failed+=("fuzz_$t")
    echo "fuzz: fuzz_$t FAILED (exit $status); the end of its log:" >&2
    tail -40 "$log" >&2
  fi
done

printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz: findings in ${failed[*]}; inputs kept in $build/crashes/:" >&2
  ls -l "$build/crashes" >&2
  exit 1
fi
