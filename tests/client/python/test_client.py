"""The Python client against a real yolohookd: observing, intercepting, stopping, resuming."""

import math
import os
import random
import subprocess
import tempfile
import threading
import time
import unittest
from concurrent import futures

import grpc

import yolohook
from yolohook.v1 import jobs_pb2, jobs_pb2_grpc, types_pb2
from yolohookd_fixture import Yolohookd, shapes_image, tiny_train_args

WAIT = 300  # seconds; tiny jobs take seconds, a busy machine more


def expected_train_events(epochs, train_batches, val_batches):
    """Ultralytics' order of a training run's events (as tests/engine checks it)."""
    e = ["on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start"]

    def val():
        e.append("on_val_start")
        e.extend(["on_val_batch_start", "on_val_batch_end"] * val_batches)
        e.append("on_val_end")

    for epoch in range(epochs):
        e.append("on_train_epoch_start")
        e.extend(["on_train_batch_start", "optimizer_step", "on_before_zero_grad",
                  "on_train_batch_end"] * train_batches)
        e.append("on_train_epoch_end")
        val()
        e.extend(["on_model_save", "on_fit_epoch_end"])
        if epoch + 1 < epochs:
            e.append("on_params_update")
    val()  # best.pt once more, without another on_fit_epoch_end
    e.extend(["on_train_end", "teardown"])
    return e


class EventTest(unittest.TestCase):
    """Event wrappers and the mutations a callback's changes become (no server)."""

    def trainer_event(self):
        wire = types_pb2.Event(name="on_fit_epoch_end", job_id="j", seq=7)
        wire.trainer.epoch = 2
        wire.trainer.metrics["metrics/mAP50-95(B)"] = 0.25
        wire.trainer.logged_metrics["custom"] = float("nan")
        wire.trainer.hyperparameters["lr0"] = 0.01
        wire.trainer.loss_names.extend(["box_loss", "cls_loss", "dfl_loss"])
        wire.trainer.tloss.extend([1.0, 2.0, 3.0])
        return yolohook.Event(wire)

    def test_trainer_state_reads_as_attributes(self):
        ev = self.trainer_event()
        self.assertEqual((ev.name, ev.job_id, ev.seq, ev.stage), ("on_fit_epoch_end", "j", 7, "trainer"))
        self.assertEqual(ev.epoch, 2)
        self.assertEqual(ev.metrics["metrics/mAP50-95(B)"], 0.25)
        self.assertEqual(ev.losses, {"box_loss": 1.0, "cls_loss": 2.0, "dfl_loss": 3.0})
        self.assertEqual(ev.loss_names, ["box_loss", "cls_loss", "dfl_loss"])
        self.assertIsNone(ev.results)
        with self.assertRaises(AttributeError):
            ev.no_such_field

    def test_unchanged_event_has_no_mutations(self):
        self.assertEqual(self.trainer_event().mutations(), [])

    def test_trainer_changes_become_mutations(self):
        ev = self.trainer_event()
        ev.stop("plateau")
        ev.hyperparameters["lr0"] = 0.02
        ev.log(score=3.0)
        ev.metrics["custom"] = float("nan")  # NaN left as it was: no change
        kinds = {m.WhichOneof("kind"): m for m in ev.mutations()}
        self.assertEqual(sorted(kinds), ["log_metrics", "set_hyperparameters", "stop_training"])
        self.assertEqual(kinds["stop_training"].stop_training.reason, "plateau")
        self.assertEqual(dict(kinds["set_hyperparameters"].set_hyperparameters.values), {"lr0": 0.02})
        self.assertEqual(dict(kinds["log_metrics"].log_metrics.metrics), {"score": 3.0})

    def test_replaced_results_and_fail(self):
        wire = types_pb2.Event(name="on_predict_batch_end", job_id="j", seq=3)
        result = wire.predictor.results.add(path="a.jpg", orig_height=64, orig_width=48)
        result.names[0] = "circle"
        result.names[1] = "rectangle"
        result.boxes.add(x1=1, y1=2, x2=3.3, y2=4, conf=0.7, cls=1)
        result.boxes.add(x1=5, y1=6, x2=7, y2=8, conf=0.6, cls=0)
        ev = yolohook.Event(wire)
        self.assertEqual(ev.results[0].boxes[0].name, "rectangle")
        self.assertEqual(ev.results[0].orig_shape, (64, 48))
        self.assertEqual(ev.mutations(), [])
        ev.results[0].boxes = [b for b in ev.results[0].boxes if b.cls != 1]
        ev.fail("bad batch")
        mutations = ev.mutations()
        self.assertEqual([m.WhichOneof("kind") for m in mutations], ["replace_results", "fail_job"])
        replaced = mutations[0].replace_results.results
        self.assertEqual(len(replaced), 1)
        self.assertEqual([b.cls for b in replaced[0].boxes], [0])
        self.assertEqual(replaced[0].path, "a.jpg")
        self.assertEqual(mutations[1].fail_job.reason, "bad batch")

    def test_bad_arguments_are_clear_errors(self):
        c = yolohook.Client("127.0.0.1:1")
        with self.assertRaisesRegex(ValueError, "unknown callback event 'on_epoch_end'"):
            c.add_callback("on_epoch_end", print)
        with self.assertRaisesRegex(ValueError, "from_seq is for observers"):
            c.add_callback("on_fit_epoch_end", print, jobs="job-1", from_seq=1)
        with self.assertRaisesRegex(ValueError, "cannot read image file '/no/such.jpg'"):
            c.predict("/no/such.jpg", model="best.pt")
        with self.assertRaisesRegex(ValueError, "mode must be one of"):
            c.submit("tune")
        c.close()


class TokenTest(unittest.TestCase):
    """The token travels as bearer metadata (checked by a stand-in JobService)."""

    def test_token_is_sent_as_bearer_metadata(self):
        seen = []

        class Jobs(jobs_pb2_grpc.JobServiceServicer):
            def GetJob(self, request, context):
                seen.append(dict(context.invocation_metadata()).get("authorization"))
                return jobs_pb2.Job(id=request.id, state=jobs_pb2.JOB_STATE_RUNNING)

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        jobs_pb2_grpc.add_JobServiceServicer_to_server(Jobs(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            with yolohook.Client("127.0.0.1:%d" % port, token="s3cret") as c:
                job = c.get("job-1")
            with yolohook.Client("127.0.0.1:%d" % port) as c:
                c.get("job-2")
        finally:
            server.stop(None)
        self.assertEqual((job.id, job.state, job.done), ("job-1", "running", False))
        self.assertEqual(seen, ["Bearer s3cret", None])


class ServerTest(unittest.TestCase):
    """Against a real yolohookd, with one 2-epoch training job shared by the tests."""

    @classmethod
    def setUpClass(cls):
        cls.server = Yolohookd()
        cls.errors = []
        cls.client = yolohook.Client(cls.server.address, on_error=cls.errors.append,
                                     reconnect_initial_backoff=0.05)
        # A live observer of the shared job, subscribed before it is submitted.
        cls.observed = []
        cls.teardown = threading.Event()

        def observe(ev):
            cls.observed.append(ev)
            if ev.name == "teardown":
                cls.teardown.set()

        cls.client.add_callback(None, observe, labels={"test": "shared"}, observe=True)
        cls.train_job = cls.client.train(labels={"test": "shared"},
                                         **tiny_train_args(cls.server.data, 2))

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()

    def best_weights(self):
        job = self.client.get(self.train_job.id).wait(WAIT)
        self.assertEqual(job.state, "succeeded", job.error)
        return job.artifacts["weights_best"]

    def images(self):
        rng = random.Random(7)
        return [("frame%d.png" % i, shapes_image(rng)[0]) for i in range(3)]

    def test_observe_train_job_in_ultralytics_order(self):
        self.assertTrue(self.teardown.wait(WAIT))
        events = self.observed
        self.assertEqual([e.seq for e in events], list(range(1, len(events) + 1)))
        train_batches = next(e for e in events if e.name == "on_train_batch_end").num_batches
        val_batches = next(e for e in events if e.name == "on_val_end").num_batches
        self.assertEqual((train_batches, val_batches), (2, 1))
        self.assertEqual([e.name for e in events], expected_train_events(2, train_batches, val_batches))
        fit = [e for e in events if e.name == "on_fit_epoch_end"]
        self.assertEqual([e.epoch for e in fit], [0, 1])
        for e in fit:
            self.assertEqual(e.job_id, self.train_job.id)
            self.assertIn("metrics/mAP50-95(B)", e.metrics)
            self.assertIn("metrics/mAP50(B)", e.metrics)
            self.assertEqual(sorted(e.losses), ["box_loss", "cls_loss", "dfl_loss"])
            self.assertTrue(all(math.isfinite(v) for v in e.losses.values()))
        job = self.train_job.wait(WAIT)
        self.assertEqual(job.state, "succeeded", job.error)
        self.assertEqual(job.last_seq, len(events))
        self.assertIn(job.id, [j.id for j in self.client.jobs(labels={"test": "shared"})])
        # The job's retained events replay the same, from seq 1.
        replay = list(self.client.watch(job, timeout=WAIT))
        self.assertEqual([(e.seq, e.name) for e in replay], [(e.seq, e.name) for e in events])

    def test_intercept_replaces_prediction_results(self):
        best = self.best_weights()
        seen = []

        def replace(ev):
            seen.append(ev.name)
            for r in ev.results:
                r.boxes = [yolohook.Box((1, 2, 30, 40), 0.9, 1)]

        sub = self.client.add_callback("on_predict_postprocess_end", replace, labels={"test": "replace"},
                                       failure_mode="fail_job", reply_timeout=60)
        try:
            results = self.client.predict(self.images(), model=best, imgsz=64, conf=0.9,
                                          labels={"test": "replace"})
        finally:
            sub.remove()
        self.assertEqual(seen, ["on_predict_postprocess_end"] * 3)  # one image per batch
        self.assertEqual([r.path for r in results], ["frame0.png", "frame1.png", "frame2.png"])
        for r in results:
            self.assertEqual(len(r.boxes), 1)
            box = r.boxes[0]
            self.assertEqual((box.xyxy, box.cls, box.name), ((1, 2, 30, 40), 1, "rectangle"))
            self.assertAlmostEqual(box.conf, 0.9, places=6)
        job = self.client.get(results.job_id)
        self.assertEqual([len(r.boxes) for r in job.results], [1, 1, 1])

    def test_callback_exception_replies_without_change(self):
        best = self.best_weights()
        calls = []

        def broken(ev):
            calls.append(ev.seq)
            for r in ev.results:
                r.boxes = [yolohook.Box((1, 2, 30, 40), 0.9, 1)]
            raise RuntimeError("bug in a hook")

        sub = self.client.add_callback("on_predict_postprocess_end", broken, labels={"test": "broken"},
                                       failure_mode="fail_job")
        try:
            results = self.client.predict(self.images(), model=best, imgsz=64, conf=0.99,
                                          labels={"test": "broken"})
        finally:
            sub.remove()
        self.assertEqual(len(calls), 3)
        self.assertEqual(len(results), 3)
        self.assertFalse(any(b.xyxy == (1, 2, 30, 40) for r in results for b in r.boxes))
        self.assertTrue(any("bug in a hook" in str(e) for e in self.errors))

    def test_extended_deadline_outlasts_the_reply_timeout(self):
        best = self.best_weights()

        def slow(ev):
            ev.extend_deadline(30)
            time.sleep(1.5)  # three times the reply timeout
            for r in ev.results:
                r.boxes = [yolohook.Box((1, 2, 30, 40), 0.9, 1)]

        sub = self.client.add_callback("on_predict_postprocess_end", slow, labels={"test": "slow"},
                                       failure_mode="fail_job", reply_timeout=0.5)
        try:
            results = self.client.predict(self.images()[:1], model=best, imgsz=64,
                                          labels={"test": "slow"})
        finally:
            sub.remove()
        self.assertEqual([b.xyxy for b in results[0].boxes], [(1, 2, 30, 40)])

    def test_stop_training_from_a_callback(self):
        def stop_first_epoch(ev):
            if ev.epoch == 0:
                ev.stop("enough")
                ev.log(custom_score=1.5)

        labels = {"test": "stop"}
        sub = self.client.add_callback("on_fit_epoch_end", stop_first_epoch, labels=labels)
        job = self.client.train(labels=labels, **tiny_train_args(self.server.data, 5))
        events = list(self.client.watch(job, timeout=WAIT))
        sub.remove()
        names = [e.name for e in events]
        self.assertEqual(names.count("on_train_epoch_end"), 1)
        self.assertEqual(names.count("on_fit_epoch_end"), 1)
        self.assertEqual(names[-2:], ["on_train_end", "teardown"])
        fit = events[names.index("on_fit_epoch_end")]
        self.assertEqual((fit.epoch, fit.epochs), (0, 5))
        # Observers see the interceptor's changes.
        self.assertTrue(fit.stop_training)
        self.assertEqual(fit.metrics["custom_score"], 1.5)
        job.wait(WAIT)
        self.assertEqual(job.state, "succeeded", job.error)
        self.assertEqual(job.last_seq, len(events))

    def test_broken_stream_resumes_without_loss_or_duplicates(self):
        seqs = []
        broke = threading.Event()

        def collect(ev):
            seqs.append(ev.seq)
            if len(seqs) == 10:
                self.client._break_stream()
                broke.set()

        sub = self.client.add_callback(None, collect, jobs=self.train_job, observe=True, from_seq=1)
        self.assertTrue(sub.wait(WAIT))
        self.assertIsNone(sub.error)
        self.assertTrue(broke.is_set())
        self.assertTrue(any("reconnecting" in str(e) for e in self.errors), self.errors)
        job = self.train_job.wait(WAIT)
        self.assertEqual(seqs, list(range(1, job.last_seq + 1)))

    def test_restarted_client_resumes_from_last_seq(self):
        first = []
        with yolohook.Client(self.server.address) as c:
            for ev in c.watch(self.train_job.id, timeout=WAIT):
                first.append(ev.seq)
                if len(first) == 5:
                    break
        rest = []
        with yolohook.Client(self.server.address) as c:
            rest = [ev.seq for ev in c.watch(self.train_job.id, from_seq=first[-1] + 1, timeout=WAIT)]
        job = self.train_job.wait(WAIT)
        self.assertEqual(first + rest, list(range(1, job.last_seq + 1)))

    def test_server_errors_keep_their_code_and_message(self):
        with self.assertRaises(yolohook.YolohookError) as e:
            self.client.train(data=self.server.data, epoch=3)
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("did you mean 'epochs'", e.exception.message)
        with self.assertRaises(yolohook.YolohookError) as e:
            self.client.get("job-none")
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(yolohook.YolohookError) as e:
            self.client.add_callback("on_fit_epoch_end", print, jobs="job-none", observe=True)
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_server_info_is_the_catalogue_the_package_was_built_with(self):
        info = self.client.server_info()
        self.assertEqual(tuple(e.name for e in info.events), yolohook.EVENT_NAMES)
        self.assertEqual(len(info.events), 25)
        events = {e.name: e for e in info.events}
        self.assertEqual(list(events["on_predict_postprocess_end"].mutations), ["replace_results", "fail_job"])
        self.assertIn("stop_training", events["on_train_epoch_end"].mutations)
        self.assertEqual(list(events["on_val_end"].mutations), ["fail_job"])
        args = {a.name: a for a in info.arguments}
        self.assertTrue(args["lr0"].hyperparameter)
        self.assertEqual((args["lr0"].min, args["lr0"].max), (0.0, 10.0))
        self.assertFalse(args["epochs"].hyperparameter)
        self.assertGreater(info.limits["queue_limit"], 0)
        self.assertEqual(info.limits["max_id_bytes"], 128)


def serves_tokens():
    """Whether this yolohookd authenticates clients (--token_file)."""
    help_text = subprocess.run([os.environ["YOLOHOOKD"], "--help"], capture_output=True, text=True)
    return "--token_file" in help_text.stdout + help_text.stderr


@unittest.skipUnless(serves_tokens(), "this yolohookd has no --token_file")
class AuthTest(unittest.TestCase):
    """Bearer tokens against a yolohookd with a token file."""

    def setUp(self):
        tokens = tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False)
        tokens.write("# token,name,role\nv-token,dashboard,viewer\no-token,ci,operator\n")
        tokens.close()
        self.addCleanup(os.unlink, tokens.name)
        self.server = Yolohookd("--token_file=" + tokens.name)
        self.addCleanup(self.server.stop)

    def client(self, token):
        c = yolohook.Client(self.server.address, token=token, subscribe_timeout=30)
        self.addCleanup(c.close)
        return c

    def test_roles_decide_what_a_token_may_do(self):
        with self.assertRaises(yolohook.YolohookError) as e:
            self.client(None).jobs()
        self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        viewer = self.client("v-token")
        self.assertEqual(viewer.jobs(), [])
        with self.assertRaises(yolohook.YolohookError) as e:
            viewer.train(data=self.server.data, epochs=1)
        self.assertEqual(e.exception.code, grpc.StatusCode.PERMISSION_DENIED)
        with self.assertRaises(yolohook.YolohookError) as e:
            viewer.add_callback("on_fit_epoch_end", print)  # intercepting
        self.assertEqual(e.exception.code, grpc.StatusCode.PERMISSION_DENIED)
        viewer.add_callback("on_fit_epoch_end", print, observe=True).remove()
        operator = self.client("o-token")
        with self.assertRaises(yolohook.YolohookError) as e:
            operator.train(data=self.server.data, epoch=1)  # past the token check
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        operator.add_callback("on_fit_epoch_end", print).remove()


class RestartTest(unittest.TestCase):
    """The stream survives a server restart: a resumed training job's events arrive once each."""

    def setUp(self):
        self.server = Yolohookd()
        self.errors = []
        self.client = yolohook.Client(self.server.address, on_error=self.errors.append,
                                      reconnect_initial_backoff=0.05, reconnect_max_backoff=0.5)

    def tearDown(self):
        self.client.close()
        self.server.stop()

    def test_observers_resume_after_a_server_restart(self):
        by_label = []
        first_epoch = threading.Event()

        def on_label(ev):
            by_label.append(ev.seq)
            if ev.name == "on_fit_epoch_end":
                first_epoch.set()

        labels = {"test": "restart"}
        self.client.add_callback(None, on_label, labels=labels, observe=True)
        job = self.client.train(labels=labels, **tiny_train_args(self.server.data, 2))
        by_job = []
        sub = self.client.add_callback(None, lambda ev: by_job.append(ev.seq), jobs=job,
                                       observe=True, from_seq=1)
        self.assertTrue(first_epoch.wait(WAIT))
        self.server.restart()  # the job is interrupted and resumes from last.pt
        self.assertTrue(sub.wait(WAIT))
        job.wait(WAIT)
        self.assertEqual(job.state, "succeeded", job.error)
        self.assertEqual(by_job, list(range(1, job.last_seq + 1)))
        deadline = time.monotonic() + WAIT
        while len(by_label) < job.last_seq and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(by_label, list(range(1, job.last_seq + 1)))
        self.assertTrue(any("reconnecting" in str(e) for e in self.errors), self.errors)


if __name__ == "__main__":
    unittest.main()
