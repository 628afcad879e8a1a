"""PyTorch baselines for the SCNet-50 (or ResNet-50) training step on one GPU: eager and
torch.compile, float32 (PyTorch's default: cuDNN convolutions on TF32 tensor cores) and
bfloat16 autocast, NCHW and channels_last, images per second. Written for
scripts/gpu-check.sh, which runs it beside calib on the same GPU in the same run.

    python3 bench/torch_gpu_step.py --out results.json [--model scnet50|resnet50]
                                    [--batch 64] [--steps 20] [--no-compile | --compile-only]
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scnet_torch import build  # noqa: E402

SCNET50 = {"kind": "scnet", "in_channels": 3, "stem": {"kind": "conv7x7", "width": 64, "stride": 2},
           "maxpool": True, "stages": [{"planes": 64, "blocks": 3, "stride": 1, "dilation": 1},
                                        {"planes": 128, "blocks": 4, "stride": 2, "dilation": 1},
                                        {"planes": 256, "blocks": 6, "stride": 2, "dilation": 1},
                                        {"planes": 512, "blocks": 3, "stride": 2, "dilation": 1}],
           "avg_down": False, "avd": False, "cardinality": 1, "bottleneck_width": 32, "num_classes": 1000}


class Bottleneck(torch.nn.Module):
    """torchvision's ResNet-50 block (v1.5: the stride on the 3x3 convolution)."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        nn = torch.nn
        self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes)
        self.downsample = None
        if stride != 1 or inplanes != 4 * planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, 4 * planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(4 * planes))

    def forward(self, x):
        relu = torch.nn.functional.relu
        out = relu(self.bn1(self.conv1(x)))
        out = relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return relu(out + (x if self.downsample is None else self.downsample(x)))


def resnet50():
    """ResNet-50 as calib's `resnet50` preset and torchvision build it."""
    nn = torch.nn
    layers, inplanes = [], 64
    for planes, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for j in range(blocks):
            layers.append(Bottleneck(inplanes, planes, stride if j == 0 else 1))
            inplanes = 4 * planes
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1), *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2048, 1000))


MODELS = {"scnet50": lambda: build(SCNET50), "resnet50": resnet50}


def measure(model_name, compiled, dtype, channels_last, batch, steps, warmup):
    torch.manual_seed(0)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = MODELS[model_name]().cuda().train().to(memory_format=layout)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=layout)
    y = torch.randint(0, 1000, (batch,), device="cuda")
    forward = torch.compile(model) if compiled else model

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = torch.nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    return {"mode": "torch.compile" if compiled else "eager", "dtype": dtype,
            "layout": "channels_last" if channels_last else "nchw",
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32, "batch": batch,
            "step_ms": dt * 1e3, "images_per_second": batch / dt, "warmup_seconds": warm,
            "peak_memory_bytes": torch.cuda.max_memory_allocated()}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--model", choices=sorted(MODELS), default="scnet50")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    modes = p.add_mutually_exclusive_group()
    modes.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow first compile)")
    modes.add_argument("--compile-only", action="store_true",
                       help="only torch.compile (eager measured by another run)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device visible to PyTorch", file=sys.stderr)
        return 3
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "model": args.model, "runs": []}
    # Eager as users run it (the default, and bf16 autocast channels_last, the fastest
    # eager setting), then torch.compile (its first compile takes minutes).
    runs = [] if args.compile_only else [(False, "f32", False), (False, "bf16", True), (False, "bf16", False)]
    if not args.no_compile:
        runs += [(True, "f32", False), (True, "bf16", True)]
    for compiled, dtype, channels_last in runs:
        torch.cuda.reset_peak_memory_stats()
        r = measure(args.model, compiled, dtype, channels_last, args.batch, args.steps,
                    warmup=3 if not compiled else 5)
        print(f"PyTorch {args.model} {r['mode']:>13} {dtype} {r['layout']}: {r['images_per_second']:.0f} images/s "
              f"({r['step_ms']:.1f} ms/step)")
        results["runs"].append(r)
        json.dump(results, open(args.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
