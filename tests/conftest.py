"""Shared fixtures: every behaviour test runs on the stdlib (the oracle)
and on cfutures."""
import concurrent.futures

import pytest

import cfutures

IMPLS = [concurrent.futures, cfutures]
IMPL_IDS = ["stdlib", "cfutures"]


@pytest.fixture(params=IMPLS, ids=IMPL_IDS)
def mod(request):
    """The module under test: concurrent.futures or cfutures."""
    return request.param
