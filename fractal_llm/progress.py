"""Progress where the console is not a terminal (nohup, a tmux log, CI): one plain full line every
PLAIN_LINE_S seconds. On a terminal the commands draw rich's live display instead."""

import time

PLAIN_LINE_S = 5.0  # seconds between plain progress lines: the runner, a point's training, the tiny-base build


class LineClock:
    """When the next plain line is due: at the first ask (unless the clock starts now), then every PLAIN_LINE_S."""

    def __init__(self, start_now: bool = False):
        self.last = time.monotonic() if start_now else None

    def due(self) -> bool:
        now = time.monotonic()
        if self.last is not None and now - self.last < PLAIN_LINE_S:
            return False
        self.last = now
        return True
