"""Progress for long loops and commands: a bar on a terminal, a few plain lines in a log.

tqdm redraws its bar with carriage returns many times a second; written to a file or a CI log
that becomes thousands of fragments. `Progress` draws the tqdm bar only when its stream is a
terminal; otherwise it prints one complete line when the loop starts, then at most one per
`percent_step` of the total (but not more often than every `min_gap` seconds) or every
`interval` seconds when progress is slow, and a last line with the total time when it closes:

    captions: 0/24000 img
    captions: 2400/24000 img (10%), 0:12 elapsed, ~1:48 left, 200.0 img/s
    ...
    captions: done, 24000 img in 2:01 (198.3 img/s)

`stage_reporter("nvila-core quantize")` gives the stage lines of a command made of a few long
steps ("nvila-core quantize [  3.1 s] calibration: 16 queries from data/sim"). Both write to
stderr, so a command's stdout (JSON reports) stays machine-readable. Only the standard library
is imported here; tqdm is imported when a bar is drawn.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL_S = 30.0
DEFAULT_PERCENT_STEP = 10.0
DEFAULT_MIN_GAP_S = 2.0


def is_terminal(stream: IO[str]) -> bool:
    """Whether `stream` is an interactive terminal (a bar can redraw in place)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def format_duration(seconds: float) -> str:
    """12.4 -> "0:12", 3725 -> "1:02:05" (like tqdm)."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """A progress display for `total` units of work (None: unknown), updated with `update(n)`.

    On a terminal it is a tqdm bar; on any other stream it prints the plain lines described in
    the module docstring. `disable=True` (e.g. on every rank but the first) prints nothing.
    `clock` is for tests.
    """

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        *,
        initial: int = 0,
        stream: IO[str] | None = None,
        disable: bool = False,
        bar: bool | None = None,
        interval: float = DEFAULT_INTERVAL_S,
        percent_step: float = DEFAULT_PERCENT_STEP,
        min_gap: float = DEFAULT_MIN_GAP_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.disable = disable
        self.interval = interval
        self.percent_step = percent_step
        self.min_gap = min_gap
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._start = self._last_line = clock()
        self._initial = initial
        self._postfix: dict[str, Any] = {}
        self._closed = False
        self._last_percent_mark = self._percent_mark()
        self._bar = None
        if disable:
            return
        if bar is None:
            bar = is_terminal(self._stream)
        if bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self._stream)
        else:
            self._emit(self._counter())

    # ------------------------------------------------------------ updating
    def update(self, n: int = 1) -> None:
        """`n` more units done."""
        self.n += n
        if self.disable or self._closed:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self._clock()
        since = now - self._last_line
        mark = self._percent_mark()
        if since >= self.interval or (mark > self._last_percent_mark and since >= self.min_gap):
            self._last_percent_mark = mark
            self._emit(self._status_line(now))

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the counts (e.g. loss=0.41), on the bar or on the next line."""
        self._postfix = dict(values)
        if self._bar is not None and not self.disable:
            self._bar.set_postfix({k: _format_value(v) for k, v in values.items()})

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.disable:
            return
        if self._bar is not None:
            self._bar.close()
            return
        elapsed = self._clock() - self._start
        done = self.n - self._initial
        count = f"{self.n}/{self.total}" if self.total not in (None, self.n) else f"{self.n}"
        line = f"{self._prefix()}done, {count} {self.unit} in {format_duration(elapsed)}"
        if elapsed > 0 and done > 0:
            line += f" ({done / elapsed:.1f} {self.unit}/s)"
        self._emit(line + self._postfix_text())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ lines
    def _percent_mark(self) -> int:
        """How many whole `percent_step`s of the total are done (0 without a total)."""
        if not self.total or self.percent_step <= 0:
            return 0
        return math.floor(100.0 * self.n / self.total / self.percent_step + 1e-9)

    def _prefix(self) -> str:
        return f"{self.desc}: " if self.desc else ""

    def _counter(self) -> str:
        total = f"/{self.total}" if self.total is not None else ""
        return f"{self._prefix()}{self.n}{total} {self.unit}"

    def _postfix_text(self) -> str:
        if not self._postfix:
            return ""
        return ", " + ", ".join(f"{k}={_format_value(v)}" for k, v in self._postfix.items())

    def _status_line(self, now: float) -> str:
        elapsed = now - self._start
        parts = [self._counter()]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        parts.append(f"{format_duration(elapsed)} elapsed")
        done = self.n - self._initial
        if elapsed > 0 and done > 0:
            rate = done / elapsed
            if self.total is not None and self.n < self.total:
                parts.append(f"~{format_duration((self.total - self.n) / rate)} left")
            parts.append(f"{rate:.1f} {self.unit}/s")
        return ", ".join(parts) + self._postfix_text()

    def _emit(self, line: str) -> None:
        self._last_line = self._clock()
        print(line, file=self._stream, flush=True)


def track(
    iterable: Iterable[T],
    desc: str = "",
    unit: str = "it",
    total: int | None = None,
    **kwargs: Any,
) -> Iterator[T]:
    """`iterable`, with a `Progress` that advances by one per item (total: len() if it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc, unit, **kwargs) as progress:
        for item in iterable:
            yield item
            progress.update(1)


def stage_reporter(
    command: str, stream: IO[str] | None = None, enabled: bool = True
) -> Callable[[str], None]:
    """A function printing "<command> [elapsed] <message>" lines: the stages of a long command."""
    start = time.monotonic()

    def report(message: str) -> None:
        if enabled:
            out = stream if stream is not None else sys.stderr
            print(f"{command} [{time.monotonic() - start:6.1f} s] {message}", file=out, flush=True)

    return report
