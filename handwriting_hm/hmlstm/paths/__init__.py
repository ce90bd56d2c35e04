"""The HM-LSTM's fast paths: the same function as core.HMLSTM's reference loop, computed faster.

    buffers        the buffers and packing the fused, sparse and Triton paths share
    fused          one autograd Function with a hand-written backward
    sparse         only the rows that do not COPY; its time loop in C where it can (sparse_native)
    sparse_native  the ctypes side of csrc/sparse_loop.c
    few_rows       x @ weight.t() for a few rows (csrc/few_rows.c), and the loader of the C library
    triton_cell    Triton kernels (triton_kernels), CUDA or Triton's interpreter

They import the cell's types (`..cell_types`, whose HMLSTMLike types the model they read) and never the
reference module or the dispatch: `..dispatch` is the one module that names them all.
"""
