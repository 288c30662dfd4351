"""Local servers that speak provider wire formats (OpenAI, Azure OpenAI) with fault knobs.

    sim = await start_simulator(SimulatorConfig(kind="openai", name="openai-sim"))
    ...  # point a client at sim.url + "/v1"
    await sim.close()

See docs/simulators.md for routes, knobs and the deterministic reply rules.
"""

from .config import SimulatorConfig
from .faults import Fault, FaultError, parse_fault_header
from .server import Simulator, start_simulator
from .state import SimState
from .threaded import ThreadedSimulator, start_simulator_in_thread

__all__ = [
    "Fault",
    "FaultError",
    "SimState",
    "Simulator",
    "SimulatorConfig",
    "ThreadedSimulator",
    "parse_fault_header",
    "start_simulator",
    "start_simulator_in_thread",
]
