"""Layer 1, ``backend``: where arrays live and the only GPU code.

- ``xp``: the array namespace (NumPy or CuPy); the only module that imports CuPy, and only when asked.
- ``cuda``: finds the CUDA sources (``kernels/`` in a checkout, ``rmt_engine/_kernels`` in a wheel),
  inlines the project headers, compiles once per device.
- ``kernels``: the Python wrappers of the custom kernels (Philox sampling, fused activations,
  Khatri-Rao rows).

Rule: imports nothing of the engine above this folder. Every other layer receives ``xp`` or derives
it from its arrays (``xp.array_namespace``); the custom kernels are the only CuPy-specific code.
"""
