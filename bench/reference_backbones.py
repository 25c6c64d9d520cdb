#!/usr/bin/python3
"""PyTorch reference for bench_backbones: the same MobileNetV2 / ResNet50V2
(Keras layout: TF-"same" stem, correct_pad, zero-padded stem max-pool,
stride in the last block of each ResNetV2 stack) + the cxr head, timed the
same way (forward in eval/no_grad; forward+backward with the backbone
trainable and its batch norm in inference mode).

Plain torch only (Debian's python3-torch has no torchvision). Prints one JSON
object per configuration: {"name", "images_per_s", "seconds_per_batch"}.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def tf_same_pad(x, k, s):
    def pads(n):
        out = (n + s - 1) // s
        total = max((out - 1) * s + k - n, 0)
        return total // 2, total - total // 2

    top, bottom = pads(x.shape[2])
    left, right = pads(x.shape[3])
    return F.pad(x, (left, right, top, bottom))


def correct_pad(x):
    top = 0 if x.shape[2] % 2 == 0 else 1
    left = 0 if x.shape[3] % 2 == 0 else 1
    return F.pad(x, (left, 1, top, 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = cin * expansion
        self.stride = stride
        self.residual = stride == 1 and cin == cout
        self.expand = None
        if expansion != 1:
            self.expand = nn.Conv2d(cin, hidden, 1, bias=False)
            self.expand_bn = nn.BatchNorm2d(hidden, eps=1e-3)
        self.dw = nn.Conv2d(hidden, hidden, 3, stride, 1 if stride == 1 else 0,
                            groups=hidden, bias=False)
        self.dw_bn = nn.BatchNorm2d(hidden, eps=1e-3)
        self.project = nn.Conv2d(hidden, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x):
        h = x
        if self.expand is not None:
            h = F.relu6(self.expand_bn(self.expand(h)))
        if self.stride == 2:
            h = correct_pad(h)
        h = F.relu6(self.dw_bn(self.dw(h)))
        h = self.project_bn(self.project(h))
        return x + h if self.residual else h


class MobileNetV2(nn.Module):
    SPEC = [(1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1),
            (6, 32, 1), (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
            (6, 96, 1), (6, 96, 1), (6, 96, 1), (6, 160, 2), (6, 160, 1),
            (6, 160, 1), (6, 320, 1)]
    features = 1280

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 2, bias=False)
        self.bn1 = nn.BatchNorm2d(32, eps=1e-3)
        blocks, cin = [], 32
        for t, c, s in self.SPEC:
            blocks.append(InvertedResidual(cin, c, s, t))
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.conv_1 = nn.Conv2d(cin, 1280, 1, bias=False)
        self.conv_1_bn = nn.BatchNorm2d(1280, eps=1e-3)

    def forward(self, x):
        h = F.relu6(self.bn1(self.conv1(tf_same_pad(x, 3, 2))))
        h = self.blocks(h)
        return F.relu6(self.conv_1_bn(self.conv_1(h)))


class PreactBlock(nn.Module):
    def __init__(self, cin, f, stride, conv_shortcut):
        super().__init__()
        eps = 1.001e-5
        self.stride = stride
        self.preact_bn = nn.BatchNorm2d(cin, eps=eps)
        self.conv0 = nn.Conv2d(cin, 4 * f, 1) if conv_shortcut else None
        self.conv1 = nn.Conv2d(cin, f, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(f, eps=eps)
        self.conv2 = nn.Conv2d(f, f, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(f, eps=eps)
        self.conv3 = nn.Conv2d(f, 4 * f, 1)

    def forward(self, x):
        preact = F.relu(self.preact_bn(x))
        if self.conv0 is not None:
            shortcut = self.conv0(preact)
        elif self.stride > 1:
            shortcut = x[:, :, ::self.stride, ::self.stride]
        else:
            shortcut = x
        y = F.relu(self.bn1(self.conv1(preact)))
        y = F.relu(self.bn2(self.conv2(y)))
        return shortcut + self.conv3(y)


class ResNet50V2(nn.Module):
    features = 2048

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3)
        blocks, cin = [], 64
        for f, n, stride in [(64, 3, 2), (128, 4, 2), (256, 6, 2),
                             (512, 3, 1)]:
            for i in range(1, n + 1):
                blocks.append(PreactBlock(cin, f, stride if i == n else 1,
                                          i == 1))
                cin = 4 * f
        self.blocks = nn.Sequential(*blocks)
        self.post_bn = nn.BatchNorm2d(cin, eps=1.001e-5)

    def forward(self, x):
        h = self.conv1(x)
        h = F.max_pool2d(F.pad(h, (1, 1, 1, 1)), 3, 2)
        h = self.blocks(h)
        return F.relu(self.post_bn(h))


class Transfer(nn.Module):
    def __init__(self, backbone, head_units=128, dropout=0.3):
        super().__init__()
        self.backbone = backbone
        self.head_dense = nn.Linear(backbone.features, head_units)
        self.dropout = nn.Dropout(dropout)
        self.head_logit = nn.Linear(head_units, 1)

    def train(self, mode=True):
        super().train(mode)
        self.backbone.train(False)
        return self

    def forward(self, x):
        h = x.expand(-1, 3, -1, -1) * 2.0 - 1.0
        h = self.backbone(h).mean((2, 3))
        h = self.dropout(F.relu(self.head_dense(h)))
        return self.head_logit(h).squeeze(1)


def bench(arch, size, batch, backward, min_time, device):
    torch.manual_seed(0)
    model = Transfer(MobileNetV2() if arch == "mobilenetv2" else ResNet50V2())
    model.to(device)
    x = torch.rand(batch, 1, size, size, device=device)
    cuda = device.startswith("cuda")

    def step():
        if backward:
            model.zero_grad()
            model(x).sum().backward()
        else:
            with torch.no_grad():
                model(x)
        if cuda:  # time the kernels, not their launch
            torch.cuda.synchronize()

    model.train(backward)
    step()  # warm-up (allocations, one-time init), as the C++ benchmark
    iters, start = 0, time.perf_counter()
    while True:
        step()
        iters += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            break
    name = "%s/%s/%d/%d" % (arch, "fwd_bwd" if backward else "fwd", size,
                            batch)
    return {"name": name, "images_per_s": batch * iters / elapsed,
            "seconds_per_batch": elapsed / iters, "iterations": iters}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--sizes", default="128,224")
    ap.add_argument("--archs", default="mobilenetv2,resnet50v2")
    ap.add_argument("--min-time", type=float, default=1.0,
                    help="seconds of timed steps per configuration")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for arch in args.archs.split(","):
        for backward in (False, True):
            for size in map(int, args.sizes.split(",")):
                r = bench(arch, size, args.batch, backward, args.min_time,
                          args.device)
                r["threads"] = args.threads
                r["torch"] = torch.__version__
                r["device"] = args.device
                print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
