#!/usr/bin/env bash
# Fuzzes every Boarding target for a bounded time, one after another.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60. Each target starts from its committed seeds
# (fuzz/corpus/<target>, never written to) plus a scratch corpus in fuzz/work/corpus
# that grows across runs, with the protocol dictionary. The script exits non-zero if
# any target crashes, leaks, times out or runs out of memory; the input that did it
# is in fuzz/artifacts/<target>/ and the libFuzzer log in fuzz/work/logs/<target>.log.
#
# Knobs (environment): FUZZ_RSS_LIMIT_MB (default 2048), FUZZ_TIMEOUT (seconds per
# input, default 10), FUZZ_MAX_LEN (bytes per input, default 4096).
set -euo pipefail

per_target="${1:-60}"
shift || true
case "$per_target" in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac
rss_limit="${FUZZ_RSS_LIMIT_MB:-2048}"
input_timeout="${FUZZ_TIMEOUT:-10}"
max_len="${FUZZ_MAX_LEN:-4096}"

fuzz_dir="$(cd "$(dirname "$0")" && pwd)"
cd "$fuzz_dir"

if ! cargo fuzz --version > /dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# One build for every target (the runs below then find it up to date).
build_start=$(date +%s)
cargo +nightly fuzz build
echo "built ${#targets[@]} targets in $(($(date +%s) - build_start)) s"

mkdir -p work/logs
failed=()
summary=()
for target in "${targets[@]}"; do
    mkdir -p "work/corpus/$target" "corpus/$target"
    log="work/logs/$target.log"
    echo "== $target: ${per_target} s"
    status=0
    # The outer timeout is a backstop: libFuzzer stops itself at -max_total_time.
    timeout --kill-after=30 "$((per_target + 300))" \
        cargo +nightly fuzz run "$target" "work/corpus/$target" "corpus/$target" -- \
        -max_total_time="$per_target" \
        -rss_limit_mb="$rss_limit" \
        -malloc_limit_mb="$rss_limit" \
        -timeout="$input_timeout" \
        -max_len="$max_len" \
        -dict="$fuzz_dir/boarding.dict" \
        -print_final_stats=1 \
        > "$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    corpus=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -n 1 | sed 's/corp: //')
    line="$(printf '%-26s %10s execs %7s exec/s  corpus %s' "$target" "${execs:-?}" "${rate:-?}" "${corpus:-?}")"
    if [ "$status" -ne 0 ]; then
        line="$line  FAILED (exit $status)"
        failed+=("$target")
        tail -n 40 "$log" >&2
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary (${per_target} s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "failed: ${failed[*]} (inputs in $fuzz_dir/artifacts/)" >&2
    exit 1
fi
