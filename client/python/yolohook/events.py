"""Callback events, prediction results and boxes in Python form.

An :class:`Event` wraps one wire ``yolohook.v1.Event``. Callbacks read it like
Ultralytics' trainer, validator or predictor (``ev.epoch``, ``ev.loss``,
``ev.metrics``, ``ev.results``) and change what the server should change:
``ev.results`` (predictor events), ``ev.metrics`` (new or changed keys are
logged), ``ev.hyperparameters``, ``ev.stop()`` / ``ev.stop_training = True``
and ``ev.fail(reason)``. After the callback, :meth:`Event.mutations` compares
the event with what it carried and returns the Reply's mutations.
"""

import datetime
import json
import math
import os

from google.protobuf import json_format

from yolohook.v1 import types_pb2



def _event_names():
    """The event names of the catalogue the build wrote beside this file.

    yolohookd is the source: ``yolohookd --print_server_info`` writes what its
    GetServerInfo answers into server_info.json when the package is built, so
    names can be checked before any server is reached (Client.server_info()
    asks a running server).
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "server_info.json")
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except OSError as e:
        raise ImportError(
            "%s is missing: build the package (cmake builds it from yolohookd "
            "--print_server_info; see README.md)" % path
        ) from e
    return tuple(event["name"] for event in info["events"])


# Ultralytics' 25 callback events, in the order the server lists them.
EVENT_NAMES = _event_names()


def check_event_names(names):
    """Raises ValueError naming the first unknown event in ``names``."""
    for name in names:
        if name not in EVENT_NAMES:
            raise ValueError(
                "unknown callback event %r; valid events: %s"
                % (name, ", ".join(EVENT_NAMES))
            )


class Box:
    """One detection in pixels of the original image.

    ``xyxy`` is (x1, y1, x2, y2); ``conf`` the confidence in [0, 1]; ``cls``
    the class id; ``name`` the class name (from the result's names, not sent
    back: the server names classes by id); ``track_id`` is set by trackers.
    """

    __slots__ = ("xyxy", "conf", "cls", "name", "track_id")

    def __init__(self, xyxy, conf, cls, name=None, track_id=None):
        self.xyxy = tuple(float(v) for v in xyxy)
        if len(self.xyxy) != 4:
            raise ValueError("xyxy needs 4 values, got %d" % len(self.xyxy))
        self.conf = float(conf)
        self.cls = int(cls)
        self.name = name
        self.track_id = track_id

    @property
    def xywh(self):
        """Centre x, centre y, width, height."""
        x1, y1, x2, y2 = self.xyxy
        return ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)

    @classmethod
    def from_proto(cls, box, names=None):
        return cls(
            (box.x1, box.y1, box.x2, box.y2),
            box.conf,
            box.cls,
            (names or {}).get(box.cls),
            box.track_id if box.HasField("track_id") else None,
        )

    def to_proto(self):
        x1, y1, x2, y2 = self.xyxy
        box = types_pb2.Box(x1=x1, y1=y1, x2=x2, y2=y2, conf=self.conf, cls=self.cls)
        if self.track_id is not None:
            box.track_id = int(self.track_id)
        return box

    def __eq__(self, other):
        if not isinstance(other, Box):
            return NotImplemented
        return self.to_proto() == other.to_proto()

    def __repr__(self):
        return "Box(xyxy=(%.1f, %.1f, %.1f, %.1f), conf=%.3f, cls=%d%s)" % (
            self.xyxy + (self.conf, self.cls, ", name=%r" % self.name if self.name else "")
        )


class Result:
    """The result of predicting one image.

    ``path`` is the source path (or the inline image's name), ``boxes`` a list
    of :class:`Box`, highest confidence first, ``names`` the class names by
    id, ``orig_shape`` (height, width) and ``speed`` milliseconds per phase
    (``preprocess``, ``inference``, ``postprocess``).
    """

    def __init__(self, path="", boxes=(), names=None, orig_shape=(0, 0), speed=None):
        self.path = path
        self.boxes = list(boxes)
        self.names = dict(names or {})
        self.orig_shape = tuple(orig_shape)
        self.speed = dict(speed or {})

    @classmethod
    def from_proto(cls, result):
        names = dict(result.names)
        return cls(
            result.path,
            [Box.from_proto(b, names) for b in result.boxes],
            names,
            (result.orig_height, result.orig_width),
            {
                "preprocess": result.speed.preprocess_ms,
                "inference": result.speed.inference_ms,
                "postprocess": result.speed.postprocess_ms,
            },
        )

    def to_proto(self):
        result = types_pb2.Result(
            path=self.path, orig_height=int(self.orig_shape[0]), orig_width=int(self.orig_shape[1])
        )
        for box in self.boxes:
            result.boxes.append(box.to_proto())
        for cls, name in self.names.items():
            result.names[int(cls)] = name
        result.speed.preprocess_ms = self.speed.get("preprocess", 0.0)
        result.speed.inference_ms = self.speed.get("inference", 0.0)
        result.speed.postprocess_ms = self.speed.get("postprocess", 0.0)
        return result

    def __len__(self):
        return len(self.boxes)

    def __repr__(self):
        return "Result(path=%r, %d boxes)" % (self.path, len(self.boxes))


def _to_datetime(timestamp):
    if timestamp.seconds == 0 and timestamp.nanos == 0:
        return None
    return timestamp.ToDatetime(tzinfo=datetime.timezone.utc)


def _convert(field, value):
    """A state field as plain Python: dicts, lists, Results, (name, bytes) images."""
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        return dict(value)
    if field.label == field.LABEL_REPEATED:
        if message is None:
            return list(value)
        if message.full_name == "yolohook.v1.Result":
            return [Result.from_proto(r) for r in value]
        if message.full_name == "yolohook.v1.Image":
            return [(image.name, image.data) for image in value]
        return [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in value]
    if message is not None:
        return json_format.MessageToDict(value, preserving_proto_field_name=True)
    return value


def _changed(before, after):
    """Keys of ``after`` that are new or changed; NaN left in place is no change."""
    out = {}
    for key, value in after.items():
        value = float(value)
        if key in before:
            old = before[key]
            if old == value or (math.isnan(value) and math.isnan(old)):
                continue
        out[key] = value
    return out


class Event:
    """One callback event of a job.

    Always present: ``name``, ``seq``, ``job_id``, ``time`` (aware datetime),
    ``args`` (the job's key=value arguments), ``stage`` (``trainer``,
    ``validator``, ``predictor`` or ``exporter``), ``reply_required`` and
    ``state`` (the stage's wire message). Every field of the stage's state is
    an attribute too, as plain Python: ``ev.epoch`` (0-based), ``ev.loss``,
    ``ev.batch_index``, ``ev.fitness``, ``ev.lr``, ``ev.save_dir``, ...

    What a callback may change (intercepting subscriptions send it back):

    - ``results``: predictor events, a list of :class:`Result`, one per image
      (``None`` on other stages).
    - ``metrics``: trainer events: the last validation's metrics with the
      metrics callbacks logged; keys added or changed are logged (results.csv
      columns). Validator events: read only.
    - ``hyperparameters``: trainer events; changed values are set.
    - ``stop_training`` / ``stop()``: trainer events; training ends after this
      epoch's validation and saving.
    - ``fail(reason)``: any event; the job fails with ``reason``.
    """

    def __init__(self, wire):
        self.wire = wire
        self.name = wire.name
        self.seq = wire.seq
        self.job_id = wire.job_id
        self.subscription_id = wire.subscription_id
        self.time = _to_datetime(wire.time)
        self.deadline = _to_datetime(wire.deadline)
        self.reply_required = wire.reply_required
        self.args = dict(wire.args)
        self.stage = wire.WhichOneof("state")
        self.state = getattr(wire, self.stage) if self.stage else None
        self.results = None
        self.metrics = {}
        self.hyperparameters = {}
        self.stop_training = False
        self.stop_reason = None
        self.fail_reason = None
        self._extend = None  # set by the client for events awaiting a reply
        if self.stage == "predictor":
            self.results = [Result.from_proto(r) for r in self.state.results]
        elif self.stage == "trainer":
            self.metrics = dict(self.state.metrics)
            self.metrics.update(self.state.logged_metrics)
            self.hyperparameters = dict(self.state.hyperparameters)
            self.stop_training = self.state.stop
        elif self.stage == "validator":
            self.metrics = dict(self.state.metrics)
        self._metrics = dict(self.metrics)
        self._hyperparameters = dict(self.hyperparameters)
        self._stop = self.stop_training

    def __getattr__(self, name):
        # Only called for attributes not set in __init__: the state's fields.
        state = self.__dict__.get("state")
        if state is not None:
            field = state.DESCRIPTOR.fields_by_name.get(name)
            if field is not None:
                return _convert(field, getattr(state, name))
        raise AttributeError("%s event has no attribute %r" % (self.__dict__.get("name", "?"), name))

    @property
    def losses(self):
        """Trainer events: the epoch's running mean losses by name (box_loss, ...)."""
        if self.stage != "trainer":
            return {}
        return dict(zip(self.state.loss_names, self.state.tloss))

    def stop(self, reason=None):
        """Ends training after this epoch's validation and saving."""
        self.stop_training = True
        self.stop_reason = reason

    def log(self, **metrics):
        """Adds metrics (trainer events): ``ev.log(custom_score=0.5)``."""
        self.metrics.update(metrics)

    def fail(self, reason):
        """Fails the job with ``reason``."""
        self.fail_reason = str(reason) or "failed by a remote callback"

    def extend_deadline(self, seconds):
        """Asks the server to wait ``seconds`` longer for this event's reply (once per event).

        Only for intercepted events (``reply_required``); the server caps the
        total at its --max_reply_timeout and reports a refusal to on_error.
        """
        if self._extend is None:
            raise ValueError("%s seq %d awaits no reply: nothing to extend" % (self.name, self.seq))
        self._extend(seconds)

    def mutations(self):
        """The Mutation messages that turn the event as received into this one."""
        t = types_pb2
        out = []
        if self.stage == "predictor" and self.results is not None:
            after = [r.to_proto() for r in self.results]
            # Compared through the same conversion, so that fields the wire
            # left unset and Python fills with defaults are no change.
            before = [Result.from_proto(r).to_proto() for r in self.state.results]
            if after != before:
                m = t.Mutation()
                m.replace_results.results.extend(after)
                out.append(m)
        if self.stage == "trainer":
            if self.stop_training and not self._stop:
                m = t.Mutation()
                m.stop_training.reason = self.stop_reason or (
                    "stopped by a remote callback at %s" % self.name
                )
                out.append(m)
            hyp = _changed(self._hyperparameters, self.hyperparameters)
            if hyp:
                m = t.Mutation()
                m.set_hyperparameters.values.update(hyp)
                out.append(m)
            logged = _changed(self._metrics, self.metrics)
            if logged:
                m = t.Mutation()
                m.log_metrics.metrics.update(logged)
                out.append(m)
        if self.fail_reason is not None:
            m = t.Mutation()
            m.fail_job.reason = self.fail_reason
            out.append(m)
        return out

    def __repr__(self):
        return "Event(%s, job=%s, seq=%d)" % (self.name, self.job_id, self.seq)
