"""Compile the fusion kernels for sm_90 without a GPU and print, per kernel at its default launch,
the registers, stack (spill) bytes, SASS instruction count, local loads / stores, asynchronous global-to-shared
copies (LDGSTS, what software pipelining issues) and shared memory bytes (the "sm_90
compiler report" quoted in kernels/fusion.py and docs/benchmarks.md). It uses the Triton installed
here, so for the GPU machine's numbers run it with Triton 3.6 (a venv with triton==3.6.*).

    PYTHONPATH=. python scripts/fusion_compile_report.py [forward forward_saving backward_rows backward_gaussians weight_grads]

Each kernel compiles at its default launch on an sm_90 device (227 KB of shared memory a program), whatever
this machine has. Environment: CONFIG=F,Hd[,colours] picks other widths, DOT=fp16 the fp16 tl.dot operands
(float32 saved rows); LAUNCH_<KERNEL>=block_n,warps,stages,programs_per_sm[,max_registers]
replaces a kernel's launch; SAVE=0 compiles "forward" without saving activations (it saves by default, as
"forward_saving" always does, through descriptors unless TMA=0), DELTA=1 with the delta output (and its
gradient in the backward kernels), ONE_FRAME=1 the per-Gaussian kernel as one frame (B = 1) compiles it; SASS=folder writes each kernel's
SASS there (NAME.sass), to count its instructions by opcode.
"""
import dataclasses
import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from instant4d.kernels import fusion
from instant4d.kernels.fusion import FusionConfig, _constexprs
from fusion_launch_env import launch_from_env

SAVED_POINTERS = {"saved_ptr", "ln_ptr", "grads_ptr"}  # saved_dtype buffers
KERNELS = {"forward": fusion._fusion_forward_kernel, "forward_saving": fusion._fusion_forward_kernel,
           "backward_rows": fusion._backward_rows_kernel,
           "backward_gaussians": fusion._backward_gaussians_kernel, "weight_grads": fusion._weight_grad_kernel}


def report(name: str, config: FusionConfig) -> str:
    kernel = KERNELS[name]
    # the default as on an sm_90 device (227 KB of shared memory a program), not this machine's
    launch = (launch_from_env(config, name) if os.environ.get("LAUNCH_" + name.upper())
              else fusion._default_launch(config, name, False, True))
    constexprs = dict(_constexprs(config, launch, "forward" if name == "forward_saving" else name))
    warps, stages = constexprs.pop("num_warps"), constexprs.pop("num_stages")
    max_registers = constexprs.pop("maxnreg", None)
    if name in ("forward", "forward_saving"):
        saving = name == "forward_saving"
        save = saving or os.environ.get("SAVE", "1") == "1"
        constexprs.update(RETURN_DELTA=os.environ.get("DELTA") == "1", SAVE=save,
                          TMA_SAVE=saving or (save and os.environ.get("TMA", "1") == "1"))
    if name in ("backward_rows", "weight_grads"):
        constexprs.update(HAS_V_DELTA=os.environ.get("DELTA") == "1")
    if name == "backward_gaussians":
        constexprs.update(SUM_ANCHORS=os.environ.get("ONE_FRAME") != "1")
    saved = "*bf16" if fusion.saved_dtype(config) == torch.bfloat16 else "*fp32"
    signature = {a: "constexpr" if a in constexprs else "i32" if not a.endswith("_ptr") else
                 saved if a in SAVED_POINTERS else "*fp32" for a in kernel.arg_names}
    # pointers 16-byte aligned and N a multiple of 16, as Triton specialises the benchmarks' calls
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(kernel.arg_names)
             if signature[a].startswith("*") or a == "N"}
    compiled = triton.compile(
        ASTSource(fn=kernel, signature=signature, attrs=attrs,
                  constexprs={(kernel.arg_names.index(k),): v for k, v in constexprs.items()}),
        target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages, maxnreg=max_registers))
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
    tool = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump")
    usage = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    os.remove(f.name)
    if os.environ.get("SASS"):
        with open(os.path.join(os.environ["SASS"], name + ".sass"), "w") as out:
            out.write(sass)
    field = lambda key: re.search(key + r":(\d+)", usage).group(1)  # noqa: E731
    return (f"{name} {launch} registers {field('REG')} stack {field('STACK')} instructions "
            f"{len(re.findall(r'/[*][0-9a-f]{4,5}[*]/', sass))} LDL {sass.count('LDL')} STL {sass.count('STL')} "
            f"LDGSTS {sass.count('LDGSTS')} shared {compiled.metadata.shared}")


if __name__ == "__main__":
    config = FusionConfig(*map(int, os.environ["CONFIG"].split(","))) if os.environ.get("CONFIG") else FusionConfig()
    config = dataclasses.replace(config, dot_operands=os.environ.get("DOT", config.dot_operands))
    for name in sys.argv[1:] or KERNELS:
        print(report(name, config), flush=True)
