"""The bridge's tunables, each default and range written once: the CLI offers
them, the bridge command defaults to them, the engine refuses what is outside.
Pure Python, so that `nmbridge --help` loads no C."""

from __future__ import annotations

from dataclasses import dataclass

from nmbridge.errors import UsageError


@dataclass(frozen=True)
class Tunable:
    name: str  # as the option is spelled, without the dashes
    default: int
    low: int
    high: int

    def check(self, value: int) -> int:
        if not self.low <= value <= self.high:
            raise UsageError(f"{self.name} {value} is out of range {self.low}..{self.high}")
        return value


#: frames moved from one RX ring per pass; a pass of 8192 on each of 64 rings
#: still returns to Python within the loop's budget
BURST = Tunable("burst", 1024, 1, 8192)
#: the longest sleep in poll(): the loop looks at its stop flag at least this often
POLL_TIMEOUT_MS = Tunable("poll-timeout", 100, 1, 1000)
#: coalescing of emulated ports: 400 us gathers ~30 frames a wake-up at 80k
#: frames/s, half the CPU of waking for each (benchmarks/l2fwd.py); longer would
#: be a stall, not a batch
RX_USECS = Tunable("rx-usecs", 400, 0, 10000)
