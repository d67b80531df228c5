"""init_distributed outside torchrun; the two-process run itself is tests/test_multi_gpu.py."""

import os
import unittest
from unittest import mock

from bundle.distributed import TORCHRUN_VARIABLES, init_distributed
from bundle.errors import InputError


class TestInitDistributed(unittest.TestCase):
    def test_outside_torchrun_says_how_to_start_it(self):
        environment = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
        with mock.patch.dict(os.environ, environment, clear=True):
            with self.assertRaisesRegex(InputError, r"torchrun --nproc_per_node=N -m monai.bundle run"):
                init_distributed()
