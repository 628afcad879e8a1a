"""Times one SGD training step of tiny_scnet (batch 32, CPU) in PyTorch eager, and with
--with-calib calib's criterion benchmark of the same step in the same run, and reports
the ratio. Without PyTorch installed it says so and exits 0 with no figures.

    python3 bench/torch_train_step.py --with-calib [--threads 2] [--json out.json]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))


def torch_step_seconds(spec, batch, shape, steps, threads):
    import torch
    sys.path.insert(0, here)
    from scnet_torch import build
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(spec).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, *shape)
    y = torch.arange(batch) % spec.get("num_classes", 10)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def calib_step_seconds():
    """calib's time for the same step: its criterion benchmark (benches/train_step.rs),
    run now so that both figures come from the same machine state."""
    out = subprocess.run(["cargo", "bench", "--bench", "train_step", "--", "--noplot"],
                         capture_output=True, text=True, cwd=os.path.dirname(here))
    m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+)", out.stdout)
    if not m:
        raise RuntimeError("could not read the criterion result:\n" + out.stdout[-2000:])
    value, unit = float(m.group(1)), m.group(2)
    return value * {"s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6}[unit]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--fixture", default=os.path.join(here, "..", "..", "shared", "fixtures", "tiny_scnet"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--with-calib", action="store_true", help="also run calib's criterion bench and report the ratio")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        print("PyTorch is not installed: no baseline measured (pip install torch to get one)")
        return 0
    meta = json.load(open(os.path.join(args.fixture, "meta.json")))
    shape = meta["input_shape"][1:]
    t_torch = torch_step_seconds(meta["spec"], args.batch, shape, args.steps, args.threads)
    result = {"model": "tiny_scnet", "batch": args.batch, "threads": args.threads,
              "pytorch_step_seconds": t_torch, "pytorch_images_per_second": args.batch / t_torch}
    print(f"PyTorch eager CPU: {t_torch * 1e3:.1f} ms/step, {args.batch / t_torch:.0f} images/s")
    if args.with_calib:
        t_calib = calib_step_seconds()
        result.update(calib_step_seconds=t_calib, calib_over_pytorch_time=t_calib / t_torch)
        print(f"calib reference: {t_calib * 1e3:.1f} ms/step; calib/PyTorch time ratio {t_calib / t_torch:.2f}")
    if args.json:
        json.dump(result, open(args.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
