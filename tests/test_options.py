"""Inference speed options keep the network's output."""

import unittest

import torch

from bundle.networks import LCKDNet, inference_network


class TestInferenceNetwork(unittest.TestCase):
    def test_channels_last_gives_the_same_output_and_shares_weights(self):
        torch.manual_seed(0)
        net = LCKDNet(filters=[4, 8, 16], kernel_size=[3, 3, 3], strides=[1, 2, 2]).eval()
        x = torch.randn(1, 4, 16, 16, 16)
        with torch.no_grad():
            expected = net(x)
            fast = inference_network(net, channels_last=True)
            self.assertTrue(fast.output_block.conv.conv.weight.is_contiguous(memory_format=torch.channels_last_3d))
            torch.testing.assert_close(fast(x), expected, atol=1e-5, rtol=1e-5)
        self.assertIs(inference_network(net), net)
