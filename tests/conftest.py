"""Fixtures shared by several test files."""
import signal

import pytest


@pytest.fixture
def ctrl_c_as_in_a_terminal():
    """SIGINT raising KeyboardInterrupt, as in a terminal, whatever this process inherited: a shell's
    background job (CI under nohup, say) starts with SIGINT ignored, and the trainer leaves it so."""
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, inherited)
