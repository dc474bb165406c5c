#!/usr/bin/env python3
"""Removes classes from the predictions of yolohookd's predict jobs.

    python3 filter_classes.py --server=127.0.0.1:50051 --classes=1,star --label=app=demo

Intercepts ``on_predict_postprocess_end`` of every predict job carrying the
labels (every job without --label): boxes of the given classes (ids or names)
are dropped before the server saves the images and returns the results. Runs
until Ctrl-C or SIGTERM. Prints one line when it is subscribed and one per
batch it changed.
"""

import argparse
import os
import signal
import sys
import threading

import yolohook


def parse_labels(pairs):
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit("--label wants KEY=VALUE, got %r" % pair)
        labels[key] = value
    return labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("YOLOHOOK_SERVER", "127.0.0.1:50051"),
                        help="yolohookd address (default: $YOLOHOOK_SERVER or 127.0.0.1:50051)")
    parser.add_argument("--classes", required=True, help="comma-separated class ids or names to drop")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE; only jobs with it")
    parser.add_argument("--event", default="on_predict_postprocess_end",
                        choices=["on_predict_postprocess_end", "on_predict_batch_end"],
                        help="postprocess_end: before images are saved; batch_end: after")
    parser.add_argument("--token", default=os.environ.get("YOLOHOOK_TOKEN"), help="bearer token")
    args = parser.parse_args()
    drop = {c.strip() for c in args.classes.split(",") if c.strip()}
    labels = parse_labels(args.label)

    def filter_boxes(ev):
        removed = 0
        for r in ev.results:
            keep = [b for b in r.boxes if str(b.cls) not in drop and r.names.get(b.cls) not in drop]
            removed += len(r.boxes) - len(keep)
            r.boxes = keep
        if removed:
            print("job %s batch %d: dropped %d boxes" % (ev.job_id, ev.batch_index, removed), flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with yolohook.Client(args.server, token=args.token) as client:
        try:
            client.add_callback(args.event, filter_boxes, labels=labels)
        except yolohook.YolohookError as e:
            print("filter_classes: %s" % e, file=sys.stderr)
            return 1
        print("filter_classes: intercepting %s of %s; dropping classes %s" % (
            args.event, ", ".join("%s=%s" % kv for kv in labels.items()) or "every job",
            ", ".join(sorted(drop))), flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
