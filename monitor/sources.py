"""Open the one source a run reads from: a serial port/URL, the simulator, or a replay.

Every choice ends as a :class:`firmware_bridge.source.Source`, so the checker,
recorder, terminal view and GUI never know which one they listen to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.protocol import DEFAULT_BAUD
from firmware_bridge.source import Source


@dataclass(frozen=True)
class SourceSpec:
    """What the user asked to read. Exactly one of port, sim, replay is set."""

    port: str | None = None
    sim: str | None = None
    replay: str | None = None
    cups: int = 4
    rate_hz: int = 100
    seed: int = 0
    speed: float | None = None
    baud: int = DEFAULT_BAUD
    db: Path | None = None
    sim_params: tuple[tuple[str, str], ...] = ()

    @property
    def kind(self) -> str:
        return "port" if self.port else "sim" if self.sim else "replay"

    def describe(self) -> str:
        if self.port:
            return self.port
        if self.sim:
            return f"simulator: {self.sim}"
        return f"replay: {self.replay}"

    @property
    def is_live(self) -> bool:
        return self.replay is None


def sim_url(spec: SourceSpec) -> str:
    """The ``sim://`` URL of the built-in simulator for ``spec``."""
    from sim.protocol_sim import make_url  # importing sim registers the sim:// handler

    params: dict[str, object] = {"cups": spec.cups, "rate": spec.rate_hz, "seed": spec.seed}
    if spec.speed is not None:
        params["speed"] = spec.speed
    params.update(dict(spec.sim_params))
    return make_url(spec.sim, **params)


def open_source(spec: SourceSpec) -> Source:
    """Build (not start) the source for ``spec``. Raises LinkError / StoreError /
    ValueError with a one-line message on bad input."""
    if spec.replay is not None:
        from monitor.replay import open_replay

        return open_replay(spec.replay, spec.db, speed=spec.speed)
    from firmware_bridge.link import SerialLink

    url = sim_url(spec) if spec.sim else spec.port
    assert url is not None
    return SerialLink(url, baudrate=spec.baud)
