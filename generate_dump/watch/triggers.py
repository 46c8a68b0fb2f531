"""The conditions `watch` dumps on, each judged from /proc samples (ProcDump's triggers).

A trigger sees the previous and the current sample of one process and says whether it
fires, with the measured value; `--for` asks that the condition hold that long first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .procstat import ProcSample


def human_size(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}".replace(".0", "")
        n /= 1024
    return f"{n}"


@dataclass(frozen=True)
class Firing:
    trigger: str  # "cpu-above", ...
    threshold: str  # as shown to the user: "90%", "512M", "100"
    value: str  # what was measured: "97.5%"
    label: str  # for file names: "cpu-above-97pct"


@dataclass
class Trigger:
    """One threshold on one measure; ``above`` or below."""

    kind: str  # "cpu", "memory", "threads", "fds"
    above: bool
    limit: float
    hold: float = 0.0  # seconds the condition must hold (--for)

    @property
    def name(self) -> str:
        return f"{self.kind}-{'above' if self.above else 'below'}"

    def measure(self, prev: Optional[ProcSample], cur: ProcSample) -> Optional[float]:
        if self.kind == "cpu":
            if prev is None or cur.taken <= prev.taken:
                return None
            return 100.0 * (cur.cpu_seconds - prev.cpu_seconds) / (cur.taken - prev.taken)
        if self.kind == "memory":
            return float(cur.rss)
        if self.kind == "threads":
            return float(cur.threads)
        if self.kind == "fds":
            return None if cur.fds is None else float(cur.fds)
        raise ValueError(self.kind)

    def show(self, value: float) -> str:
        if self.kind == "cpu":
            return f"{value:.1f}%"
        if self.kind == "memory":
            return human_size(value)
        return f"{value:.0f}"

    def label(self, value: float) -> str:
        if self.kind == "cpu":
            return f"{self.name}-{value:.0f}pct"
        if self.kind == "memory":
            return f"{self.name}-{human_size(value)}"
        return f"{self.name}-{value:.0f}"

    def holds(self, value: float) -> bool:
        # ProcDump: "exceeds or equals" / "is less than".
        return value >= self.limit if self.above else value < self.limit


@dataclass
class Every:
    """A plain period: fires every ``period`` seconds from the start of watching."""

    period: float
    name: str = "every"


class TriggerState:
    """One process's progress on each trigger: since when a condition has held."""

    def __init__(self, triggers: list[Trigger], every: Optional[Every], started: float):
        self.triggers = triggers
        self.every = every
        self.since: dict[int, Optional[float]] = {i: None for i in range(len(triggers))}
        self.next_every = started + every.period if every else None

    def check(self, prev: Optional[ProcSample], cur: ProcSample) -> Optional[Firing]:
        """The first trigger that fires now, if any (the state advances either way)."""
        fired: Optional[Firing] = None
        now = cur.taken
        for i, t in enumerate(self.triggers):
            value = t.measure(prev, cur)
            if value is None:
                continue
            if not t.holds(value):
                self.since[i] = None
                continue
            start = self.since[i]
            if start is None:
                # Held since somewhere in the last interval; count from the earlier sample.
                start = prev.taken if (prev is not None and t.kind == "cpu") else now
                self.since[i] = start
            if fired is None and now - start >= t.hold - 1e-9:
                shown = t.show(value)
                limit = t.show(t.limit)
                if t.hold:
                    shown += f" for {now - start:.1f} s"
                fired = Firing(t.name, limit, shown, t.label(value))
        if fired is None and self.next_every is not None and now >= self.next_every:
            assert self.every is not None
            fired = Firing("every", f"{self.every.period:g}s", f"{self.every.period:g}s",
                           f"every-{self.every.period:g}s")
        return fired

    def dumped(self, now: float) -> None:
        """After a dump: conditions must build up again; the period restarts."""
        for i in self.since:
            self.since[i] = None
        if self.every is not None:
            self.next_every = now + self.every.period
