"""SCNet in PyTorch, written for calib's benchmarks from the fixture schema (`spec` in
meta.json / *_structure.json, see ../shared/fixtures/README.md), with PyTorch state_dict
names equal to the authors'. `python3 bench/scnet_torch.py --check DIR...` compares it with
the fixtures (eval output and train output), so the baselines time the same network.
"""
import argparse
import json
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(cin, cout, k, stride=1, padding=0, dilation=1, groups=1):
    return [nn.Conv2d(cin, cout, k, stride, padding, dilation, groups, bias=False), nn.BatchNorm2d(cout)]


class SCConv(nn.Module):
    def __init__(self, c, stride, padding, dilation, groups, pooling_r):
        super().__init__()
        self.k2 = nn.Sequential(nn.AvgPool2d(pooling_r, pooling_r), *conv_bn(c, c, 3, 1, padding, dilation, groups))
        self.k3 = nn.Sequential(*conv_bn(c, c, 3, 1, padding, dilation, groups))
        self.k4 = nn.Sequential(*conv_bn(c, c, 3, stride, padding, dilation, groups))

    def forward(self, x):
        gate = torch.sigmoid(x + F.interpolate(self.k2(x), x.shape[2:]))
        return self.k4(self.k3(x) * gate)


class SCBottleneck(nn.Module):
    def __init__(self, s):
        super().__init__()
        width = int(s["planes"] * s["bottleneck_width"] / 64) * s["cardinality"]
        stride, dil, card = s["stride"], s["dilation"], s["cardinality"]
        self.avd = s["avd"] and (stride > 1 or s["is_first"])
        inner = 1 if self.avd else stride
        self.conv1_a = nn.Conv2d(s["inplanes"], width, 1, bias=False)
        self.bn1_a = nn.BatchNorm2d(width)
        self.conv1_b = nn.Conv2d(s["inplanes"], width, 1, bias=False)
        self.bn1_b = nn.BatchNorm2d(width)
        self.k1 = nn.Sequential(*conv_bn(width, width, 3, inner, dil, dil, card))
        self.scconv = SCConv(width, inner, dil, dil, card, s["pooling_r"])
        if self.avd:
            self.avd_layer = nn.AvgPool2d(3, stride, padding=1)
        self.conv3 = nn.Conv2d(width * 2, s["planes"] * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(s["planes"] * 4)
        down = s["downsample"]
        if down is None:
            self.downsample = None
        elif down["kind"] == "conv":
            self.downsample = nn.Sequential(*conv_bn(s["inplanes"], s["planes"] * 4, 1, down["stride"]))
        else:
            pool = nn.AvgPool2d(down["pool"], down["pool"], ceil_mode=True, count_include_pad=False)
            self.downsample = nn.Sequential(pool, *conv_bn(s["inplanes"], s["planes"] * 4, 1))

    def forward(self, x):
        a = F.relu(self.bn1_a(self.conv1_a(x)))
        b = F.relu(self.bn1_b(self.conv1_b(x)))
        a = F.relu(self.k1(a))
        b = F.relu(self.scconv(b))
        if self.avd:
            a, b = self.avd_layer(a), self.avd_layer(b)
        out = self.bn3(self.conv3(torch.cat([a, b], 1)))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class SCNet(nn.Module):
    def __init__(self, s):
        super().__init__()
        stem, w = s["stem"], s["stem"]["width"]
        if stem["kind"] == "conv7x7":
            self.conv1, out = nn.Conv2d(s["in_channels"], w, 7, stem["stride"], 3, bias=False), w
        elif stem["kind"] == "conv3x3":
            self.conv1, out = nn.Conv2d(s["in_channels"], w, 3, stem["stride"], 1, bias=False), w
        else:
            self.conv1 = nn.Sequential(
                *conv_bn(s["in_channels"], w, 3, 2, 1), nn.ReLU(inplace=True),
                *conv_bn(w, w, 3, 1, 1), nn.ReLU(inplace=True),
                nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False))
            out = 2 * w
        self.bn1 = nn.BatchNorm2d(out)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if s["maxpool"] else nn.Identity()
        inplanes = out
        for i, st in enumerate(s["stages"]):
            blocks = []
            for j in range(st["blocks"]):
                stride = st["stride"] if j == 0 else 1
                down = None
                if j == 0 and (stride != 1 or inplanes != st["planes"] * 4):
                    down = {"kind": "avgpool_conv", "pool": stride} if s["avg_down"] else {"kind": "conv", "stride": stride}
                blocks.append(SCBottleneck(dict(
                    inplanes=inplanes, planes=st["planes"], stride=stride, cardinality=s["cardinality"],
                    bottleneck_width=s["bottleneck_width"], avd=s["avd"], is_first=(j == 0 and i > 0),
                    dilation=st["dilation"], pooling_r=4, downsample=down)))
                inplanes = st["planes"] * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.stages = len(s["stages"])
        self.fc = nn.Linear(inplanes, s["num_classes"])

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build(spec):
    kind = spec["kind"]
    if kind == "scnet":
        return SCNet(spec)
    if kind == "scbottleneck":
        return SCBottleneck(spec)
    if kind == "scconv":
        return SCConv(spec["channels"], spec["stride"], spec["padding"], spec["dilation"], spec["groups"], spec["pooling_r"])
    raise ValueError(f"unknown spec kind {kind!r}")


DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def load_safetensors(path):
    """A minimal safetensors reader, so the benchmark needs nothing but PyTorch."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = bytearray(data[8 + n + start:8 + n + end])
        out[name] = torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]).reshape(info["shape"]) if raw else \
            torch.zeros(info["shape"], dtype=DTYPES[info["dtype"]])
    return out


def check(directory):
    meta = json.load(open(f"{directory}/meta.json"))
    model = build(meta["spec"])
    model.load_state_dict(load_safetensors(f"{directory}/params.safetensors"))
    ok = True
    for mode, io_file in (("eval", "eval_io"), ("train", "train_io")):
        io = load_safetensors(f"{directory}/{io_file}.safetensors")
        model.train(mode == "train")
        with torch.no_grad():
            out = model(io["input"])
        ref = io.get("output", io.get("logits"))
        err = (out - ref).abs().max().item()
        tol = 1e-4 * max(1.0, ref.abs().max().item())
        ok &= err <= tol
        print(f"{directory} {mode}: max abs err {err:.3e} (tolerance {tol:.3e}) {'pass' if err <= tol else 'FAIL'}")
    return ok


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--check", nargs="+", metavar="DIR", help="fixture directories to compare with")
    args = p.parse_args()
    if args.check:
        sys.exit(0 if all([check(d) for d in args.check]) else 1)
    p.print_help()
