"""Simulators for the simulator tests: one of each kind per module, in a background thread
with its own event loop, state reset before every test."""

from __future__ import annotations

import os
import sys

import pytest

try:
    import multihome.simulators  # noqa: F401
except ImportError:  # not installed (no pyproject yet): use the source tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))

from multihome.simulators import SimulatorConfig, start_simulator_in_thread

from .sim_helpers import AZURE_DEPLOYMENTS, AZURE_KEY, OPENAI_KEY, wait_for


@pytest.fixture(scope="module")
def openai_sim():
    sim = start_simulator_in_thread(SimulatorConfig(kind="openai", name="openai-sim", api_key=OPENAI_KEY))
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def azure_sim():
    sim = start_simulator_in_thread(
        SimulatorConfig(
            kind="azure", name="azure-sim", api_key=AZURE_KEY, region="westeurope", deployments=AZURE_DEPLOYMENTS
        )
    )
    yield sim
    sim.close()


@pytest.fixture
def osim(openai_sim):
    openai_sim.reset()
    return openai_sim


@pytest.fixture
def asim(azure_sim):
    azure_sim.reset()
    return azure_sim


@pytest.fixture
def oclient(osim):
    import openai

    return openai.OpenAI(base_url=osim.url + "/v1", api_key=OPENAI_KEY, max_retries=0, timeout=10)


@pytest.fixture
def aclient(asim):
    import openai

    return openai.AzureOpenAI(
        azure_endpoint=asim.url, api_version="2024-10-21", api_key=AZURE_KEY, max_retries=0, timeout=10
    )


@pytest.fixture
def wait():
    return wait_for
