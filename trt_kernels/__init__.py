"""Triton kernels (W4A16, W8A8) and their TensorRT plugin registration. Depends on nothing of ours."""
