#!/usr/bin/env python3
"""Stops training runs whose mAP50-95 has not improved for N epochs.

    python3 stop_on_plateau.py --server=127.0.0.1:50051 --patience=5 --label=team=vision
    python3 stop_on_plateau.py --server=127.0.0.1:50051 --patience=3 --job=JOB_ID

Intercepts ``on_fit_epoch_end`` of the selected train jobs (by id, by labels,
or every job) and keeps each job's best ``metrics/mAP50-95(B)``; an epoch that
does not beat it by more than --min_delta counts against the patience, and when
the count reaches it the job is told to stop: it ends after that epoch's
validation and saving, like Ultralytics' EarlyStopping. With --job it exits
when the job has ended; otherwise it runs until Ctrl-C or SIGTERM.
"""

import argparse
import os
import signal
import sys
import threading

import yolohook

METRIC = "metrics/mAP50-95(B)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("YOLOHOOK_SERVER", "127.0.0.1:50051"),
                        help="yolohookd address (default: $YOLOHOOK_SERVER or 127.0.0.1:50051)")
    parser.add_argument("--patience", type=int, default=5, help="epochs without improvement")
    parser.add_argument("--min_delta", type=float, default=0.0, help="smallest improvement that counts")
    parser.add_argument("--job", action="append", default=[], help="a job id to follow")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE; jobs with it")
    parser.add_argument("--token", default=os.environ.get("YOLOHOOK_TOKEN"), help="bearer token")
    args = parser.parse_args()
    if args.patience < 1:
        parser.error("--patience must be at least 1")
    labels = dict(pair.split("=", 1) for pair in args.label if "=" in pair)
    if len(labels) != len(args.label):
        parser.error("--label wants KEY=VALUE")

    best = {}  # job id -> (best value, epochs without improvement)

    def on_fit_epoch_end(ev):
        value = ev.metrics.get(METRIC)
        if value is None:  # val=false: nothing to judge by
            return
        top, stale = best.get(ev.job_id, (None, 0))
        if top is None or value > top + args.min_delta:
            top, stale = value, 0
        else:
            stale += 1
        best[ev.job_id] = (top, stale)
        line = "job %s epoch %d/%d: %s %.4f (best %.4f, %d without improvement)" % (
            ev.job_id, ev.epoch + 1, ev.epochs, METRIC, value, top, stale)
        if stale >= args.patience and ev.epoch + 1 < ev.epochs:
            ev.stop("no improvement in %s for %d epochs" % (METRIC, stale))
            line += "; stopping"
        print(line, flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with yolohook.Client(args.server, token=args.token) as client:
        try:
            sub = client.add_callback("on_fit_epoch_end", on_fit_epoch_end, jobs=args.job or None,
                                      labels=labels)
        except yolohook.YolohookError as e:
            print("stop_on_plateau: %s" % e, file=sys.stderr)
            return 1
        print("stop_on_plateau: watching %s (patience %d)" % (
            ", ".join(args.job) or ", ".join("%s=%s" % kv for kv in labels.items()) or "every job",
            args.patience), flush=True)
        while not done.is_set() and not sub.ended:
            done.wait(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
