"""The benchmark layer on the GPU, shared by bench/forward_layer.py and
bench/train_layer.py: an RTN INT4 group-128 asymmetric weight in qtune's
canonical packing (8 codes per 32-bit word, element k at bits 4k..4k+3), a
rank-16 LoRA adapter, the parameters file qtune-run reads, and PyTorch's
dequantization of the same weight (the peers' path)."""
import math
import os

import torch
from safetensors.torch import save_file


class QLayer:
    def __init__(self, n, k, out_dir, rank=16, group=128, dev="cuda"):
        self.N, self.K, self.R, self.G = n, k, rank, group
        self.alpha = 2.0 * rank
        torch.manual_seed(0)
        w = torch.randn(n, k, device=dev) * 0.02
        wg = w.view(n, k // group, group)
        wmin = wg.amin(-1, keepdim=True).clamp(max=0)
        wmax = wg.amax(-1, keepdim=True).clamp(min=0)
        self.scale = ((wmax - wmin) / 15).clamp(min=1e-8)
        self.zero = torch.round(-wmin / self.scale).clamp(0, 15)
        self.q = torch.clamp(torch.round(wg / self.scale) + self.zero, 0, 15).to(torch.int32).view(n, k)
        words = torch.zeros(n, k // 8, dtype=torch.int64, device=dev)
        for j in range(8):
            words |= self.q[:, j::8].to(torch.int64) << (4 * j)
        codes = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)
        self.scale_b = self.scale.squeeze(-1).to(torch.bfloat16)
        self.zero_b = self.zero.squeeze(-1).to(torch.bfloat16)
        self.A = (torch.randn(rank, k, device=dev) / math.sqrt(k)).to(torch.bfloat16)
        self.B = (torch.randn(n, rank, device=dev) * 0.01).to(torch.bfloat16)
        self.params = os.path.join(out_dir, "layer_params.safetensors")
        save_file({"codes": codes.contiguous(), "scales": self.scale_b.contiguous(),
                   "zeros": self.zero_b.contiguous(), "lora_A": self.A.contiguous(),
                   "lora_B": self.B.contiguous()}, self.params)
        self.packed = (self.q[:, 0::2] | (self.q[:, 1::2] << 4)).to(torch.uint8).contiguous()

    def dequant(self):
        """The bf16 weight from the packed bytes (what the peers recompute)."""
        n, k, g = self.N, self.K, self.G
        lo, hi = self.packed & 0xF, self.packed >> 4
        qq = torch.stack([lo, hi], dim=-1).view(n, k).to(torch.bfloat16)
        return ((qq.view(n, k // g, g) - self.zero_b.unsqueeze(-1))
                * self.scale_b.unsqueeze(-1)).view(n, k)
