"""The Python client of yolohookd: jobs, prediction and remote callbacks.

    import yolohook

    with yolohook.Client("127.0.0.1:50051") as c:
        def drop_class_1(ev):
            for r in ev.results:
                r.boxes = [b for b in r.boxes if b.cls != 1]
        c.add_callback("on_predict_batch_end", drop_class_1)   # intercepts
        job = c.train(data="shapes", epochs=3, imgsz=64)
        for ev in c.watch(job, events=["on_fit_epoch_end"]):
            print(ev.epoch, ev.metrics.get("metrics/mAP50-95(B)"))

All of a client's subscriptions share one HookService.Connect stream,
read by a background thread; callbacks run one at a time, in arrival order, on
a second client thread. A broken stream is reopened with backoff and every
subscription is sent again; subscriptions following job ids resume after the
last event they received, so each event arrives exactly once.
"""

import logging
import os
import queue
import threading
import time

import grpc

from yolohook import events as _events
from yolohook.v1 import callbacks_pb2
from yolohook.v1 import callbacks_pb2_grpc
from yolohook.v1 import info_pb2
from yolohook.v1 import info_pb2_grpc
from yolohook.v1 import jobs_pb2
from yolohook.v1 import jobs_pb2_grpc
from yolohook.v1 import predict_pb2
from yolohook.v1 import predict_pb2_grpc
from yolohook.v1 import types_pb2

log = logging.getLogger("yolohook")

_MODES = {
    "train": jobs_pb2.MODE_TRAIN,
    "val": jobs_pb2.MODE_VAL,
    "predict": jobs_pb2.MODE_PREDICT,
    "export": jobs_pb2.MODE_EXPORT,
}
_TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
_FAILURE_MODES = {
    None: callbacks_pb2.FAILURE_MODE_UNSPECIFIED,
    "continue": callbacks_pb2.FAILURE_MODE_CONTINUE,
    "fail_job": callbacks_pb2.FAILURE_MODE_FAIL_JOB,
}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_END = object()  # ends a watch generator's queue


class YolohookError(Exception):
    """An error from yolohookd or the stream: ``code`` is a grpc.StatusCode."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code.name if hasattr(code, "name") else code, message))
        self.code = code
        self.message = message


def _from_rpc(error, target):
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        message = "yolohookd at %s: %s" % (target, message)
    return YolohookError(code, message)


def _state_name(state):
    return jobs_pb2.JobState.Name(state)[len("JOB_STATE_"):].lower()


def _args(kwargs):
    """key=value arguments as the server takes them (the CLI's spelling)."""
    out = {}
    for key, value in kwargs.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        out[str(key)] = str(value)
    return out


def _job_ids(jobs):
    if jobs is None:
        return []
    if isinstance(jobs, (str, Job)):
        jobs = [jobs]
    return [j.id if isinstance(j, Job) else str(j) for j in jobs]


def _event_list(events):
    if events is None:
        return []
    if isinstance(events, str):
        events = [events]
    events = list(events)
    _events.check_event_names(events)
    return events


class Job:
    """A job on the server, as last fetched.

    ``id``, ``mode`` (train, val, predict, export), ``state`` (queued, running,
    succeeded, failed, cancelled, interrupted), ``args``, ``labels``,
    ``error``, ``save_dir``, ``metrics`` (final metrics), ``results`` (predict
    jobs: a list of :class:`yolohook.Result`), ``artifacts`` (kind -> path on
    the server), ``last_seq`` (its last event so far) and ``proto`` (the wire
    Job). ``refresh()``, ``wait()`` and ``cancel()`` update it in place.
    """

    def __init__(self, client, proto):
        self._client = client
        self._set(proto)

    def _set(self, proto):
        self.proto = proto
        self.id = proto.id
        self.mode = jobs_pb2.Mode.Name(proto.mode)[len("MODE_"):].lower()
        self.state = _state_name(proto.state)
        self.args = dict(proto.args)
        self.labels = dict(proto.labels)
        self.error = proto.error
        self.save_dir = proto.save_dir
        self.metrics = dict(proto.metrics)
        self.results = [_events.Result.from_proto(r) for r in proto.results]
        self.artifacts = {a.kind: a.path for a in proto.artifacts}
        self.last_seq = proto.last_seq

    @property
    def done(self):
        """The job has finished (succeeded, failed, cancelled or interrupted)."""
        return self.state in _TERMINAL

    def refresh(self):
        self._set(self._client._get(self.id))
        return self

    def wait(self, timeout=None):
        """Polls until the job finished and returns it; TimeoutError after ``timeout`` s.

        Rides out a server restart (UNAVAILABLE answers are retried): an
        interrupted training job resumes under the same id.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.02
        while True:
            try:
                if self.refresh().done:
                    break
            except YolohookError as e:
                if e.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                pause = max(pause, 0.1)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("job %s still %s after %gs" % (self.id, self.state, timeout))
            left = pause if deadline is None else min(pause, max(deadline - time.monotonic(), 0))
            time.sleep(left)
            pause = min(pause * 2, 0.5)
        return self

    def cancel(self):
        """Cancels the job (a running one stops at its next batch)."""
        self._set(self._client._cancel(self.id))
        return self

    def __repr__(self):
        return "Job(id=%r, mode=%r, state=%r)" % (self.id, self.mode, self.state)


class Results(list):
    """Prediction results, one per image; ``job_id`` names the job that ran them."""

    job_id = ""


class Subscription:
    """One remote callback (or watch) on the client's stream.

    ``id`` is the client's name for it; ``ended`` turns true when the server
    ended it (its jobs all finished) or it was removed; ``error`` tells why it
    ended when that was a problem (None otherwise).
    """

    def __init__(self, client, sub):
        self._client = client
        self._sub = sub
        self.id = sub.id

    @property
    def ended(self):
        return self._sub.ended

    @property
    def error(self):
        return self._sub.end_error

    def wait(self, timeout=None):
        """Blocks until the subscription ended and its last event was handled; False on timeout."""
        return self._client._wait_ended(self._sub, timeout)

    def remove(self):
        """Unsubscribes; events already received are still handled."""
        self._client._unsubscribe(self._sub)


class Watch:
    """The events of a :meth:`Client.watch` subscription, in order; made subscribed.

    Iterate it (``for ev in watch``); ``close()`` (or leaving a ``with``
    block, or a ``for`` loop that breaks) unsubscribes. Iterating ends when
    the selected jobs have all finished and every event was delivered; it
    raises the error that ended the subscription otherwise.
    """

    def __init__(self, client, sub, items, timeout):
        self._client = client
        self._sub = sub
        self._items = items
        self._timeout = timeout
        self._done = False
        self.id = sub.id

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        try:
            item = self._items.get(timeout=self._timeout)
        except queue.Empty:
            raise TimeoutError("no event within %gs" % self._timeout) from None
        if item is _END:
            self.close()
            if self._sub.end_error is not None:
                raise self._sub.end_error
            raise StopIteration
        return item

    def close(self):
        """Unsubscribes; later iteration stops."""
        if not self._done:
            self._done = True
            self._client._unsubscribe(self._sub)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass


class _Sub:
    """A subscription across reconnects; fields below ``fn`` are guarded by Client._cond."""

    def __init__(self, sub_id, events, fn, intercept, job_ids, labels, priority,
                 reply_timeout, failure_mode, include_images, from_seq, on_end):
        self.id = sub_id
        self.events = events
        self.fn = fn
        self.intercept = intercept
        self.job_ids = job_ids
        self.labels = labels
        self.priority = priority
        self.reply_timeout = reply_timeout
        self.failure_mode = failure_mode
        self.include_images = include_images
        self.from_seq = from_seq
        self.on_end = on_end
        self.wire_id = ""
        self.attempts = 0
        self.generation = 0  # the stream the last Subscribe went to
        self.ever_acked = False
        self.next_seq = {}  # per job: the next seq expected; lower ones are duplicates
        # Observers by labels (or of every job), after a reconnect: per job
        # seen before, the wire id of a subscription by job id that replays
        # what the outage hid and then follows the job to its end.
        self.catchups = {}
        self.finished = set()  # jobs whose catch-up ended with the job
        self.ending = False
        self.ended = False
        self.end_error = None


# How many messages the client takes between Acks (fewer when it catches up).
_ACK_EVERY = 32


class _Connection:
    """One Connect call; messages for it go through its queue (a request iterator).

    Acknowledged delivery (fields guarded by Client._cond): messages read,
    events among them not yet handled by callbacks, and the count last
    acknowledged. The server sends at most its window beyond what was
    acknowledged, so a client whose callbacks stall soon gets no more, and
    its subscriptions end LAGGING on the server.
    """

    def __init__(self, generation):
        self.generation = generation
        self.queue = queue.Queue()
        self.call = None
        self.received = 0
        self.pending = 0
        self.acked = 0

    def ack_locked(self):
        """An Ack message when enough was taken since the last one, else None."""
        taken = self.received - self.pending
        if taken - self.acked >= _ACK_EVERY or (self.pending == 0 and taken > self.acked):
            self.acked = taken
            return callbacks_pb2.ClientMessage(ack=callbacks_pb2.Ack(taken=taken))
        return None

    def requests(self):
        while True:
            message = self.queue.get()
            if message is None:
                return
            yield message

    def send(self, message):
        self.queue.put(message)

    def close(self):
        self.queue.put(None)


class Client:
    """A client of one yolohookd. Thread-safe.

    ``target`` is host:port. ``token`` is sent with every call as
    ``authorization: Bearer <token>``. ``root_certificates`` (PEM bytes or a
    file path) turns on TLS. ``reply_timeout`` (seconds) and ``failure_mode``
    (``"continue"`` or ``"fail_job"``) are the interceptors' defaults;
    ``rpc_timeout`` bounds each unary call. ``on_error`` receives problems that
    do not stop the client (a rejected reply, a broken stream, a callback's
    exception); by default they are logged on the ``yolohook`` logger.

    Callbacks run on a client thread and must not call :meth:`close`; they
    may call everything else.
    """

    def __init__(self, target="127.0.0.1:50051", token=None, root_certificates=None, *,
                 rpc_timeout=300.0, reply_timeout=None, failure_mode="continue",
                 max_message_bytes=64 << 20, reconnect_initial_backoff=0.1,
                 reconnect_max_backoff=5.0, subscribe_timeout=10.0,
                 max_pending_events=4096, on_error=None):
        if failure_mode not in _FAILURE_MODES:
            raise ValueError("failure_mode must be 'continue' or 'fail_job', got %r" % (failure_mode,))
        self.target = target
        self._metadata = (("authorization", "Bearer %s" % token),) if token else ()
        self._rpc_timeout = rpc_timeout
        self._reply_timeout = reply_timeout
        self._failure_mode = failure_mode
        self._initial_backoff = reconnect_initial_backoff
        self._max_backoff = reconnect_max_backoff
        self._subscribe_timeout = subscribe_timeout
        self._on_error = on_error
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # gRPC's own reconnect backoff (up to two minutes) would outlast ours.
            ("grpc.initial_reconnect_backoff_ms", max(1, int(reconnect_initial_backoff * 1000))),
            ("grpc.min_reconnect_backoff_ms", max(1, int(reconnect_initial_backoff * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(1, int(reconnect_max_backoff * 1000))),
        ]
        if root_certificates is not None:
            if isinstance(root_certificates, (str, os.PathLike)):
                with open(root_certificates, "rb") as f:
                    root_certificates = f.read()
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._info = info_pb2_grpc.InfoServiceStub(self._channel)
        self._server_info = None
        self._predict = predict_pb2_grpc.PredictServiceStub(self._channel)
        self._callbacks = callbacks_pb2_grpc.HookServiceStub(self._channel)

        self._cond = threading.Condition()
        self._subs = {}
        self._wire = {}  # wire subscription id -> (_Sub, job id of a catch-up or None)
        self._next_sub = 0
        self._generation = 0
        self._conn = None
        self._started = False
        self._stopping = False
        self._dispatching = False
        self._stop_event = threading.Event()
        self._items = queue.Queue(maxsize=max_pending_events)
        self._reader = None
        self._dispatcher = None

    # --- context manager

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- jobs

    def _call(self, method, request):
        try:
            return method(request, timeout=self._rpc_timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _from_rpc(e, self.target) from None

    def submit(self, mode, *, labels=None, images=None, wait=False, **kwargs):
        """Queues a job (``mode``: train, val, predict or export) and returns its :class:`Job`.

        ``kwargs`` are the CLI's key=value arguments (``data="shapes",
        epochs=3``); ``labels`` select it in subscriptions; ``images`` (predict)
        are used instead of ``source=``; ``wait=True`` returns it finished.
        Raises YolohookError with the server's code (INVALID_ARGUMENT naming a
        bad argument, RESOURCE_EXHAUSTED when the queue is full, ...).
        """
        if mode not in _MODES:
            raise ValueError("mode must be one of train, val, predict, export; got %r" % (mode,))
        request = jobs_pb2.SubmitJobRequest(
            mode=_MODES[mode], args=_args(kwargs), labels=dict(labels or {}),
            images=_images(images) if images is not None else [],
        )
        job = Job(self, self._call(self._jobs.SubmitJob, request))
        return job.wait() if wait else job

    def train(self, *, labels=None, wait=False, **kwargs):
        """Queues a training job: ``c.train(data="shapes", epochs=3, imgsz=64)``."""
        return self.submit("train", labels=labels, wait=wait, **kwargs)

    def val(self, *, labels=None, wait=False, **kwargs):
        """Queues a validation job: ``c.val(model=".../best.pt", data="shapes")``."""
        return self.submit("val", labels=labels, wait=wait, **kwargs)

    def export(self, *, labels=None, wait=False, **kwargs):
        """Queues an export job: ``c.export(model=".../best.pt", format="onnx")``."""
        return self.submit("export", labels=labels, wait=wait, **kwargs)

    def predict(self, source, *, labels=None, **kwargs):
        """Predicts synchronously and returns :class:`Results` (a list of Result).

        ``source``: an image file path, a folder of images, encoded JPEG/PNG
        bytes, a ``(name, bytes)`` pair, or a list of these. ``kwargs``: the
        predict arguments (``model=``, ``conf=``, ``imgsz=``, ...).
        Interceptors' replacements are what it returns.
        """
        request = predict_pb2.PredictRequest(
            args=_args(kwargs), images=_images(source), labels=dict(labels or {}))
        response = self._call(self._predict.Predict, request)
        results = Results(_events.Result.from_proto(r) for r in response.results)
        results.job_id = response.job_id
        return results

    def _get(self, job_id):
        return self._call(self._jobs.GetJob, jobs_pb2.GetJobRequest(id=job_id))

    def _cancel(self, job_id):
        return self._call(self._jobs.CancelJob, jobs_pb2.CancelJobRequest(id=job_id))

    def get(self, job_id):
        """One job; YolohookError NOT_FOUND for an unknown id."""
        return Job(self, self._get(_job_ids(job_id)[0]))

    def cancel(self, job_id):
        """Cancels a job; YolohookError FAILED_PRECONDITION if it already finished."""
        return Job(self, self._cancel(_job_ids(job_id)[0]))

    def server_info(self):
        """What the server offers: a ``yolohook.v1.ServerInfo`` with its version,
        ``events`` (each event's name, stage, modes and the mutations an
        interceptor may send there), ``arguments`` (job arguments, with
        ``hyperparameter`` set on those a callback may change, within
        ``min``..``max``) and ``limits`` by name. Asked once, then cached."""
        if self._server_info is None:
            self._server_info = self._call(self._info.GetServerInfo, info_pb2.GetServerInfoRequest())
        return self._server_info

    def jobs(self, states=None, labels=None, limit=None):
        """Jobs, newest first: only in ``states`` (names) and carrying ``labels``."""
        request = jobs_pb2.ListJobsRequest(match_labels=dict(labels or {}))
        for state in states or ():
            request.states.append(jobs_pb2.JobState.Value("JOB_STATE_" + state.upper()))
        out = []
        while True:
            response = self._call(self._jobs.ListJobs, request)
            out.extend(Job(self, j) for j in response.jobs)
            if not response.next_page_token or (limit is not None and len(out) >= limit):
                return out[:limit] if limit is not None else out
            request.page_token = response.next_page_token

    # --- remote callbacks

    def add_callback(self, event, fn, jobs=None, labels=None, *, observe=False, priority=0,
                     reply_timeout=None, failure_mode=None, include_images=False, from_seq=0):
        """Runs ``fn(ev)`` for each ``event`` (a name, a list, or None for all 25).

        Intercepting (default): the job waits for the reply, and what ``fn``
        changed in the :class:`yolohook.Event` is sent back as mutations; an
        exception in ``fn`` is reported and replied to with no change.
        ``observe=True`` only watches and never slows the job. ``jobs`` (ids
        or Jobs) and ``labels`` select jobs (neither: every job; labels match
        later jobs too). ``priority``, ``reply_timeout`` (s) and
        ``failure_mode`` ("continue" / "fail_job") apply to interceptors;
        ``from_seq`` (observers following ``jobs``) replays retained events.
        Waits for the server's acknowledgement and returns a
        :class:`Subscription`; raises ValueError for bad arguments and
        YolohookError for the server's refusal or no answer in time.
        """
        if not callable(fn):
            raise ValueError("fn must be callable")
        return Subscription(self, self._subscribe(
            _event_list(event), fn, not observe, _job_ids(jobs), labels, priority,
            reply_timeout, failure_mode, include_images, from_seq, None))

    def remove_callback(self, subscription):
        """Ends a subscription returned by add_callback."""
        subscription.remove()

    def watch(self, jobs=None, events=None, from_seq=None, labels=None, timeout=None):
        """Subscribes now as an observer and returns a :class:`Watch`: an iterator of Events.

        ``jobs``: a Job, an id, a list of them, or None for every job (with
        ``labels``: the jobs carrying them). ``from_seq``: replay retained
        events from this seq on; the default is 1 (everything) when jobs are
        named, new events only otherwise. The iteration ends when the selected
        jobs have all finished and their events were delivered; ``timeout``
        (s) bounds the wait for each event (TimeoutError). Leaving a ``for``
        loop early, ``close()`` or a ``with`` block unsubscribes.
        """
        job_ids = _job_ids(jobs)
        if from_seq is None:
            from_seq = 1 if job_ids else 0
        items = queue.Queue()
        sub = self._subscribe(_event_list(events), items.put, False, job_ids, labels, 0, None,
                              None, False, from_seq, lambda: items.put(_END))
        return Watch(self, sub, items, timeout)

    def _subscribe(self, events, fn, intercept, job_ids, labels, priority, reply_timeout,
                   failure_mode, include_images, from_seq, on_end):
        if failure_mode not in _FAILURE_MODES:
            raise ValueError("failure_mode must be 'continue' or 'fail_job', got %r" % (failure_mode,))
        if from_seq < 0:
            raise ValueError("from_seq %d is negative" % from_seq)
        if from_seq > 0 and not job_ids:
            raise ValueError("from_seq needs jobs (replays follow particular jobs)")
        if from_seq > 0 and intercept:
            raise ValueError("from_seq is for observers: interceptors only see new events")
        with self._cond:
            if self._stopping:
                raise YolohookError(grpc.StatusCode.FAILED_PRECONDITION, "the client was closed")
            self._next_sub += 1
            sub = _Sub("cb%d" % self._next_sub, events, fn, intercept, job_ids, dict(labels or {}),
                       priority, reply_timeout, failure_mode, include_images, from_seq, on_end)
            self._subs[sub.id] = sub
            conn = self._conn
            message = self._build_subscribe(sub, conn.generation) if conn is not None else None
        if message is not None:
            conn.send(message)
        self._start()
        with self._cond:
            self._cond.wait_for(lambda: sub.ever_acked or sub.ending, self._subscribe_timeout)
            if sub.ever_acked:
                return sub
            self._subs.pop(sub.id, None)
            if sub.ending:
                raise sub.end_error or YolohookError(
                    grpc.StatusCode.ABORTED, "the subscription ended before the server accepted it")
            sub.ending = True
        raise YolohookError(
            grpc.StatusCode.UNAVAILABLE,
            "yolohookd at %s did not acknowledge the subscription within %gs"
            % (self.target, self._subscribe_timeout))

    def _unsubscribe(self, sub):
        with self._cond:
            if sub.ending:
                return
            sub.ending = True
            conn = self._conn
            if conn is None or sub.generation != conn.generation:
                conn = None
        # The server's SubscriptionEnded ends it after its queued events;
        # without a stream it is ended here.
        if conn is None:
            self._enqueue(("ended", sub, None))
            return
        for wire_id in [sub.wire_id] + list(sub.catchups.values()):
            conn.send(callbacks_pb2.ClientMessage(
                unsubscribe=callbacks_pb2.Unsubscribe(subscription_id=wire_id)))

    def _wait_ended(self, sub, timeout):
        with self._cond:
            return self._cond.wait_for(lambda: sub.ended, timeout)

    def close(self):
        """Closes the stream and the channel; pending interceptor events get no reply."""
        with self._cond:
            if self._stopping:
                return
            # Let the callback running now finish and its reply go out.
            if self._started:
                self._cond.wait_for(
                    lambda: not self._dispatching and self._items.empty(), 2.0)
            self._stopping = True
            conn = self._conn
            self._cond.notify_all()
        self._stop_event.set()
        if conn is not None:
            conn.close()
            if conn.call is not None:
                conn.call.cancel()
        for thread in (self._reader, self._dispatcher):
            if thread is not None and thread is not threading.current_thread():
                thread.join()
        with self._cond:
            subs = [s for s in self._subs.values() if not s.ended]
            for s in subs:
                s.ended = True
                s.end_error = YolohookError(grpc.StatusCode.CANCELLED, "the client was closed")
            self._cond.notify_all()
        for s in subs:
            if s.on_end is not None:
                s.on_end()
        self._channel.close()

    # --- the stream

    def _break_stream(self):
        """Cancels the current Connect call as a network failure would (for tests)."""
        with self._cond:
            conn = self._conn
        if conn is not None and conn.call is not None:
            conn.call.cancel()

    def _report(self, error):
        if self._on_error is not None:
            try:
                self._on_error(error)
                return
            except Exception:  # noqa: BLE001 - a reporting hook must not stop the client
                log.exception("on_error raised")
        log.warning("%s", error)

    def _start(self):
        with self._cond:
            if self._started or self._stopping:
                return
            self._started = True
            self._reader = threading.Thread(target=self._read_loop, name="yolohook-reader", daemon=True)
            self._dispatcher = threading.Thread(target=self._dispatch_loop, name="yolohook-dispatch",
                                                daemon=True)
            self._reader.start()
            self._dispatcher.start()

    def _resubscribe(self, sub, generation):
        """Subscribe messages that resume ``sub`` on a new stream without loss."""
        messages = [self._build_subscribe(sub, generation)]
        if sub.intercept or sub.job_ids or not sub.ever_acked:
            return messages
        for job, seq in sorted(sub.next_seq.items()):
            if job not in sub.finished:
                messages.append(self._build_catchup(sub, job, seq))
        return messages

    def _build_catchup(self, sub, job, from_seq):
        self._wire.pop(sub.catchups.get(job), None)
        sub.attempts += 1
        wire_id = "%s.%d" % (sub.id, sub.attempts)
        sub.catchups[job] = wire_id
        self._wire[wire_id] = (sub, job)
        return callbacks_pb2.ClientMessage(subscribe=callbacks_pb2.Subscribe(
            subscription_id=wire_id, job_ids=[job], events=sub.events,
            include_images=sub.include_images, mode=callbacks_pb2.SUBSCRIPTION_MODE_OBSERVE,
            from_seq=max(1, from_seq)))

    def _build_subscribe(self, sub, generation):
        self._wire.pop(sub.wire_id, None)
        for wire_id in sub.catchups.values():
            self._wire.pop(wire_id, None)
        sub.catchups.clear()
        sub.attempts += 1
        sub.wire_id = "%s.%d" % (sub.id, sub.attempts)
        self._wire[sub.wire_id] = (sub, None)
        sub.generation = generation
        s = callbacks_pb2.Subscribe(
            subscription_id=sub.wire_id, job_ids=sub.job_ids, match_labels=sub.labels,
            events=sub.events, include_images=sub.include_images)
        if sub.intercept:
            s.mode = callbacks_pb2.SUBSCRIPTION_MODE_INTERCEPT
            s.priority = sub.priority
            timeout = sub.reply_timeout if sub.reply_timeout is not None else self._reply_timeout
            if timeout is not None:
                s.reply_timeout.FromNanoseconds(int(timeout * 1e9))
            s.failure_mode = _FAILURE_MODES[sub.failure_mode or self._failure_mode]
        else:
            s.mode = callbacks_pb2.SUBSCRIPTION_MODE_OBSERVE
            if sub.job_ids:
                # Resume after the last event received from each job;
                # duplicates of the jobs further ahead are dropped on arrival.
                start = sub.from_seq
                if sub.ever_acked:
                    start = max(1, min(sub.next_seq.get(j, 1) for j in sub.job_ids))
                s.from_seq = start
        return callbacks_pb2.ClientMessage(subscribe=s)

    def _find(self, wire_id):
        """(the _Sub, the job of a catch-up or None) for a wire id; (None, None) if stale."""
        sub, job = self._wire.get(wire_id, (None, None))
        if sub is None or self._subs.get(sub.id) is not sub:
            return None, None
        return sub, job

    def _enqueue(self, item):
        while not self._stop_event.is_set():
            try:
                self._items.put(item, timeout=0.25)
                return
            except queue.Full:
                continue

    def _read_loop(self):
        backoff = self._initial_backoff
        reported = False
        while True:
            with self._cond:
                if self._stopping:
                    return
                self._generation += 1
                conn = _Connection(self._generation)
            conn.call = self._callbacks.Connect(
                conn.requests(), metadata=self._metadata, wait_for_ready=True)
            with self._cond:
                if self._stopping:
                    conn.call.cancel()
                    conn.close()
                    return
                self._conn = conn
                subscribes = [m for s in list(self._subs.values())
                              if not s.ending and s.generation != conn.generation
                              for m in self._resubscribe(s, conn.generation)]
            # Acknowledged delivery first: the server then holds back what
            # this client does not take.
            conn.send(callbacks_pb2.ClientMessage(ack=callbacks_pb2.Ack(taken=0)))
            for message in subscribes:
                conn.send(message)
            problem = None
            try:
                for message in conn.call:
                    backoff = self._initial_backoff
                    reported = False
                    self._handle(conn, message)
            except grpc.RpcError as e:
                problem = _from_rpc(e, self.target)
            with self._cond:
                self._conn = None
                if problem is not None and problem.code in (grpc.StatusCode.UNAUTHENTICATED,
                                                            grpc.StatusCode.PERMISSION_DENIED):
                    # The server refused the stream itself: subscriptions it
                    # never accepted fail with that (add_callback raises it).
                    for s in self._subs.values():
                        if not s.ever_acked and not s.ending:
                            s.ending = True
                            s.end_error = problem
                    self._cond.notify_all()
                # Subscriptions on their way out whose end the server did not send.
                leaving = [s for s in self._subs.values() if s.ending and not s.ended]
            for s in leaving:
                self._enqueue(("ended", s, s.end_error))
            conn.close()
            conn.call.cancel()
            if self._stop_event.is_set():
                return
            if not reported:
                reported = True
                self._report(YolohookError(
                    grpc.StatusCode.UNAVAILABLE,
                    "callback stream closed (%s); reconnecting" % (problem or "by the server")))
            if self._stop_event.wait(backoff):
                return
            backoff = min(backoff * 2, self._max_backoff)

    def _reply(self, conn, event, mutations=()):
        conn.send(callbacks_pb2.ClientMessage(reply=callbacks_pb2.Reply(
            subscription_id=event.subscription_id, job_id=event.job_id, seq=event.seq,
            mutations=list(mutations))))

    def _extend_deadline(self, conn, event, seconds):
        extend = callbacks_pb2.ExtendDeadline(
            subscription_id=event.subscription_id, job_id=event.job_id, seq=event.seq)
        extend.extension.FromNanoseconds(int(seconds * 1e9))
        conn.send(callbacks_pb2.ClientMessage(extend_deadline=extend))

    def _handle(self, conn, message):
        kind = message.WhichOneof("kind")
        # Every message counts as received; an event stays pending until its
        # callback ran, the others are taken at once.
        with self._cond:
            conn.received += 1
            if kind == "event":
                conn.pending += 1
                ack = None
            else:
                ack = conn.ack_locked()
        if ack is not None:
            conn.send(ack)
        if kind == "subscribed":
            ack = message.subscribed
            catchups = []
            with self._cond:
                sub, catchup = self._find(ack.subscription_id)
                if sub is None or catchup is not None:
                    return
                resumed = sub.ever_acked and not sub.intercept and not sub.job_ids
                for job, last in ack.last_seq.items():
                    if job in sub.next_seq or job in sub.finished:
                        continue
                    if resumed and last > 0:
                        # A job that fired its first events while the stream
                        # was down: all of them are still to be delivered.
                        sub.next_seq[job] = 1
                        catchups.append(self._build_catchup(sub, job, 1))
                    else:
                        sub.next_seq[job] = sub.from_seq if sub.from_seq > 0 else last + 1
                sub.ever_acked = True
                self._cond.notify_all()
            for m in catchups:
                conn.send(m)
        elif kind == "event":
            event = message.event
            with self._cond:
                sub, catchup = self._find(event.subscription_id)
                # While a catch-up follows a job, it alone delivers the job's events.
                drop = sub is None or sub.ending or (
                    catchup is None and event.job_id in sub.catchups)
                if not drop:
                    drop = event.seq < sub.next_seq.get(event.job_id, 0)
                    if not drop:
                        sub.next_seq[event.job_id] = event.seq + 1
                ack = None
                if drop:
                    conn.pending -= 1  # taken without a callback
                    ack = conn.ack_locked()
            if ack is not None:
                conn.send(ack)
            if drop:
                # A job waits for an interceptor's reply: never leave it waiting.
                if event.reply_required:
                    self._reply(conn, event)
                return
            self._enqueue(("event", sub, event, conn))
        elif kind == "reply_result":
            r = message.reply_result
            if not r.applied:
                self._report(YolohookError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "reply to job %s seq %d not applied: %s" % (r.job_id, r.seq, r.reason)))
        elif kind == "subscription_ended":
            self._handle_ended(conn, message.subscription_ended)
        elif kind == "error":
            e = message.error
            error = YolohookError(_status_code(e.code), e.message)
            with self._cond:
                sub, catchup = self._find(e.subscription_id) if e.subscription_id else (None, None)
                if catchup is not None:
                    # The job is gone: nothing more to deliver from it.
                    self._wire.pop(sub.catchups.pop(catchup, None), None)
                    sub.finished.add(catchup)
                    sub = None
                if sub is not None and not sub.ending:
                    sub.ending = True
                    sub.end_error = error
                    acked = sub.ever_acked
                    self._cond.notify_all()
                else:
                    sub, acked = None, True
            if sub is not None:
                self._enqueue(("ended", sub, error))
                if not acked:
                    return  # add_callback raises it
            self._report(error)

    def _handle_ended(self, conn, ended):
        resubscribe = None
        problem = None
        with self._cond:
            sub, catchup = self._find(ended.subscription_id)
            if sub is None:
                return
            reason = ended.reason
            if catchup is not None:
                resubscribe = self._catchup_ended(sub, catchup, ended)
                if resubscribe is not None:
                    conn.send(resubscribe)
                return
            if reason == callbacks_pb2.END_REASON_JOBS_DONE and not sub.ending:
                # A job interrupted by a draining server ends its
                # subscriptions too, but resumes under the same id when the
                # server starts again: find out off the reader thread.
                threading.Thread(target=self._check_interrupted, args=(conn, sub, sub.wire_id),
                                 name="yolohook-check", daemon=True).start()
                return
            if reason in (callbacks_pb2.END_REASON_JOBS_DONE, callbacks_pb2.END_REASON_UNSUBSCRIBED):
                sub.ending = True
            elif reason == callbacks_pb2.END_REASON_SHUTDOWN:
                sub.generation = 0  # the reconnect subscribes again
                self._close_if_shut_down()
                return
            elif reason in (callbacks_pb2.END_REASON_LAGGING, callbacks_pb2.END_REASON_COMPACTED):
                if sub.ending:
                    return
                for job, seq in ended.resume_seq.items():
                    expected = sub.next_seq.get(job)
                    if reason == callbacks_pb2.END_REASON_COMPACTED and expected is not None \
                            and seq > expected:
                        problem = "events %d..%d of job %s are no longer retained" % (
                            expected, seq - 1, job)
                    if expected is None or seq > expected:
                        sub.next_seq[job] = seq
                if sub.intercept:
                    problem = "fell behind (%s); events may have been missed" % ended.message
                resubscribe = self._resubscribe(sub, conn.generation)
            else:
                sub.ending = True
                sub.end_error = YolohookError(grpc.StatusCode.INTERNAL,
                                              "subscription %s ended: %s" % (sub.id, ended.message))
            error = sub.end_error
        if resubscribe is not None:
            if problem:
                self._report(YolohookError(grpc.StatusCode.DATA_LOSS,
                                           "subscription %s: %s" % (sub.id, problem)))
            for m in resubscribe:
                conn.send(m)
            return
        self._enqueue(("ended", sub, error))

    def _check_interrupted(self, conn, sub, wire_id):
        """Ends ``sub`` after JOBS_DONE on ``conn`` unless one of its jobs was interrupted.

        An interrupted job's subscription is kept and sent again (from the
        next seq) on a new stream, which reaches the restarted server; if the
        job had in fact finished, that stream ends it again and the check
        repeats.
        """
        interrupted = False
        for job in sub.job_ids:
            try:
                state = _state_name(self._jobs.GetJob(
                    jobs_pb2.GetJobRequest(id=job), timeout=10, metadata=self._metadata).state)
            except grpc.RpcError as e:
                # A server going away (a drain is what interrupts jobs) answers
                # like this; the new stream settles it.
                interrupted = e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                                           grpc.StatusCode.DEADLINE_EXCEEDED)
                break
            except ValueError:  # the channel was closed
                return
            # Interrupted, or already resumed by a restarted server.
            if state not in ("succeeded", "failed", "cancelled"):
                interrupted = True
                break
        with self._cond:
            if sub.ending or sub.wire_id != wire_id:
                return
            if interrupted:
                sub.generation = 0
                current = self._conn
            else:
                sub.ending = True
                error = sub.end_error
        if interrupted:
            if current is conn and conn.call is not None:
                conn.call.cancel()  # the reconnect sends it again
            return
        self._enqueue(("ended", sub, error))

    def _close_if_shut_down(self):
        """Cancels the stream once the server has ended all its subscriptions (under _cond).

        A draining server then need not wait for this client to go.
        """
        conn = self._conn
        if conn is None or conn.call is None:
            return
        if not any(s.generation == conn.generation for s in self._subs.values() if not s.ending):
            conn.call.cancel()

    def _catchup_ended(self, sub, job, ended):
        """Handles the end of a catch-up; returns a Subscribe to resume it, if needed."""
        if sub.ending:
            return None
        reason = ended.reason
        if reason in (callbacks_pb2.END_REASON_LAGGING, callbacks_pb2.END_REASON_COMPACTED):
            seq = ended.resume_seq.get(job, 0)
            if seq > sub.next_seq.get(job, 1):
                if reason == callbacks_pb2.END_REASON_COMPACTED:
                    log.warning("subscription %s: events %d..%d of job %s are no longer retained",
                                sub.id, sub.next_seq.get(job, 1), seq - 1, job)
                sub.next_seq[job] = seq
            return self._build_catchup(sub, job, sub.next_seq.get(job, 1))
        if reason == callbacks_pb2.END_REASON_SHUTDOWN:
            return None  # the reconnect resumes it
        # The job has finished and every event was delivered.
        self._wire.pop(sub.catchups.pop(job, None), None)
        sub.finished.add(job)
        sub.next_seq.pop(job, None)
        return None

    def _dispatch_loop(self):
        while True:
            try:
                item = self._items.get(timeout=0.25)
            except queue.Empty:
                if self._stop_event.is_set():
                    return
                continue
            if self._stop_event.is_set():
                return
            if item[0] == "ended":
                _, sub, error = item
                with self._cond:
                    if sub.ended:
                        continue
                    sub.ended = True
                    sub.end_error = error
                    if self._subs.get(sub.id) is sub:
                        self._subs.pop(sub.id, None)
                    self._cond.notify_all()
                if sub.on_end is not None:
                    sub.on_end()
                continue
            with self._cond:
                self._dispatching = True
            conn = item[3]
            try:
                self._dispatch(*item[1:])
            finally:
                with self._cond:
                    self._dispatching = False
                    conn.pending -= 1
                    ack = conn.ack_locked()
                    self._cond.notify_all()
                if ack is not None:
                    conn.send(ack)

    def _dispatch(self, sub, wire, conn):
        mutations = []
        try:
            ev = _events.Event(wire)
            if sub.intercept and wire.reply_required:
                ev._extend = lambda seconds: self._extend_deadline(conn, wire, seconds)
            sub.fn(ev)
            if sub.intercept:
                mutations = ev.mutations()
        except Exception as e:  # noqa: BLE001 - a callback's failure must not stop the client
            message = "callback for %s (job %s, seq %d) raised %r; %s" % (
                wire.name, wire.job_id, wire.seq, e,
                "replied with no change" if sub.intercept else "went on")
            if self._on_error is not None:
                self._report(YolohookError(grpc.StatusCode.UNKNOWN, message))
            else:
                log.exception("%s", message)
            mutations = []
        if sub.intercept and wire.reply_required:
            # A reply for an event of a stream that broke meanwhile is lost:
            # the server has applied the failure mode already.
            self._reply(conn, wire, mutations)


def _status_code(value):
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def _images(source):
    """Inline images from paths, folders, bytes or (name, bytes) pairs."""
    if isinstance(source, (str, bytes, bytearray, os.PathLike, tuple)):
        source = [source]
    images = []
    for item in source:
        if isinstance(item, tuple):
            name, data = item
            images.append(types_pb2.Image(name=str(name), data=bytes(data)))
        elif isinstance(item, (bytes, bytearray)):
            images.append(types_pb2.Image(name="image%d" % len(images), data=bytes(item)))
        elif os.path.isdir(item):
            for name in sorted(os.listdir(item)):
                if name.lower().endswith(_IMAGE_SUFFIXES):
                    images.append(_read_image(os.path.join(item, name)))
        else:
            images.append(_read_image(item))
    if not images:
        raise ValueError("no images to predict on")
    return images


def _read_image(path):
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError("cannot read image file %r: %s" % (path, e.strerror)) from None
    if not data:
        raise ValueError("image file %r is empty" % path)
    return types_pb2.Image(name=path, data=data)
