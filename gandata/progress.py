"""Progress for long work: a bar with rate and ETA on a terminal, plain periodic lines otherwise.

Library calls take ``progress=False`` by default and stay silent; the CLI turns it on. Counters other than the
main count (``bad=``, ``failed=`` …) are shown beside the bar.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt_eta(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None = None,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 10.0,
    ):
        self.label = label
        self.total = total
        self.done = 0
        self.counters: dict[str, int] = {}
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.interval = interval
        self.start = time.monotonic()
        self._last_line = self.start
        self._bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[extra]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=total, rate="", extra="")
            self._bar.start()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def _extra(self) -> str:
        return " ".join(f"{k} {v}" for k, v in self.counters.items() if v)

    def advance(self, n: int = 1, **counters: int) -> None:
        self.done += n
        for k, v in counters.items():
            self.counters[k] = self.counters.get(k, 0) + v
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{self.rate():.0f}/s", extra=self._extra())
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._print_line()

    def _print_line(self) -> None:
        rate = self.rate()
        parts = [f"{self.label}: {self.done}" + (f"/{self.total}" if self.total else "")]
        if self.total:
            parts.append(f"({100 * self.done / max(1, self.total):.0f}%)")
        parts.append(f"{rate:.0f}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"eta {_fmt_eta((self.total - self.done) / rate)}")
        extra = self._extra()
        if extra:
            parts.append(extra)
        print(" ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.done:
            self._print_line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
