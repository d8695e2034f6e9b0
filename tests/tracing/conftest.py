"""Fixtures for the tracing tests: an OTLP receiver, and tracing turned off again after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar import tracing
from tests.tracing.otlp_receiver import OtlpReceiver


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
def _tracing_off() -> Iterator[None]:
    yield
    tracing.shutdown()
