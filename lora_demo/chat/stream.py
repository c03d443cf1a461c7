"""Streaming a batch's rows to their readers: the decoder's sink collects each row's tokens, a reader turns them
into SideResults (text up to EOS, tokens, time to first token) and wakes at most every `every_s`."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

from lora_demo.chat.request import SideResult


class _PairStreamer:
    """A generate() streamer for a batch: collects each row's new tokens and wakes the reader."""

    def __init__(self, rows: int):
        self.rows = rows
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.events: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt ids
            self._prompt_seen = True
            return
        self.add(value.reshape(self.rows, -1).tolist())

    def add(self, chunk: list[list[int]]) -> None:
        """New tokens of each row (PairDecoder's sink)."""
        for i, row in enumerate(chunk):
            self.tokens[i].extend(row)
        self.events.put(time.perf_counter())

    def end(self) -> None:
        self.events.put(None)


def _stats(r: SideResult) -> dict:
    return {"tokens": r.tokens, "ttft_s": r.ttft_s, "seconds": r.seconds, "tokens_per_s": r.tokens_per_s}


def _drain(
    streamer: _PairStreamer, results: list[SideResult], t0: float, eos: set, decode, every_s: float = 0.0
) -> Iterator[None]:
    """Read a streamer's events until generation ends, updating each row's result (text up to its first EOS,
    token count, time to first token, elapsed time). Yields after an event when a row got its first token, a row
    finished, or every_s has passed since the last yield (0: after every event); the last yield has all rows done."""
    last_yield = None
    while True:
        event = streamer.events.get()
        end = event is None
        while not end:  # take every event already waiting: one update for all of them
            try:
                nxt = streamer.events.get_nowait()
            except queue.Empty:
                break
            end, event = nxt is None, (nxt if nxt is not None else event)
        now = event if event is not None and not end else time.perf_counter()
        news = False
        for toks, res in zip(streamer.tokens, results, strict=True):
            if res.done:
                continue
            cut = next((j for j, t in enumerate(toks) if t in eos), None)
            kept = toks if cut is None else toks[:cut]
            if kept and res.ttft_s is None:
                res.ttft_s, news = now - t0, True
            if len(kept) != res.tokens or not res.text:
                res.text = decode(kept, skip_special_tokens=True)
            res.tokens, res.seconds = len(kept), now - t0
            res.done = cut is not None or end
            news = news or res.done
        if end or news or last_yield is None or now - last_yield >= every_s:
            last_yield = now
            yield
        if end:
            return
