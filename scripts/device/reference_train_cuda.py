#!/usr/bin/env python3
"""PyTorch eager training loop, the reference of issue 17's GPU goal (cxr
train >= 1.2x an equivalent PyTorch eager loop, same model, batch and
augmentation). Used by scripts/device/issue17.sh.

Model: bench/reference_backbones.py's MobileNetV2 / ResNet50V2 + the cxr head
(the same layers as cxr's Keras-layout models). Batch norm: in inference mode
for MobileNetV2 (cxr fine-tunes the ImageNet backbone that way) and in
training mode for ResNet50V2 (cxr trains it from scratch, no weights here).
Augmentation: one random affine per image (rotation 15 deg, scale 0.2, shift
0.1 in width only; affine_grid + grid_sample, border padding) as bench/reference_train.py
and cxr's augment. Adam lr 1e-4 (PyTorch's default: foreach on CUDA), BCE
with logits, dropout 0.3. Data: uint8 images already on the device (no
loading: favours PyTorch against cxr train, which reads its cache).

Two loops are timed: "sync" reads loss.item() every step, as the usual
eager loop does; "nosync" keeps the loss sum on the device and reads it once.
Prints one JSON line per loop: {"arch", "size", "batch", "loop",
"images_per_s", "steps"}.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "bench"))
from reference_backbones import MobileNetV2, ResNet50V2, Transfer  # noqa: E402


class TransferTrainBn(Transfer):
    """Transfer with the backbone's batch norm in training mode."""

    def train(self, mode=True):
        torch.nn.Module.train(self, mode)
        return self


def thetas(n, gen, device):
    u = lambda r: (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * r  # noqa: E731
    ang, scale, tx = u(15.0) * math.pi / 180, 1 + u(0.2), u(0.1) * 2
    ty = torch.zeros(n, dtype=torch.float64)  # cxr: height_shift 0
    c, s = torch.cos(ang) / scale, torch.sin(ang) / scale
    t = torch.stack([torch.stack([c, -s, tx], 1), torch.stack([s, c, ty], 1)], 1)
    return t.float().to(device, non_blocking=True)


def run(arch, size, batch, seconds, device, sync):
    torch.manual_seed(0)
    backbone = MobileNetV2() if arch == "mobilenetv2" else ResNet50V2()
    cls = Transfer if arch == "mobilenetv2" else TransferTrainBn
    model = cls(backbone).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    n = batch * 8
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8,
                           device=device)
    labels = (torch.arange(n, device=device) % 2).float()
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros((), device=device)

    def step(i):
        s = (i % 8) * batch
        x = images[s:s + batch].float() / 255
        grid = F.affine_grid(thetas(batch, gen, device), list(x.shape),
                             align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                          align_corners=False)
        opt.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(model(x), labels[s:s + batch])
        loss.backward()
        opt.step()
        if sync:
            loss.item()
        else:
            total.add_(loss.detach())

    for i in range(5):  # warm-up: cuDNN autotuning off, allocator, kernels
        step(i)
    wait = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    wait()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(steps)
        steps += 1
    wait()
    total.item()
    ips = steps * batch / (time.perf_counter() - t0)
    return {"arch": arch, "size": size, "batch": batch,
            "loop": "sync" if sync else "nosync", "images_per_s": round(ips, 1),
            "steps": steps, "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--archs", default="mobilenetv2,resnet50v2")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("reference_train_cuda.py: no CUDA device")
    for arch in args.archs.split(","):
        for sync in (True, False):
            print(json.dumps(run(arch, args.size, args.batch, args.seconds,
                                 args.device, sync)), flush=True)


if __name__ == "__main__":
    main()
