"""The Scenario-compatible simulator: the API contract on 127.0.0.1, with real audio and faults."""

from .app import Simulator, price
from .faults import Faults
from .server import SimulatorProcess, SimulatorThread, serve, stats_of, throwaway_credentials

__all__ = [
    "Faults",
    "Simulator",
    "SimulatorProcess",
    "SimulatorThread",
    "price",
    "serve",
    "stats_of",
    "throwaway_credentials",
]
