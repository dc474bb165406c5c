#!/usr/bin/env bash
# yolohookd refuses a non-loopback address without a token file, names the
# fix, and serves it with --insecure (or with a token file). Port 0 throughout.
# Usage: yolohookd_listen_test.sh PATH_TO_YOLOHOOKD
set -u
yolohookd=$1
dir=$(mktemp -d)
pid=
cleanup() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# Refused: the error says why and how to fix it.
if "$yolohookd" --listen=0.0.0.0:0 --data_dir="$dir/data" >"$dir/out" 2>&1; then
  fail "0.0.0.0 without a token file was served: $(cat "$dir/out")"
fi
grep -q -- "--listen=0.0.0.0:0 accepts connections from other machines" "$dir/out" \
  || fail "unexpected refusal: $(cat "$dir/out")"
grep -q -- "--token_file=FILE" "$dir/out" || fail "no fix named: $(cat "$dir/out")"
grep -q -- "--insecure" "$dir/out" || fail "--insecure not named: $(cat "$dir/out")"
[[ ! -e $dir/data ]] || fail "the refused server touched its data directory"

# A bad token file names file and line.
printf 'tok,alice,viewer\ntok,bob,admin\n' >"$dir/tokens.csv"
if "$yolohookd" --listen=0.0.0.0:0 --data_dir="$dir/data" \
    --token_file="$dir/tokens.csv" >"$dir/out" 2>&1; then
  fail "a duplicate token was accepted"
fi
grep -q -- "$dir/tokens.csv:2: duplicate token" "$dir/out" \
  || fail "unexpected error: $(cat "$dir/out")"
grep -q "tok," "$dir/out" && fail "the error shows a token: $(cat "$dir/out")"

# Served with --insecure, and with a token file; SIGTERM stops it.
serve() {
  "$yolohookd" --listen=0.0.0.0:0 --data_dir="$dir/data" --threads=1 "$@" \
    >"$dir/out" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    grep -q "bearer tokens\|no authentication" "$dir/out" && break
    kill -0 "$pid" 2>/dev/null || fail "yolohookd $*: exited: $(cat "$dir/out")"
    sleep 0.1
  done
  grep -q "listening on 0.0.0.0:" "$dir/out" \
    || fail "yolohookd $*: not listening: $(cat "$dir/out")"
  kill -TERM "$pid"
  wait "$pid" || fail "yolohookd $*: exit code $? after SIGTERM"
  pid=
}
serve --insecure
printf 'tok,alice,viewer\n' >"$dir/tokens.csv"
serve --token_file="$dir/tokens.csv"
grep -q "bearer tokens" "$dir/out" || fail "auth not reported: $(cat "$dir/out")"
echo PASS
