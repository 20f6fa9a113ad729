"""GPU: local_fusion's equivalence to the float64 twin (gpu_fusion.check_equivalence's rule: every
output and gradient, N = 20001, B = 3) and run-to-run determinism at widths other than the paper's,
for bf16 and fp16 tl.dot operands with fp32 inputs and for bf16 inputs. One line per case.

    cd scripts && PYTHONPATH=$PWD/..:$PWD python gpu_fusion_widths.py [F,Hd,D ...]   # default: seven widths
"""
import sys
WIDTHS = [tuple(map(int, a.split(","))) for a in sys.argv[1:]] or \
    [(32, 64, 3), (64, 96, 3), (64, 128, 3), (48, 96, 16), (96, 128, 3), (64, 256, 3), (32, 256, 8)]
sys.argv = ["gpu_fusion.py"]  # gpu_fusion reads its own flags at import
import torch  # noqa: E402
import gpu_fusion as g  # noqa: E402
from instant4d.kernels.fusion import FusionConfig  # noqa: E402
for f, hd, d in WIDTHS:
    for dot, dtype in (("bf16", torch.float32), ("fp16", torch.float32), ("bf16", torch.bfloat16)):
        config = FusionConfig(feature_dim=f, hidden_dim=hd, color_dim=d, dot_operands=dot)
        try:
            rows = g.check_equivalence(config, dtype, n=20_001, b=3)
            print(f"F={f} Hd={hd} D={d} {dot} {dtype}: {g.equivalence_verdict(rows)}", flush=True)
        except Exception as exc:
            print(f"F={f} Hd={hd} D={d} {dot} {dtype}: error {type(exc).__name__}: {str(exc)[:200]}", flush=True)
