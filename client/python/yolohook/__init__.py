"""yolohook: run YOLO jobs on yolohookd and hook their callbacks from Python.

    import yolohook

    c = yolohook.Client("127.0.0.1:50051")
    c.add_callback("on_fit_epoch_end", lambda ev: ev.stop() if ev.epoch >= 9 else None)
    job = c.train(data="shapes", epochs=30, imgsz=320).wait()

See client/python/README.md.
"""

from yolohook.client import Client, Job, Results, Subscription, Watch, YolohookError
from yolohook.events import EVENT_NAMES, Box, Event, Result

__all__ = [
    "Box",
    "Client",
    "EVENT_NAMES",
    "Event",
    "Job",
    "Result",
    "Results",
    "Subscription",
    "Watch",
    "YolohookError",
]
__version__ = "0.1.0"
