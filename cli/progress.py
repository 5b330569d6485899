"""Progress on stderr, only when it is a terminal: click's progress bar, with rate and ETA.

The library reports (stage, done, total); each new stage opens a new bar.
"""
from __future__ import annotations

import sys
import time

import click


class ProgressDisplay:
    """A callable the library reports progress to."""

    def __init__(self):
        self.stage, self.bar, self.done, self.started = None, None, 0, 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage or done < self.done:
            self.close()
            self.stage, self.done, self.started = stage, 0, time.perf_counter()
            self.bar = click.progressbar(length=total, label=stage, file=sys.stderr,
                                         show_eta=True, show_pos=True,
                                         item_show_func=self._rate)
            self.bar.__enter__()
        self.bar.update(done - self.done, done)
        self.done = done
        if done >= total:
            self.close()

    def _rate(self, done) -> str | None:
        elapsed = time.perf_counter() - self.started
        return f"{done / elapsed:.0f} samples/s" if done and elapsed > 0 else None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar, self.stage = None, None


def progress_display() -> ProgressDisplay | None:
    return ProgressDisplay() if sys.stderr.isatty() else None
