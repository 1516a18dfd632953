"""Layer 4, ``theory``: what is exact or deterministic, no Monte Carlo.

- ``activations``: phi, phi' and their registry (GeLU, tanh, sigmoid, softplus, ReLU, user ones).
- ``hermite``: Hermite coefficients c_k of phi (Eq. 49-50), tails, second moments, dual kernels.
- ``expected``: E[M0]/d1 = sum_k c_k^2 (X^T X)^{o k} (Eq. 56), by series and by 2-D quadrature.
- ``khatri_rao``: X^{*t} and its Gram, extreme singular values, rank by count.
- ``hadamard``: the all-orders lower bound on lambda_min(E[M0]) (Eq. 58 summed over orders).
- ``orders``: which orders t a bound may use (``t_auto``).
- ``bounds``: the paper's closed-form bounds (Eq. 9, 13, 19, 58, 67, 69) as plain functions.
- ``asymptotics``: the deterministic equivalent of M0's spectrum (Louart-Liao-Couillet 2018).

Rule: imports ``backend``, ``linalg``, ``sampling`` and modules of this folder; nothing above.
"""
