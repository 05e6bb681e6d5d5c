#!/usr/bin/env bash
# Long runs: every seeded suite at about 40x its CI seed count, spread over the cores.
#
#   scripts/soak.sh [SCALE]      SCALE 1 (default): 40x CI, thousands of seeds (~40 min on
#                                2 cores); SCALE 0.1: a tenth of that, for a quick run
#
# A seeded suite is a test file that reads its seed count from an environment variable
# `<NAME>_SEEDS` (default: the CI count) and one seed to replay from `<NAME>_SEED`; every
# such file under tests/ is found by that pattern, so a new suite joins without an edit.
# Each suite is cut into shards by seed modulo (scripts/soak_shard.py), and at most
# SOAK_JOBS shards (default: one per core) run at once. SOAK_SUITES (e.g. "EC DATA") soaks
# only the suites of those names; SOAK_SHARD_TIMEOUT_S, if set, stops a shard that runs
# longer. At the end: one replay command per failing seed, then one summary line. Exits 1
# if any seed failed.
set -euo pipefail
cd "$(dirname "$0")/.."

FACTOR=40
PY=.venv/bin/python

run_shard() { # VAR COUNT FILE INDEX SHARDS: one pytest over seeds = INDEX mod SHARDS
  local var=$1 count=$2 file=$3 index=$4 shards=$5
  local log="$SOAK_LOGS/${var}.${index}.log"
  local limit=()
  [ -n "${SOAK_SHARD_TIMEOUT_S:-}" ] && limit=(timeout "$SOAK_SHARD_TIMEOUT_S")
  # A replay variable left in the caller's environment would shrink the suite to one seed.
  env -u "${var%S}" "$var=$count" SOAK_SHARD="$index/$shards" \
    PYTHONPATH="scripts${PYTHONPATH:+:$PYTHONPATH}" \
    "${limit[@]}" "$PY" -m pytest -q -p no:cacheprovider -p soak_shard -rfE "$file" \
    >"$log" 2>&1 || true
}

if [ "${1:-}" = "--shard" ]; then
  shift
  run_shard "$@"
  exit 0
fi

scale="${1:-1}"
if ! [[ "$scale" =~ ^[0-9]*\.?[0-9]+$ ]] || awk -v s="$scale" 'BEGIN { exit !(s <= 0) }'; then
  echo "usage: scripts/soak.sh [SCALE]   (a positive number; 1 = ${FACTOR}x the CI seeds)" >&2
  exit 2
fi
jobs="${SOAK_JOBS:-$(nproc)}"
[ -x "$PY" ] || scripts/setup.sh

# file:line:environ.get("NAME_SEEDS", "CI_COUNT"), one per seeded suite.
mapfile -t found < <(
  grep -rnoE --include='*.py' 'environ\.get\("[A-Z0-9_]+_SEEDS", "[0-9]+"\)' tests/ | sort -u
)

SOAK_LOGS="$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")"
export SOAK_LOGS SOAK_SHARD_TIMEOUT_S
declare -A suite_file=()
shard_lines=()
for hit in "${found[@]}"; do
  file="${hit%%:*}"
  var="$(sed -E 's/.*"([A-Z0-9_]+_SEEDS)".*/\1/' <<<"$hit")"
  if [ -n "${SOAK_SUITES:-}" ] && ! [[ " $SOAK_SUITES " == *" ${var%_SEEDS} "* ]]; then
    continue
  fi
  ci="$(sed -E 's/.*"([0-9]+)"\)$/\1/' <<<"$hit")"
  count="$(awk -v c="$ci" -v f="$FACTOR" -v s="$scale" \
    'BEGIN { n = c * f * s; r = int(n); if (r < n) r++; if (r < 1) r = 1; print r }')"
  shards=$((jobs * 2 < count ? jobs * 2 : count))
  suite_file[$var]="$file"
  echo "soak: $var=$count (CI $ci) $file, $shards shards" >&2
  for ((i = 0; i < shards; i++)); do
    shard_lines+=("$var $count $file $i $shards")
  done
done

if [ "${#shard_lines[@]}" -eq 0 ]; then
  echo "soak: no seeded suite found under tests/${SOAK_SUITES:+ named $SOAK_SUITES}" >&2
  rm -rf "$SOAK_LOGS"
  exit 2
fi

start=$SECONDS
printf '%s\n' "${shard_lines[@]}" | xargs -P "$jobs" -n 5 "$0" --shard || true
wall=$((SECONDS - start))

runs=0
failures=0
replays=()
for line in "${shard_lines[@]}"; do
  read -r var count file index shards <<<"$line"
  log="$SOAK_LOGS/${var}.${index}.log"
  summary="$(grep -E '^=* ?[0-9]+ (passed|failed|error)' "$log" | tail -n 1 || true)"
  if [ -z "$summary" ]; then
    failures=$((failures + 1))
    replays+=("$var 0 broken: shard $index/$shards of $var did not finish (killed or timed out): $log")
    continue
  fi
  for kind in passed failed error errors; do
    n="$(grep -oE "[0-9]+ $kind\b" <<<"$summary" | cut -d' ' -f1 || true)"
    runs=$((runs + ${n:-0}))
  done
  while read -r _ nodeid _; do
    [ -n "$nodeid" ] || continue
    failures=$((failures + 1))
    test="${nodeid#*::}"
    test="${test%%[*}"
    seed="${nodeid##*[}"
    seed="${seed%]}"
    one="${var%S}"
    if grep -q "\"$one\"" "$file"; then
      replays+=("$var $seed replay: $one=$seed $PY -m pytest -p no:cacheprovider $file -k $test")
    else
      replays+=("$var $seed replay: $var=$((seed + 1)) $PY -m pytest -p no:cacheprovider '$nodeid'")
    fi
  done < <(grep -E '^(FAILED|ERROR) ' "$log" || true)
done

# Sorted by suite, then seed; the sort key is cut off again.
if [ "${#replays[@]}" -gt 0 ]; then
  printf '%s\n' "${replays[@]}" | sort -k1,1 -k2,2n | cut -d' ' -f3-
fi
if [ "$failures" -eq 0 ]; then
  rm -rf "$SOAK_LOGS"
  logs=""
else
  logs=", logs in $SOAK_LOGS"
fi
printf 'soak: %d suites, %d seed runs, %d failures, wall %dh%02dm%02ds (scale %s, %d jobs)%s\n' \
  "${#suite_file[@]}" "$runs" "$failures" $((wall / 3600)) $((wall % 3600 / 60)) \
  $((wall % 60)) "$scale" "$jobs" "$logs"
[ "$failures" -eq 0 ]
