#!/usr/bin/env python3
"""PyTorch reference for bench_train: the same baseline CNN, augmentation
(one random affine per image via affine_grid/grid_sample, border padding)
and Adam step at 128 px, batch 32. Prints images/s for training and for
single-image prediction. Run with Debian's python3-torch (/usr/bin/python3).
"""
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Baseline(nn.Module):
    def __init__(self, filters=(16, 32, 64, 128, 256), dropout=0.3):
        super().__init__()
        layers, cin = [], 1
        for f in filters:
            layers += [nn.Conv2d(cin, f, 3, padding=1, bias=False), nn.BatchNorm2d(f)]
            cin = f
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, 1)
        self.register_buffer("mean", torch.full((1,), 0.5))
        self.register_buffer("std", torch.full((1,), 0.25))

    def forward(self, x):
        h = (x - self.mean) / self.std
        for i in range(0, len(self.layers), 2):
            h = F.max_pool2d(F.relu(self.layers[i + 1](self.layers[i](h))), 2)
        h = self.dropout(h.mean((2, 3)))
        return self.fc(h).squeeze(1)


def thetas(n, gen):
    u = lambda r: (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * r
    ang, scale, tx = u(15.0) * math.pi / 180, 1 + u(0.2), u(0.1) * 2
    ty = torch.zeros(n, dtype=torch.float64)
    c, s = torch.cos(ang) / scale, torch.sin(ang) / scale
    return torch.stack([torch.stack([c, -s, tx], 1), torch.stack([s, c, ty], 1)], 1).float()


def main():
    threads = int(os.environ.get("CXR_BENCH_THREADS", "0")) or os.cpu_count()
    torch.set_num_threads(threads)
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    size, batch = 128, 32
    torch.manual_seed(0)
    filters = tuple(int(f) for f in os.environ.get(
        "CXR_BENCH_FILTERS", "16,32,64,128,256").split(","))
    model = Baseline(filters).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randint(0, 256, (batch * 8, 1, size, size), dtype=torch.uint8)
    labels = (torch.arange(batch * 8) % 2).float()
    gen = torch.Generator().manual_seed(0)

    def step(i):
        s = (i % 8) * batch
        x = images[s:s + batch].float() / 255
        grid = F.affine_grid(thetas(batch, gen), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(x), labels[s:s + batch])
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(3):
        step(i)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(n)
        n += 1
    train_ips = n * batch / (time.perf_counter() - t0)

    model = Baseline(filters).eval()
    x = torch.rand(1, 1, size, size)
    with torch.no_grad():
        for _ in range(5):
            torch.sigmoid(model(x)).item()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            torch.sigmoid(model(x)).item()
            n += 1
    pred_ips = n / (time.perf_counter() - t0)
    print(f"reference_train_images_per_s {train_ips:.1f}")
    print(f"reference_predict1_images_per_s {pred_ips:.1f}")
    print(f"threads {threads} torch {torch.__version__} filters {filters}")


if __name__ == "__main__":
    main()
