"""OS and device primitives: process and signal handling per OS, CUDA through cuda-python,
Windows named mappings, file locks."""
