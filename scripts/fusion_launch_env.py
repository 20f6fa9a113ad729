"""LAUNCH_<KERNEL>=block_n,warps,stages,programs_per_sm[,max_registers] (KERNEL one of fusion.KERNELS, upper case) in the
environment replaces that kernel's default launch, for the fusion scripts' A/B and compiler runs."""
import os

from instant4d.kernels import fusion

_default_launch = fusion.default_launch


def launch_from_env(config: fusion.FusionConfig, kernel: str, device=None) -> fusion.FusionLaunch:
    env = os.environ.get("LAUNCH_" + kernel.upper())
    return fusion.FusionLaunch(*map(int, env.split(","))) if env else _default_launch(config, kernel, device)


def use_launches_from_env() -> None:
    """Make every launch in this process follow LAUNCH_<KERNEL> where it is set."""
    fusion.default_launch = launch_from_env
