"""TorchScript export with monai.bundle's ckpt_export: the exported model equals the eager one."""

import tempfile
import unittest
import zipfile
from pathlib import Path

import torch

from tests.helpers import tiny_checkpoint, tiny_torchscript


class TestCheckpointExport(unittest.TestCase):
    def test_scripted_bundle_model_matches_eager(self):
        with tempfile.TemporaryDirectory() as tmp:
            net, exported = tiny_torchscript(Path(tmp))
            net.eval()
            names = zipfile.ZipFile(exported).namelist()
            self.assertIn("model/extra/metadata.json", names)
            self.assertIn("model/extra/inference.json", names)
            scripted = torch.jit.load(exported).eval()
            x = torch.randn(2, 4, 32, 32, 32)
            partial = torch.tensor([[True, False, True, False], [False, False, False, True]])
            with torch.no_grad():
                torch.testing.assert_close(scripted(x), net(x), atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(scripted(x, partial), net(x, partial), atol=1e-4, rtol=1e-4)
                missing = x * partial[:, :, None, None, None]  # absent sequences as zero channels, mask inferred
                torch.testing.assert_close(scripted(missing), net(x, partial), atol=1e-4, rtol=1e-4)


class TestOnnxExport(unittest.TestCase):
    def test_onnxruntime_matches_eager_for_any_mask_and_size(self):
        try:
            import onnxruntime
        except ImportError:
            self.skipTest("onnxruntime is not installed (pip install onnxruntime)")
        from bundle.networks import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            net = tiny_checkpoint(Path(tmp) / "model.pt").eval()
            session = onnxruntime.InferenceSession(str(export_onnx(net, Path(tmp) / "model.onnx", (32, 32, 32))))
            for shape, mask in (
                ((1, 4, 32, 32, 32), [[True, True, True, True]]),
                ((2, 4, 48, 32, 40), [[True, False, True, False], [False, False, False, True]]),
            ):
                x, m = torch.randn(*shape), torch.tensor(mask)
                (pred,) = session.run(None, {"image": x.numpy(), "mask": m.numpy()})
                with torch.no_grad():
                    torch.testing.assert_close(torch.from_numpy(pred), net(x, m), atol=1e-4, rtol=1e-4)
