"""What expression to show at time t: a fixed expression (changeable live, with a ramp) or a program."""

from __future__ import annotations


class ExpressionController:
    """A target (expression, intensity) that ramps over ``ramp`` seconds whenever it is changed, so a hotkey or a
    command never makes the face pop from one frame to the next."""

    def __init__(self, expression: str, intensity: float = 1.0, ramp: float = 0.5):
        self.ramp = ramp
        self.current = [(expression, intensity)]  # weights at the start of the last change
        self.target = (expression, intensity)
        self.changed_at = float("-inf")

    @property
    def expressions(self) -> list[str]:
        return [self.target[0]]

    def set(self, expression: str, intensity: float, now: float) -> None:
        self.current = self.at(now)
        self.target = (expression, intensity)
        self.changed_at = now

    def at(self, t: float) -> list[tuple[str, float]]:
        progress = 1.0 if self.ramp <= 0 else min(max((t - self.changed_at) / self.ramp, 0.0), 1.0)
        if progress >= 1.0:
            return [self.target]
        eased = progress * progress * (3 - 2 * progress)
        weights: dict[str, float] = {}
        for expression, weight in self.current:
            weights[expression] = weights.get(expression, 0.0) + weight * (1 - eased)
        name, intensity = self.target
        weights[name] = weights.get(name, 0.0) + intensity * eased
        return [(name, weight) for name, weight in weights.items() if weight > 1e-4]
