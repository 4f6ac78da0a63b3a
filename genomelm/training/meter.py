"""Run-time figures of a training loop: step timing for tokens/s and ETA, UTC timestamps, short durations."""

from __future__ import annotations

import datetime
import time


class StepMeter:
    """Step timing for tokens/s and ETA (the first steps after a start include warm-up)."""

    def __init__(self, step: int):
        self.start_step, self.times, self.tokens = step, [time.perf_counter()], [0]

    def tick(self, step: int, tokens: int) -> None:
        self.times.append(time.perf_counter())
        self.tokens.append(self.tokens[-1] + tokens)

    def step_seconds(self, window: int = 20) -> float:
        recent = self.times[-window - 1 :]
        return (recent[-1] - recent[0]) / max(1, len(recent) - 1)

    def tokens_per_second(self, window: int = 20) -> float:
        k = min(window, len(self.times) - 1)
        if k == 0:
            return 0.0
        return (self.tokens[-1] - self.tokens[-1 - k]) / max(self.times[-1] - self.times[-1 - k], 1e-9)

    def overall_tokens_per_second(self) -> float:
        return self.tokens[-1] / max(self.times[-1] - self.times[0], 1e-9)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
