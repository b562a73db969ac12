"""Expression programs: ``neutral:1,happy:2,surprised:1.5`` (expression:seconds) -> what to show at time t.

Consecutive expressions cross-fade over ``ramp`` seconds, so a label never pops from one frame to the next.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    expression: str
    seconds: float


def parse_program(text: str) -> list[Segment]:
    segments = []
    for item in text.split(","):
        name, _, seconds = item.strip().partition(":")
        try:
            duration = float(seconds)
        except ValueError:
            raise ValueError(f"bad program item {item!r}: write EXPRESSION:SECONDS, e.g. happy:2") from None
        if not name or duration <= 0:
            raise ValueError(f"bad program item {item!r}: write EXPRESSION:SECONDS with SECONDS > 0")
        segments.append(Segment(name.strip(), duration))
    if not segments:
        raise ValueError("empty expression program")
    return segments


class ExpressionProgram:
    """Weights of each expression at time t: a list of (expression, weight) whose weights sum to <= 1."""

    def __init__(self, segments: list[Segment], ramp: float = 0.4, intensity: float = 1.0):
        self.segments = segments
        self.ramp = ramp
        self.intensity = intensity
        self.starts = []
        clock = 0.0
        for segment in segments:
            self.starts.append(clock)
            clock += segment.seconds
        self.duration = clock

    @property
    def expressions(self) -> list[str]:
        """Every expression the program shows, for checking against the model before any frame is made."""
        return [segment.expression for segment in self.segments]

    def at(self, t: float) -> list[tuple[str, float]]:
        index = max(i for i, start in enumerate(self.starts) if start <= max(t, 0.0))
        current = self.segments[index].expression
        into = t - self.starts[index]
        if index == 0 or self.ramp <= 0 or into >= self.ramp:
            return [(current, self.intensity)]
        # Cross-fade from the previous expression during the first `ramp` seconds of this one.
        progress = into / self.ramp
        eased = progress * progress * (3 - 2 * progress)  # smoothstep: no velocity jump at either end
        previous = self.segments[index - 1].expression
        return [(previous, self.intensity * (1 - eased)), (current, self.intensity * eased)]
