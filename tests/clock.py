"""A clock for tests: time passes only when the test says (the rate limiter's, the editor
sessions'), so nothing a test checks depends on how fast the machine is."""

from __future__ import annotations


class Clock:
    """It starts at a round number and moves by what the test adds (binary fractions keep
    every time and every wait exact in floating point)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
