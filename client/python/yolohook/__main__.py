"""The yolohook package as a command: ``python3 -m yolohook COMMAND``.

    python3 -m yolohook watch JOB [--events=a,b] [--from_seq=N]
        a job's events as JSON lines ({"job_id", "seq", "name", "attempt"}),
        from its first (or from_seq) to its end, across broken streams and
        server restarts; exit status 0 when the job's events all came, 1 on
        an error
    python3 -m yolohook events
        the server's event catalogue (name, stage, job modes, the mutations an
        interceptor may send there), one JSON line per event

--server (default $YOLOHOOK_SERVER or 127.0.0.1:50051) and --token (default
$YOLOHOOK_TOKEN) go before or after the command.
"""

import argparse
import json
import os
import sys

import yolohook
from yolohook.v1 import jobs_pb2


def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", default=os.environ.get("YOLOHOOK_SERVER", "127.0.0.1:50051"),
                        help="yolohookd address (default: $YOLOHOOK_SERVER or 127.0.0.1:50051)")
    common.add_argument("--token", default=os.environ.get("YOLOHOOK_TOKEN"), help="bearer token")
    parser = argparse.ArgumentParser(prog="python3 -m yolohook", parents=[common],
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    watch = commands.add_parser("watch", parents=[common],
                                help="a job's events as JSON lines, resuming across broken streams")
    watch.add_argument("job", help="the job's id")
    watch.add_argument("--events", default="", help="only these event names, comma-separated")
    watch.add_argument("--from_seq", type=int, default=1, help="first seq (default 1: all)")
    commands.add_parser("events", parents=[common], help="the server's event catalogue")
    return parser


def _watch(client, args):
    events = [e for e in args.events.split(",") if e] or None
    for ev in client.watch(args.job, events=events, from_seq=args.from_seq):
        print(json.dumps({"job_id": ev.job_id, "seq": ev.seq, "name": ev.name,
                          "attempt": ev.wire.attempt}), flush=True)
    return 0


def _events(client, _args):
    for event in client.server_info().events:
        print(json.dumps({"name": event.name, "stage": event.stage,
                          "modes": [jobs_pb2.Mode.Name(m) for m in event.modes],
                          "mutations": list(event.mutations)}), flush=True)
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        with yolohook.Client(args.server, token=args.token) as client:
            return {"watch": _watch, "events": _events}[args.command](client, args)
    except KeyboardInterrupt:
        return 130
    except (yolohook.YolohookError, ValueError) as e:
        print("yolohook: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
