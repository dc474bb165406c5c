"""Test support: a real yolohookd on 127.0.0.1:0 and a tiny dataset.

The server binary comes from $YOLOHOOKD (set by CTest). The dataset is drawn
here, in pure Python, as PNG files in the Ultralytics layout: 8 training and
4 validation images of 64 px with circles (class 0) and rectangles (class 1).
"""

import os
import random
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import zlib


def png_bytes(width, height, rgb):
    """Encodes ``rgb`` (bytes, row-major, 3 per pixel) as a PNG file."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + rgb[y * width * 3:(y + 1) * width * 3] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def shapes_image(rng, size=64):
    """One image with 1-3 shapes; returns (png bytes, label lines)."""
    pixels = bytearray(rng.randrange(40, 90) for _ in range(size * size * 3))
    labels = []
    for _ in range(rng.randint(1, 3)):
        cls = rng.randint(0, 1)
        w = rng.randint(12, 28)
        h = w if cls == 0 else rng.randint(10, 28)
        x1 = rng.randint(0, size - w)
        y1 = rng.randint(0, size - h)
        colour = bytes(rng.randrange(150, 256) for _ in range(3))
        cx, cy, r2 = x1 + w / 2, y1 + h / 2, (w / 2) ** 2
        for y in range(y1, y1 + h):
            for x in range(x1, x1 + w):
                if cls == 0 and (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 > r2:
                    continue
                i = (y * size + x) * 3
                pixels[i:i + 3] = colour
        labels.append("%d %.6f %.6f %.6f %.6f" % (cls, cx / size, cy / size, w / size, h / size))
    return png_bytes(size, size, bytes(pixels)), labels


def make_tiny_shapes(root, train=8, val=4, seed=0):
    """Writes the dataset under ``root``; returns its data.yaml path."""
    rng = random.Random(seed)
    for split, count in (("train", train), ("val", val)):
        os.makedirs(os.path.join(root, "images", split))
        os.makedirs(os.path.join(root, "labels", split))
        for i in range(count):
            png, labels = shapes_image(rng)
            with open(os.path.join(root, "images", split, "%03d.png" % i), "wb") as f:
                f.write(png)
            with open(os.path.join(root, "labels", split, "%03d.txt" % i), "w") as f:
                f.write("\n".join(labels) + "\n")
    yaml = os.path.join(root, "data.yaml")
    with open(yaml, "w") as f:
        f.write("path: %s\ntrain: images/train\nval: images/val\nnames:\n  0: circle\n  1: rectangle\n"
                % root)
    return yaml


def tiny_train_args(data, epochs):
    """A tiny training run: 8 images of 64 px in 2 batches of 4, the smallest model,
    an optimizer step per batch and no warmup (the scheduler's on_params_update
    fires after every epoch but the last)."""
    return dict(data=data, model="yolov8n", imgsz=64, batch=4, nbs=4, warmup_epochs=0, epochs=epochs,
                workers=1, plots=False, verbose=False)


class Yolohookd:
    """A yolohookd process with a temporary data directory; ``address`` is host:port."""

    def __init__(self, *flags):
        self.dir = tempfile.mkdtemp(prefix="yolohook_py_")
        self.data = make_tiny_shapes(os.path.join(self.dir, "shapes"))
        self._flags = list(flags)
        self._log = open(os.path.join(self.dir, "yolohookd.log"), "a")
        self._start("127.0.0.1:0")

    def _start(self, listen):
        self._reader = None
        self.process = subprocess.Popen(
            [os.environ["YOLOHOOKD"], "--listen=" + listen,
             "--data_dir=" + os.path.join(self.dir, "data"), "--threads=2",
             # The dataset lies beside the data directory.
             "--allowed_roots=" + os.path.join(self.dir, "shapes")] + self._flags,
            stdout=subprocess.PIPE, stderr=self._log, text=True)
        # "yolohookd VERSION listening on ADDRESS", after any job's lines (a
        # restarted server resumes interrupted jobs first).
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            if " listening on " in line:
                self.address = line.rsplit(" ", 1)[1].strip()
                break
        else:
            log = self.log()
            self.stop()
            raise RuntimeError("yolohookd did not start: %r; log: %s" % (lines, log))
        # Jobs print progress on stdout: keep reading it so that it never fills.
        self._reader = threading.Thread(target=self._drain, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _drain(self, stdout):
        for line in stdout:
            self._log.write(line)
            self._log.flush()

    def log(self):
        with open(os.path.join(self.dir, "yolohookd.log")) as f:
            return f.read()

    def _terminate(self):
        """SIGTERM (the server drains), then waits for the process."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join()
            self._reader = None
        self.process.stdout.close()

    def restart(self):
        """Drains and stops the server, then starts it again on the same address and data."""
        self._terminate()
        self._start(self.address)

    def stop(self):
        self._terminate()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
