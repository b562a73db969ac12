"""The One Euro filter (Casiez, Roussel & Vogel, CHI 2012) driven by real frame timestamps.

It smooths a noisy signal with a low-pass whose cut-off rises with the signal's speed: still faces get heavy
smoothing (no jitter), fast moves get little (no lag). Timestamps come from the frames, never an assumed rate, so
a webcam that delivers 24 fps instead of 30 is filtered correctly.
"""

from __future__ import annotations

import math

import numpy as np


def smoothing_factor(elapsed: float, cutoff: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / elapsed)


class OneEuroFilter:
    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, derivative_cutoff: float = 1.0):
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.derivative_cutoff = derivative_cutoff
        self.value = None
        self.derivative = None
        self.time = None

    def reset(self) -> None:
        self.value = self.derivative = self.time = None

    def __call__(self, value: np.ndarray, timestamp: float) -> np.ndarray:
        value = np.asarray(value, dtype=np.float64)
        if self.value is None or timestamp <= self.time:
            self.value, self.derivative, self.time = value, np.zeros_like(value), timestamp
            return value
        elapsed = timestamp - self.time
        raw_derivative = (value - self.value) / elapsed
        a_d = smoothing_factor(elapsed, self.derivative_cutoff)
        self.derivative = a_d * raw_derivative + (1 - a_d) * self.derivative
        cutoff = self.min_cutoff + self.beta * np.abs(self.derivative)
        a = 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * elapsed))
        self.value = a * value + (1 - a) * self.value
        self.time = timestamp
        return self.value
