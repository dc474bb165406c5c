"""One scenario for the three clients: follow a training job through a proxy
that cuts every connection twice while the job runs; each client must print
every event of the job exactly once, in seq order, from 1 to the job's last.
The server's stream window is small, so each client must also acknowledge
what it takes (Ack) to get to the end.

    python3 resume_scenario.py --yolohookd=PATH --cli=PATH --node_dir=DIR

The C++ client is the `yolohook watch JOB` command (client/cpp through
client/cli), the Python client `python3 -m yolohook watch JOB`, the Node.js
client `node subscribe.js --job=JOB`; each prints a JSON line per event with
its seq. A client that is not available is reported and skipped (exit 77
when none is). Exit status 0 when every client passed, 1 otherwise.
"""

import argparse
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time

import yolohook
from yolohookd_fixture import Yolohookd, tiny_train_args

WAIT = 300


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``target``; cut() closes every connection
    it carries (the clients see their streams break and connect again)."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets = set()
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self._target)
            except OSError:
                down.close()
                continue
            with self._lock:
                if self._closed:
                    down.close()
                    up.close()
                    return
                self._sockets.update((down, up))
            threading.Thread(target=self._pipe, args=(down, up), daemon=True).start()

    def _pipe(self, a, b):
        peers = {a: b, b: a}
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):
                with self._lock:
                    self._sockets.discard(s)
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        with self._lock:
            sockets = list(self._sockets)
            self.cuts += 1
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        with self._lock:
            self._closed = True
        self._listener.close()
        self.cut()


class Follower:
    """One client's process, its stdout parsed as JSON lines with a seq."""

    def __init__(self, name, argv, env=None):
        self.name = name
        self.seqs = []
        self.errors = []
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env)
        self._out = threading.Thread(target=self._read, daemon=True)
        self._err = threading.Thread(target=self._read_errors, daemon=True)
        self._out.start()
        self._err.start()

    def _read(self):
        for line in self.process.stdout:
            try:
                self.seqs.append(int(json.loads(line)["seq"]))
            except (ValueError, KeyError):
                self.errors.append("not an event line: %r" % line)

    def _read_errors(self):
        for line in self.process.stderr:
            self.errors.append(line.rstrip())

    def wait(self, timeout):
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = "killed after %ds" % timeout
        self._out.join()
        self._err.join()
        return code


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--yolohookd", required=True)
    parser.add_argument("--cli", required=True, help="the yolohook command (C++ client)")
    parser.add_argument("--node_dir", required=True, help="client/node")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    os.environ["YOLOHOOKD"] = args.yolohookd
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    # A small window: a client that did not acknowledge what it takes would
    # stall after 8 messages and never see the job's end.
    server = Yolohookd("--stream_window=8")
    proxy = Proxy(server.address)
    results = {}
    try:
        client = yolohook.Client(server.address)
        # Held in the queue until every client follows it: a job that runs
        # behind a blocking interceptor until the followers are in place.
        gate = threading.Event()
        client.add_callback("on_pretrain_routine_start", lambda ev: gate.wait(WAIT),
                            labels={"scenario": "resume"}, reply_timeout=WAIT)
        job = client.train(labels={"scenario": "resume"}, **tiny_train_args(server.data, args.epochs))

        followers = []
        env = dict(os.environ)
        followers.append(Follower("cpp", [args.cli, "watch", job.id, "--server=" + proxy.address]))
        followers.append(Follower("python", [sys.executable, "-m", "yolohook", "watch", job.id,
                                             "--server=" + proxy.address], env=env))
        node = shutil.which("node")
        if node and os.path.isdir(os.path.join(args.node_dir, "node_modules")):
            followers.append(Follower("node", [node, os.path.join(args.node_dir, "subscribe.js"),
                                               "--job=" + job.id, "--server=" + proxy.address]))
        else:
            print("node: skipped (node or %s/node_modules missing)" % args.node_dir)
        time.sleep(1.0)
        gate.set()

        # Cut every connection twice while the job runs: after about a third
        # and two thirds of its events (a tiny job fires about 25 per epoch).
        expected = 25 * args.epochs
        for share in (1 / 3, 2 / 3):
            deadline = time.time() + WAIT
            while time.time() < deadline:
                current = client.get(job.id)
                if current.last_seq >= expected * share or current.state not in ("queued", "running"):
                    break
                time.sleep(0.05)
            proxy.cut()
        done = job.wait(WAIT)
        client.close()
        print("job %s %s, last seq %d, %d cuts" % (done.id, done.state, done.last_seq, proxy.cuts))
        if done.state != "succeeded":
            print("FAILED: the job did not succeed: %s" % done.error)
            return 1
        want = list(range(1, done.last_seq + 1))
        for f in followers:
            code = f.wait(WAIT)
            ok = code == 0 and f.seqs == want
            results[f.name] = ok
            detail = ""
            if not ok:
                missing = sorted(set(want) - set(f.seqs))
                dupes = len(f.seqs) - len(set(f.seqs))
                detail = " (exit %s; %d events, %d missing%s, %d duplicates, in order: %s)\n  %s" % (
                    code, len(f.seqs), len(missing), (" e.g. %s" % missing[:5]) if missing else "", dupes,
                    f.seqs == sorted(f.seqs), "\n  ".join(f.errors[-10:]))
            print("%s: %s%s" % (f.name, "passed: every seq once, in order" if ok else "FAILED", detail))
    finally:
        proxy.close()
        server.stop()
    if not results:
        return 77
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
