"""What the demo shows while it runs: one progress bar per phase on the terminal, and the
training host's own output in ``OUT/<phase>/log.txt``."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any, Iterator, TextIO



class Progress:
    """Phase headers and step bars on ``stream`` (the real terminal, not the redirected one)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True):
        self.stream = stream or sys.__stderr__
        self.enabled = enabled

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def skip(self, name: str) -> None:
        self.say(f"[demo] {name}: done earlier, skipped")

    @contextlib.contextmanager
    def phase(self, name: str, steps: int) -> Iterator[Any]:
        """A Bridge callback that advances this phase's bar."""
        from tqdm import tqdm

        from rlpt_plugin.megatron.host.progress import BarCallback

        bar = tqdm(total=steps, desc=f"[demo] {name}", unit="step", file=self.stream, disable=not self.enabled,
                   dynamic_ncols=True, mininterval=1.0)
        try:
            yield BarCallback(bar)
        finally:
            bar.close()


@contextlib.contextmanager
def phase_output(path: Path) -> Iterator[None]:
    """Send stdout, the root logger and Python warnings to ``path`` for the duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with path.open("a") as f, contextlib.redirect_stdout(f):
        handler = logging.StreamHandler(f)
        saved = root.handlers[:]
        root.handlers = [handler]
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.captureWarnings(False)
            root.handlers = saved
