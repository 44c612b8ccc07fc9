"""Optimal transport (post 6280): exact OT on POT's network simplex, and the LP written out for small problems."""

from kexue.ops.ot.exact import cost_matrix, transport_cost, transport_plan, wasserstein, wasserstein_1d
from kexue.ops.ot.lp import kantorovich_rubinstein_lp, lp_dual, lp_duality, lp_primal

__all__ = ["cost_matrix", "kantorovich_rubinstein_lp", "lp_dual", "lp_duality", "lp_primal", "transport_cost",
           "transport_plan", "wasserstein", "wasserstein_1d"]
