"""What tltf shows while it works: one verbosity rule, one progress display, quiet TF logs.

`resolve_verbose("auto")` is Keras' bar (1) when stdout is a terminal and one line per epoch
(2) when it is a file or a CI log, where a bar would write a line of escape codes per step.
`progress` shows the long steps Keras does not (checking files, caching features,
evaluating, verifying an export, search trials) the same way: a single line redrawn with
`\\r` on a terminal, a few plain lines otherwise, nothing at `verbose=0`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

__all__: list[str] = []

_LINES_EVERY = 0.1  # fraction of the total between two plain lines
_LINES_SECONDS = 30.0  # at most this long without a plain line (unknown totals, slow steps)
_LINES_GAP = 2.0  # at least this long between two plain lines: a quick step gets start and done
_BAR_SECONDS = 0.2  # at most this often a redraw of the terminal bar
_BAR_WIDTH = 30


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def resolve_verbose(verbose, stream=None) -> int:
    """0 (silent), 1 (a bar redrawn in place) or 2 (plain lines) for `verbose`.

    `"auto"` is 1 when `stream` (default `sys.stdout`) is a terminal, else 2.
    """
    if verbose == "auto":
        return 1 if _isatty(sys.stdout if stream is None else stream) else 2
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ValueError(
            "`verbose` must be 'auto', 0 (silent), 1 (progress bar) or 2 (one line per epoch). "
            f"Received: verbose={verbose!r}"
        )
    return int(verbose)


class Progress:
    """Counts done items of one step and shows them; `update` costs a compare between redraws."""

    def __init__(self, total, label, verbose="auto", *, stream=None, unit="items"):
        self.stream = sys.stdout if stream is None else stream
        self.mode = resolve_verbose(verbose, self.stream)
        self.total = int(total) if total is not None and total >= 0 else None
        self.label, self.unit = label, unit
        self.count = 0
        self.t0 = self.last_time = time.perf_counter()
        self.closed = False
        if self.mode == 0:
            self.next_at = float("inf")
            return
        self.last_line = 0  # the tenth of the total last reported as a plain line
        self.step = max(1, self.total // 100) if self.total else 1
        self.next_at = self.step
        if self.mode == 2:
            self._line("started" if self.total is None else f"0/{self.total} {self.unit}")
        else:
            self._bar()

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.count >= self.next_at:
            self._checkpoint()

    def close(self) -> None:
        if self.closed or self.mode == 0:
            self.closed = True
            return
        self.closed = True
        seconds = time.perf_counter() - self.t0
        if self.mode == 1:
            self._bar(final=True)
            self.stream.write("\n")
        else:
            unit = self.unit.removesuffix("s") if self.count == 1 else self.unit
            self._line(f"done, {self.count} {unit} in {seconds:.1f}s")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _checkpoint(self) -> None:
        now = time.perf_counter()
        self.next_at = self.count + self.step
        if self.mode == 1:
            if now - self.last_time >= _BAR_SECONDS or self.count == self.total:
                self.last_time = now
                self._bar()
            elif self.total is None:
                self.step = min(2 * self.step, 256)  # unknown total: fewer checks when fast
            return
        tenth = int(self.count * 10 / self.total) if self.total else -1
        since = now - self.last_time
        if (tenth > self.last_line and self.count < self.total and since >= _LINES_GAP) or (
                since >= _LINES_SECONDS):
            self.last_line = max(self.last_line, tenth)
            self.last_time = now
            done = f"{self.count}/{self.total}" if self.total else f"{self.count}"
            percent = f" ({100 * self.count // self.total}%)" if self.total else ""
            self._line(f"{done} {self.unit}{percent}, {now - self.t0:.0f}s")
        elif self.total is None:
            self.step = min(2 * self.step, 256)

    def _line(self, text: str) -> None:
        self.stream.write(f"{self.label}: {text}\n")
        self.stream.flush()

    def _bar(self, final: bool = False) -> None:
        seconds = time.perf_counter() - self.t0
        if self.total:
            filled = _BAR_WIDTH * min(self.count, self.total) // self.total
            bar = "[" + "=" * filled + "." * (_BAR_WIDTH - filled) + "]"
            text = f"{self.label} {bar} {self.count}/{self.total} {self.unit}"
        else:
            text = f"{self.label} {self.count} {self.unit}"
        self.stream.write(f"\r{text} {seconds:.0f}s")
        self.stream.flush()


def progress(items, label: str, verbose="auto", *, total=None, stream=None, unit="items"):
    """Shows the progress of a long step.

    Args:
        items: an iterable (each item it yields counts one; `total` defaults to its `len`
            when it has one) or an int, the total of a step counted by hand with `update`.
        label: str. What the step is, e.g. `"checking files"`.
        verbose: `"auto"`, 0, 1 or 2 (see `resolve_verbose`).

    Returns:
        For an iterable, a generator over its items; for an int, a `Progress` (a context
        manager: `with progress(n, ...) as bar: ... bar.update(k)`).
    """
    if isinstance(items, int) and not isinstance(items, bool):
        return Progress(items, label, verbose, stream=stream, unit=unit)
    if resolve_verbose(verbose, stream) == 0:
        return iter(items)
    if total is None:
        try:
            total = len(items)
        except TypeError:
            total = None
    return _counted(items, Progress(total, label, verbose, stream=stream, unit=unit))


def _counted(items, bar: Progress):
    try:
        for item in items:
            yield item
            bar.count += 1
            if bar.count >= bar.next_at:
                bar._checkpoint()
    finally:
        bar.close()


# ----------------------------------------------------------------------------------------------
# TensorFlow's frequent-retracing warning.


class _KerasStepRetracing(logging.Filter):
    """Drops TensorFlow's retracing warning for the step functions of Keras' own trainer.

    TensorFlow's detector counts traces per Python code object, not per `tf.function`, and
    Keras builds every model's train, test and predict function from the same code. Each new
    model, and each recompiled phase, traces its own function once per batch shape, which is
    no retracing at all, yet after five of them in one process (a few small models, a search)
    the detector warns. Only that message is dropped; any other retracing still warns.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message
                    and "TensorFlowTrainer." in message)


@contextlib.contextmanager
def keras_steps_without_retracing_warning():
    """While Keras fits or predicts inside tltf, its step functions' retracing is not warned."""
    logger = logging.getLogger("tensorflow")
    quiet = _KerasStepRetracing()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
