#!/usr/bin/env bash
# The README's main job, on the embedded defaults: starts yolohookd on
# 127.0.0.1, trains YOLOv8n on the built-in shapes dataset through it while the
# job's events stream to this terminal, prints the final epoch's event as JSON,
# then predicts through the server with an interceptor replacing the results.
#
# Everything goes under one data directory ($YOLOHOOK_DATA_DIR, default
# ~/.yolohook): the job store (yolohook.db), the dataset, runs/ and the
# server's log. The dashboard is served on $YOLOHOOK_HTTP (default
# 127.0.0.1:8080). Overrides for a quick look: EPOCHS=3 IMGSZ=160.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-build/bin}
DATA_DIR=${YOLOHOOK_DATA_DIR:-$HOME/.yolohook}
ADDR=${YOLOHOOK_ADDRESS:-127.0.0.1:50051}
HTTP=${YOLOHOOK_HTTP:-127.0.0.1:8080}
EPOCHS=${EPOCHS:-30}
IMGSZ=${IMGSZ:-320}
LABEL=app=quickstart

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

mkdir -p "$DATA_DIR"
SERVER_LOG=$DATA_DIR/yolohookd.log
step "Starting yolohookd on $ADDR (data in $DATA_DIR, log in $SERVER_LOG)"
echo "Dashboard: http://$HTTP/ (open it in a browser to follow the training)"
"$BIN/yolohookd" --listen="$ADDR" --data_dir="$DATA_DIR" --http_listen="$HTTP" \
  >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
HOOK_PID=
cleanup() {
  [[ -n $HOOK_PID ]] && kill "$HOOK_PID" 2>/dev/null || true
  kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  "$BIN/yolohook" jobs limit=1 --server="$ADDR" >/dev/null 2>&1 && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "yolohookd did not start:" >&2
    cat "$SERVER_LOG" >&2
    exit 1
  fi
  sleep 0.1
done

step "Training through the server (events streamed to this terminal)"
"$BIN/yolohook" train data=shapes model=yolov8n epochs="$EPOCHS" imgsz="$IMGSZ" nbs=16 \
  --server="$ADDR" --label="$LABEL"

JOB=$("$BIN/yolohook" jobs state=succeeded limit=1 --server="$ADDR" | awk 'NR == 2 { print $1 }')
step "The last on_fit_epoch_end of $JOB, replayed from the job store as JSON"
"$BIN/yolohook" watch "$JOB" --events=on_fit_epoch_end --server="$ADDR" | tail -n 1

RUN=$(ls -td "$DATA_DIR"/runs/detect/train*/ | head -n 1)
WEIGHTS=${RUN%/}/weights/best.pt
step "Predicting with an interceptor that keeps boxes above 0.5 and renames circle to ball"
HOOK_LOG=$DATA_DIR/keep_confident.log
"$BIN/yolohook_keep_confident" --server="$ADDR" --label="$LABEL" --min_conf=0.5 \
  --rename=circle=ball --count=1 >"$HOOK_LOG" 2>&1 &
HOOK_PID=$!
# It prints "intercepting ..." once the server acknowledged its subscription.
until grep -q intercepting "$HOOK_LOG"; do
  kill -0 "$HOOK_PID" 2>/dev/null || { cat "$HOOK_LOG" >&2; exit 1; }
  sleep 0.1
done
"$BIN/yolohook" predict model="$WEIGHTS" imgsz="$IMGSZ" batch=4 \
  source="$DATA_DIR/datasets/shapes/images/val/0000[0-3].jpg" --server="$ADDR" --label="$LABEL"
wait "$HOOK_PID" || true
HOOK_PID=
step "What the interceptor changed"
cat "$HOOK_LOG"

step "Done: weights in ${RUN%/}/weights, job history in $DATA_DIR/yolohook.db ('yolohook jobs --server=$ADDR')"
