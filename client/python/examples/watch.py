#!/usr/bin/env python3
"""A dashboard line per training epoch: losses and mAP, for one job or many.

    python3 watch.py --server=127.0.0.1:50051 --job=JOB_ID        # from its start to its end
    python3 watch.py --server=127.0.0.1:50051 --label=team=vision # new epochs of those jobs

Observes ``on_fit_epoch_end`` (it never slows a job) and prints

    job-3f2a epoch  3/30  box 1.234 cls 2.345 dfl 1.111  P 0.512 R 0.430 mAP50 0.401 mAP50-95 0.212  12.3s

With --job it replays the job's epochs so far and exits when the job ends
(exit status 1 unless it succeeded); with --label (or neither: every job) it
follows new epochs until Ctrl-C.
"""

import argparse
import os
import sys

import yolohook


def line(ev):
    m = ev.metrics
    losses = " ".join("%s %.3f" % (name.replace("_loss", ""), v) for name, v in ev.losses.items())
    return "%s epoch %3d/%d  %s  P %.3f R %.3f mAP50 %.3f mAP50-95 %.3f  %.1fs" % (
        ev.job_id, ev.epoch + 1, ev.epochs, losses, m.get("metrics/precision(B)", 0.0),
        m.get("metrics/recall(B)", 0.0), m.get("metrics/mAP50(B)", 0.0),
        m.get("metrics/mAP50-95(B)", 0.0), ev.epoch_time)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("YOLOHOOK_SERVER", "127.0.0.1:50051"),
                        help="yolohookd address (default: $YOLOHOOK_SERVER or 127.0.0.1:50051)")
    parser.add_argument("--job", help="a job id: from its first epoch to its end")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE; jobs with it")
    parser.add_argument("--token", default=os.environ.get("YOLOHOOK_TOKEN"), help="bearer token")
    args = parser.parse_args()
    labels = dict(pair.split("=", 1) for pair in args.label if "=" in pair)
    if len(labels) != len(args.label):
        parser.error("--label wants KEY=VALUE")

    with yolohook.Client(args.server, token=args.token) as client:
        try:
            for ev in client.watch(args.job, events=["on_fit_epoch_end"], labels=labels):
                print(line(ev), flush=True)
            if args.job:
                job = client.get(args.job).wait()
                print("%s %s%s" % (job.id, job.state, ": " + job.error if job.error else ""), flush=True)
                return 0 if job.state == "succeeded" else 1
        except KeyboardInterrupt:
            pass
        except yolohook.YolohookError as e:
            print("watch: %s" % e, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
