"""Compile both kernels for an H100 (sm_90) without a GPU: triton's front end, its passes and
ptxas all run on the CPU, so this catches what the interpreter lets through (constexpr
branches, types, layouts) before the first GPU session. Run: python -m handwriting_hm.hmlstm.paths.triton_compile_check."""
import itertools
import os

os.environ.pop("TRITON_INTERPRET", None)  # the interpreter would hand back Python functions

from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, compile

from handwriting_hm.hmlstm.paths import triton_kernels as kernels

CONSTEXPRS = ("BLOCK_B", "BLOCK_H", "IS_BOTTOM", "IS_TOP", "LAYER_NORM", "HAS_MASK", "MODE", "STRAIGHT_COPY")
SCALARS = {"eps": "fp32", "slope": "fp32"}  # the other non-pointer arguments are strides and sizes


def signature(kernel, dtype: str) -> dict[str, str]:
    types = {}
    for name in kernel.arg_names:
        if name in CONSTEXPRS:
            types[name] = "constexpr"
        elif name.endswith("_ptr"):
            types[name] = f"*{dtype}"
        else:
            types[name] = SCALARS.get(name, "i32")
    return types


def main() -> None:
    target = GPUTarget("cuda", 90, 32)
    count = 0
    for kernel in (kernels.hmlstm_forward_kernel, kernels.hmlstm_backward_kernel):
        modes = (0, 1, 2) if "MODE" in kernel.arg_names else (None,)
        straights = (False, True) if "STRAIGHT_COPY" in kernel.arg_names else (None,)
        for dtype, (bottom, top), layer_norm, mask, mode, straight, blocks in itertools.product(
                ("fp32", "fp64"), ((True, False), (False, False), (False, True)), (False, True), (False, True),
                modes, straights, ((4, 8), (1, 1024))):
            constexprs = {"BLOCK_B": blocks[0], "BLOCK_H": blocks[1], "IS_BOTTOM": bottom, "IS_TOP": top,
                          "LAYER_NORM": layer_norm, "HAS_MASK": mask}
            if mode is not None:
                constexprs["MODE"] = mode
            if straight is not None:
                constexprs["STRAIGHT_COPY"] = straight
            compiled = compile(ASTSource(kernel, signature(kernel, dtype), constexprs),
                               target=target, options={"num_warps": 8 if blocks[1] > 256 else 4})
            assert compiled.asm["cubin"]
            count += 1
    print(f"compiled {count} variants for sm_90")


if __name__ == "__main__":
    main()
