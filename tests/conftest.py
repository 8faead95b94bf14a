import contextlib
import os

import pytest

# Progress bars off in tests: their output is noise in pytest logs.
os.environ.setdefault("SPECROLL_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _registries_restored():
    """Every registry as it was before the test: a toy family one test registers never changes what
    another test's loop over the registry covers."""
    from specroll.core.results import _KINDS
    from specroll.policies import DRAFTERS, POLICIES

    kinds = dict(_KINDS)
    with contextlib.ExitStack() as stack:
        for reg in (POLICIES, DRAFTERS):
            stack.enter_context(reg.restored())
        yield
    _KINDS.clear()
    _KINDS.update(kinds)
