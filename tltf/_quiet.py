"""Keeps TensorFlow's native start-up and converter chatter off the terminal.

TensorFlow and absl write some lines from C++ straight to file descriptor 2 whatever
`TF_CPP_MIN_LOG_LEVEL` says (`WARNING: All log messages before absl::InitializeLog()...`,
`I0000 ... cudart_stub.cc`, `E0000 ... cuInit`, the TFLite converter's
`fully_quantize: 0, inference_type: 6 ...`), so Python-level settings cannot stop them.
`quiet` points descriptor 2 at a temporary file for the duration of a block and, if the
block raised, writes what was captured back to the real stderr before the error propagates:
a real failure is never hidden. Python's own `sys.stderr` (warnings, tracebacks) keeps
pointing at the terminal. Descriptor 2 is process-wide: what native code in another thread
writes during the block is captured too, so the blocks stay short.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

# Read by TensorFlow (and gRPC, glog) when they first load.
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "3"}


def wants_tensorflow_logs() -> bool:
    """True unless `TF_CPP_MIN_LOG_LEVEL` asks TensorFlow to hide its info lines (>= 1)."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip()
    return not (level.isdigit() and int(level) >= 1)


@contextlib.contextmanager
def log_environment(verbose: bool) -> Iterator[None]:
    """Sets the log-level variables TensorFlow reads when it loads, for the block only.

    Quiet (`verbose=False`) fills in `TF_CPP_MIN_LOG_LEVEL=3` and the gRPC/glog levels the
    user did not set; `verbose=True` sets `TF_CPP_MIN_LOG_LEVEL=0`. The previous values are
    restored afterwards. TensorFlow reads them at its first import; `quiet(None)` (around
    the TFLite converter) reads `TF_CPP_MIN_LOG_LEVEL` each time.
    """
    saved = {name: os.environ.get(name) for name in _QUIET_ENV}
    try:
        if verbose:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        else:
            for name, value in _QUIET_ENV.items():
                os.environ.setdefault(name, value)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def quiet(verbose: bool | None = None) -> Iterator[None]:
    """Hides what native code writes to stderr in the block, unless `verbose`.

    Args:
        verbose: bool or `None`. `True` changes nothing; `False` captures descriptor 2 and
            writes it back only if the block raises; `None` follows `TF_CPP_MIN_LOG_LEVEL`:
            quiet when it hides info lines. Defaults to `None`.
    """
    if verbose is None:
        verbose = wants_tensorflow_logs()
    if verbose:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2 (embedded, closed)
        yield
        return
    with tempfile.TemporaryFile() as captured, _python_stderr_on(saved):
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            captured.seek(0)
            os.write(2, captured.read())
            raise
        else:
            _restore(saved)


@contextlib.contextmanager
def _python_stderr_on(fd: int) -> Iterator[None]:
    """Keeps Python's own stderr writes (warnings, tracebacks) on the terminal in the block."""
    try:
        redirect = sys.stderr.fileno() == 2
    except (OSError, ValueError, AttributeError):  # pytest's capsys, a StringIO: not fd 2
        redirect = False
    if not redirect:
        yield
        return
    previous = sys.stderr
    stream = os.fdopen(os.dup(fd), "w", buffering=1, encoding=previous.encoding,
                       errors=previous.errors)
    sys.stderr = stream
    try:
        yield
    finally:
        sys.stderr = previous
        stream.close()


def _restore(saved: int) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
