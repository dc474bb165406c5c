"""The example programs in client/python/examples run against a real yolohookd."""

import os
import signal
import subprocess
import sys
import unittest

import yolohook
from yolohookd_fixture import Yolohookd, tiny_train_args

EXAMPLES = os.environ.get(
    "YOLOHOOK_EXAMPLES",
    os.path.join(os.path.dirname(__file__), "..", "..", "..", "client", "python", "examples"))
WAIT = 300


class Example:
    """An example running as its own process; ``ready()`` reads its first line."""

    def __init__(self, name, *args):
        self.process = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, name)] + list(args),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ready(self):
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError("example exited: %s" % self.process.stderr.read())
        return line

    def stop(self):
        """SIGTERM, then its remaining output and exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=60)
        return out, err, self.process.returncode


class ExamplesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.server = Yolohookd()
        cls.client = yolohook.Client(cls.server.address)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()

    def test_plateau_stops_training_then_filter_and_watch(self):
        # stop_on_plateau: an improvement must exceed 0.5 mAP50-95, which a
        # tiny run never reaches, so the second epoch stops a 4-epoch job.
        hook = Example("stop_on_plateau.py", "--server=" + self.server.address, "--patience=1",
                       "--min_delta=0.5", "--label=test=plateau")
        self.assertIn("watching test=plateau", hook.ready())
        job = self.client.train(labels={"test": "plateau"}, **tiny_train_args(self.server.data, 4))
        job.wait(WAIT)
        out, err, code = hook.stop()
        self.assertEqual(code, 0, err)
        self.assertEqual(job.state, "succeeded", job.error)
        self.assertIn("epoch 2/4", out)
        self.assertIn("stopping", out)
        fit = [ev for ev in self.client.watch(job, events="on_fit_epoch_end", timeout=WAIT)]
        self.assertEqual([ev.epoch for ev in fit], [0, 1])
        self.assertTrue(fit[-1].stop_training)

        # watch.py replays the job's epochs and exits with its state.
        watch = subprocess.run([sys.executable, os.path.join(EXAMPLES, "watch.py"),
                                "--server=" + self.server.address, "--job=" + job.id],
                               capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(watch.returncode, 0, watch.stderr)
        lines = watch.stdout.splitlines()
        self.assertEqual(len(lines), 3, watch.stdout)
        self.assertIn("epoch   1/4", lines[0])
        self.assertIn("mAP50-95", lines[1])
        self.assertEqual(lines[2], "%s succeeded" % job.id)
        # An error is an exit status of 1, with the reason on stderr.
        missing = subprocess.run([sys.executable, os.path.join(EXAMPLES, "watch.py"),
                                  "--server=" + self.server.address, "--job=job-none"],
                                 capture_output=True, text=True, timeout=WAIT)
        self.assertEqual(missing.returncode, 1, missing.stdout)
        self.assertIn('job "job-none" does not exist', missing.stderr)

        # filter_classes drops circles from an untrained model's many low
        # confidence boxes; other jobs keep theirs.
        best = job.artifacts["weights_best"]
        image = sorted(os.listdir(os.path.join(os.path.dirname(self.server.data), "images", "val")))[0]
        image = os.path.join(os.path.dirname(self.server.data), "images", "val", image)
        args = dict(model=best, imgsz=64, conf=0.001, max_det=100)
        before = self.client.predict(image, **args)
        self.assertIn(0, {b.cls for b in before[0].boxes})
        hook = Example("filter_classes.py", "--server=" + self.server.address, "--classes=circle",
                       "--label=test=filter")
        self.assertIn("dropping classes circle", hook.ready())
        after = self.client.predict(image, labels={"test": "filter"}, **args)
        other = self.client.predict(image, labels={"test": "other"}, **args)
        out, err, code = hook.stop()
        self.assertEqual(code, 0, err)
        self.assertNotIn(0, {b.cls for b in after[0].boxes})
        self.assertEqual(len(after[0].boxes), sum(b.cls != 0 for b in before[0].boxes))
        self.assertEqual(len(other[0].boxes), len(before[0].boxes))
        self.assertIn("dropped", out)


if __name__ == "__main__":
    unittest.main()
