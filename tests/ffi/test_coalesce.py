"""Coalescing's measure of a load (loop.c: nmb_coalesce_woke, nmb_coalesce_settled), the
clock played by the test: when a wake-up from poll() comes and how many frames the
passes after it take in, as the loop reports them.

The frames that arrived in the interval a wake-up ends are those the passes after it
take in. The loop used to judge the frames of the wake-up before by the interval of
this one: a wake-up that came late (the loop waited for a CPU on a busy machine) looked
slow, and a sustained load was not coalesced (test_bridge.py's
test_coalescing_starts_again_after_the_load_stopped failed under load).
"""

from __future__ import annotations

from collections.abc import Iterable

from nmbridge._ffi._core import ffi, lib

MS = 1_000_000  # ns
#: --rx-usecs 10000, as the integration tests run it: a load is 800 frames/s or more
#: (a sleep of 10 ms would gather NMB_COALESCE_GATHER = 8 frames)
COALESCE_US = 10_000
FRAME = 60


class Loop:
    """A bridge's coalescing state and the totals the loop hands it."""

    def __init__(self) -> None:
        self.c = ffi.new("struct nmb_bridge *")
        self.c.coalesce_us = COALESCE_US
        self.c.coalesce_after = lib.NMB_COALESCE_AFTER
        self.now = 0
        self.forwarded = 0
        self.bytes = 0

    def wake(self, after_ms: float, frames: int, frame_size: int = FRAME) -> int:
        """poll() returns after_ms after the last wake-up; the passes after it take in
        `frames`. Returns the run of busy wake-ups."""
        self.now += int(after_ms * MS)
        lib.nmb_coalesce_woke(self.c, self.now)
        self.forwarded += frames
        self.bytes += frames * frame_size
        lib.nmb_coalesce_settled(self.c, self.forwarded, self.bytes)
        return int(self.c.coalesce_streak)

    def run(self, wakes: Iterable[tuple[float, int]]) -> list[int]:
        return [self.wake(after, frames) for after, frames in wakes]


def late_wakes(rate: int, late_ms: float, rounds: int) -> list[tuple[float, int]]:
    """`rate` frames/s, the loop on a busy CPU: each wake-up comes late_ms after the one
    before and takes in what arrived meanwhile, then one comes at once for the next
    frame."""
    gap_ms = 1000 / rate
    return [(late_ms, int(late_ms / gap_ms)), (gap_ms, 1)] * rounds


def test_a_steady_load_starts_coalescing() -> None:
    streaks = Loop().run([(1.0, 1)] * 20)  # 1000 frames/s, a wake-up per frame
    assert streaks == list(range(1, 21))


def test_a_late_wake_up_counts_the_frames_that_gathered_while_it_waited() -> None:
    # 1000 frames/s; every other wake-up 7.5 ms late, with the 7 frames of that time
    streaks = Loop().run(late_wakes(1000, 7.5, 10))
    assert streaks == list(range(1, 21)), "a sustained load judged as stopping"
    assert max(streaks) >= lib.NMB_COALESCE_AFTER


def test_a_slow_stream_is_no_load_however_its_wake_ups_come() -> None:
    # 500 frames/s: a sleep of 10 ms would gather 5 frames, fewer than 8
    assert Loop().run([(2.0, 1)] * 20) == [0] * 20
    assert Loop().run(late_wakes(500, 8.0, 10)) == [0] * 20


def test_requests_and_their_answers_are_no_load() -> None:
    # a ping every 200 ms, its answer 0.1 ms after it: never two busy wake-ups in a row
    streaks = Loop().run([(200.0, 1), (0.1, 1)] * 10)
    assert max(streaks) < 2, streaks


def test_a_pause_ends_the_run_at_the_wake_up_that_ends_it() -> None:
    loop = Loop()
    assert loop.run([(1.0, 1)] * 10)[-1] == 10
    assert loop.wake(500.0, 1) == 0  # the load stopped for half a second
    assert loop.wake(1.0, 1) == 1  # and starts again


def test_large_frames_are_no_load_to_coalesce() -> None:
    loop = Loop()
    streaks = [loop.wake(1.0, 1, frame_size=65_000) for _ in range(10)]  # super-frames
    assert streaks == [0] * 10
