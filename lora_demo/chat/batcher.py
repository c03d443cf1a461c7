"""Requests of several visitors (pages, API clients) for one base model decoded as ONE batch.

Each request brings its rows (prompt ids) and each row's adapter. While a batch decodes, new requests wait; when it
ends, every waiting request with the same sampling settings (all but the adapter scale and the seed, which are per
row) joins the next batch, up to MAX_ROWS rows, so two visitors who press Send together share the decoding steps
instead of taking turns (a batch waits GATHER_S after its first request arrived, for requests sent at the same
moment). Each request streams its own rows and stops on its own; the batch ends when every request in it is done or
stopped. On CUDA a batch is padded to 1, 2, 4 or 8 rows (copies of its first row, base model), so only
those sizes ever record a decoding step.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field

from lora_demo import env

MAX_ROWS = 8
CUDA_SIZES = (1, 2, 4, 8)
# A batch starts once its oldest request has waited this long, so requests sent at the same moment (two clients,
# two pages pressing Send together) arrive in time to share it; a lone request's first token comes this much later.
GATHER_S = env.chat_gather_ms() / 1000


@dataclass
class Request:
    """One request's rows, their adapters (folders; None: the base model), settings and stream."""

    rows: list[list[int]]
    adapters: list[str | None]
    settings: object  # GenSettings
    streamer: object  # engine._PairStreamer of len(rows) rows
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    queued_at: float = field(default_factory=time.perf_counter)

    @property
    def key(self):
        """What must be equal to share a batch: the sampling settings but the adapter scale and the seed (each row
        samples from its own generator, seeded with its request's seed)."""
        return dataclasses.replace(self.settings, adapter_scale=1.0, seed=0)


class Batcher:
    """The waiting requests of one ChatEngine, served on its generation thread."""

    def __init__(self, engine):
        self.engine = engine
        self.lock = threading.Lock()
        self.waiting: list[Request] = []
        self.scheduled = False  # a serve job is queued or running on the generation thread
        self.batches = 0  # batches decoded (the bench reports requests per batch)
        self.served = 0

    def submit(self, request: Request) -> None:
        with self.lock:
            self.waiting.append(request)
            if self.scheduled:
                return
            self.scheduled = True
        self.engine.worker.submit(self._serve)

    def _take(self) -> list[Request]:
        """The oldest waiting request and every other one that can share its batch (the lock held)."""
        first = self.waiting.pop(0)
        group, rows, rest = [first], len(first.rows), []
        for req in self.waiting:
            if req.key == first.key and rows + len(req.rows) <= MAX_ROWS and not req.stop.is_set():
                group.append(req)
                rows += len(req.rows)
            else:
                rest.append(req)
        self.waiting = rest
        return group

    def _serve(self) -> None:
        """On the generation thread: batches until nobody waits."""
        while True:
            with self.lock:
                if not self.waiting:
                    self.scheduled = False
                    return
                wait = self.waiting[0].queued_at + GATHER_S - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # let the requests sent together with it arrive
            with self.lock:
                group = self._take()
            self._run(group)

    def _run(self, group: list[Request]) -> None:
        engine = self.engine
        try:
            with engine.lock:
                names = engine._names_locked([a for req in group for a in req.adapters])
                rows, scales, seeds = [], [], []
                for req in group:
                    rows += req.rows
                    scales += [req.settings.adapter_scale] * len(req.rows)
                    seeds += [req.settings.seed] * len(req.rows)
                pad = _padding(len(rows)) if engine.device == "cuda" else 0
                rows, names, scales = rows + [rows[0]] * pad, names + [None] * pad, scales + [0.0] * pad
                seeds += [seeds[0]] * pad
                engine.stop_event.clear()

                def sink(chunk: list[list[int]]) -> None:
                    start = 0
                    for req in group:
                        req.streamer.add(chunk[start : start + len(req.rows)])
                        start += len(req.rows)

                def should_stop() -> bool:
                    return engine.stop_event.is_set() or all(req.stop.is_set() for req in group)

                engine._decode(
                    rows, group[0].settings, sink, names, scales=scales, should_stop=should_stop, seeds=seeds
                )
                self.batches += 1
                self.served += len(group)
        except BaseException as e:  # noqa: BLE001 - each request raises it in its own reader
            for req in group:
                req.error = e
        finally:
            for req in group:
                req.streamer.end()
                req.done.set()


def _padding(n: int) -> int:
    """Rows to add so a CUDA batch has one of the recorded sizes."""
    return next((s for s in CUDA_SIZES if s >= n), n) - n
