"""Run every docstring example (``--doctest-modules`` over bundle/) in a scratch folder of its own: an example that
writes a file (``export_onnx(..., "m.onnx")``) writes there, never into the checkout."""

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _examples_write_into_a_scratch_folder(request, tmp_path, monkeypatch):
    if isinstance(request.node, DoctestItem):
        monkeypatch.chdir(tmp_path)
