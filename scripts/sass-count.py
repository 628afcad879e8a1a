#!/usr/bin/env python3
"""Static SASS against static PTX, per kernel of `calib compile --emit-ptx` output.

The cost model counts PTX instructions, but ptxas folds address arithmetic,
hoists loop invariants and drops moves. A change that shortens the PTX can
leave the machine code as it was: this script tells the two apart without a
GPU. Each `kN*.ptx` in DIR is assembled for sm_90 with the repository's ptxas
and disassembled with nvdisasm. The script prints, per family, the kernels'
static SASS and PTX instruction counts. Given a second directory (the same plan
compiled at another commit), it lists the kernels whose PTX changed and says
whether their SASS changed too.

    scripts/sass-count.py DIR [BASELINE_DIR]

nvdisasm is not part of the test set-up: `.venv/bin/pip install nvidia-cuda-nvdisasm`.
"""

import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tool(name):
    hits = glob.glob(os.path.join(REPO, ".venv/lib/python3*/site-packages/nvidia/*/bin", name))
    if not hits:
        sys.exit(f"sass-count: no {name} under .venv (pip install nvidia-cuda-nvcc-cu12 / nvidia-cuda-nvdisasm)")
    return hits[0]


PTXAS, NVDISASM = tool("ptxas"), tool("nvdisasm")
SASS_LINE = re.compile(r"/\*[0-9a-f]{4}\*/\s+(.*?);")


def ptx_instructions(text):
    """Instruction lines of a PTX file (not directives, labels or declarations)."""
    count = 0
    for line in text.splitlines():
        line = line.strip()
        if line.endswith(";") and not line.startswith((".", "//")):
            count += 1
    return count


def sass(ptx_path):
    """Static SASS instructions of one PTX file, and a digest of the code."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        subprocess.run([PTXAS, "-arch=sm_90", "-o", cubin, ptx_path], check=True, capture_output=True)
        out = subprocess.run([NVDISASM, "-c", cubin], check=True, capture_output=True, text=True).stdout
    code = [m.group(1) for m in SASS_LINE.finditer(out)]
    return len(code), hashlib.sha1("\n".join(code).encode()).hexdigest()[:12]


def survey(directory):
    report = json.load(open(os.path.join(directory, "report.json")))
    family = {l["name"]: l["family"] for l in report["predicted_step"]["launches"]}
    label = {k["name"]: k["label"] for k in report["kernels"]}
    rows = {}
    for path in sorted(glob.glob(os.path.join(directory, "k*.ptx"))):
        name = os.path.basename(path)[:-4]
        text = open(path).read()
        count, digest = sass(path)
        rows[name] = {
            "family": family.get(name, "?"),
            "label": label.get(name.split("_")[0], "?"),
            "ptx": ptx_instructions(text),
            "sass": count,
            "sass_digest": digest,
            "ptx_digest": hashlib.sha1(text.encode()).hexdigest()[:12],
        }
    return rows


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    rows = survey(sys.argv[1])
    totals = {}
    for r in rows.values():
        t = totals.setdefault(r["family"], [0, 0, 0])
        t[0] += 1
        t[1] += r["ptx"]
        t[2] += r["sass"]
    for fam, (n, ptx, sass_) in sorted(totals.items()):
        print(f"{fam:10s} {n:4d} launches  static PTX {ptx:8d}  SASS {sass_:8d}  SASS/PTX {sass_ / max(ptx, 1):.2f}")
    if len(sys.argv) == 3:
        base = survey(sys.argv[2])
        changed = [n for n in rows if n in base and rows[n]["ptx_digest"] != base[n]["ptx_digest"]]
        same = [n for n in changed if rows[n]["sass_digest"] == base[n]["sass_digest"]]
        print(f"{len(changed)} kernels' PTX changed; {len(same)} of them assemble to the same SASS")
        for n in changed:
            b, r = base[n], rows[n]
            verdict = "same SASS" if n in same else f"SASS {b['sass']} -> {r['sass']}"
            print(f"  {n:12s} {r['label'][:48]:48s} PTX {b['ptx']:5d} -> {r['ptx']:5d}  {verdict}")


if __name__ == "__main__":
    main()
