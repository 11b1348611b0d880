"""Keyboard fallback: type an instruction in the terminal and press Enter.

What teleop_twist_keyboard users expect from a terminal node: a short help text, then every
line typed is a command. The reader is a daemon thread on stdin; end of input (Ctrl-D) ends it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO

HELP = """
Voice teleop for the nvila_nav navigator
----------------------------------------
Say "{wake}, <instruction>", e.g. "{wake}, walk to the red chair and stop".
Say "stop" or "halt" (no wake phrase needed) to stop the robot at once.

Or type an instruction here and press Enter ("stop" stops). Ctrl-C quits.
"""


class KeyboardReader:
    def __init__(self, on_line: Callable[[str], None], stream: TextIO | None = None):
        self._on_line = on_line
        self._stream = stream or sys.stdin
        self._thread = threading.Thread(target=self._read, name="voice-keyboard", daemon=True)

    def start(self, banner: str = "") -> None:
        if banner:
            print(banner, flush=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            if line.strip():
                self._on_line(line.strip())
