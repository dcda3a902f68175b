"""Per-group Fisher information, its neutralisation, and what it is used for.

This implements the second published idea in docs/design.md#fisher-neutralisation (Fisher weight-importance
neutralisation with low-rank factorisation). The paper's full text was not available to us, so
what follows is OUR formulation of the published idea, not a reproduction of the paper's
equations.

Formulas (theta* = pre-trained backbone with the fitted head, a linear probe on the frozen backbone
(``head``); g = demographic group; i = one scalar parameter of a linear or norm layer):

* per-group diagonal empirical Fisher, true labels, per-sample gradients (``compute``)::

      F^g_i = mean_{(x,y) in g} ( d log p(y|x; theta*) / d theta_i )^2

  with log p(y|x) = log sigmoid(z) for y=1 and log sigmoid(-z) for y=0 for a one-logit binary
  head, log_softmax(z)[y] otherwise;
* neutralisation and disparity (``neutralise``)::

      F^g_n = F^g / ||F^g||_1
      I     = mean_g F^g_n
      D     = max_g F^g_n - min_g F^g_n
      I'    = I * exp(-gamma * D / mean(D))

* (a) EWC penalty (``penalty``):  lambda/2 * sum_i I'_i (theta_i - theta*_i)^2
* (b) Fisher-weighted SVD of a linear layer W (m x n) (``fairtune_ray.models.lowrank``):
  s_j = sqrt(sum_k I'_jk), U S V^T = svd(diag(s) W), A = diag(s)^-1 U_r S_r, B = V_r^T
* (c) search prior (``prior``): mean D per mask parameter group; the most group-specific
  groups are frozen in a few seed masks.

Statistics per group and layer are tabulated, saved to Parquet and plotted (``stats``). One
computation for a model and dataset (``task``) is cached on disk and read by the trials
(``cache``); the search's use of it (MLflow logging, Tune seed points) is in
``fairtune_ray.search.fisher_prior``.
"""

from .compute import fisher_param_names, naive_per_group_fisher, per_group_fisher, select_group_samples
from .neutralise import disparity, neutralised_importance, normalise
from .penalty import EWCPenalty, canonical_name
from .prior import prior_masks, rank_groups_by_disparity
from .stats import fisher_statistics, layer_disparity, plot_disparity, save_fisher_parquet

__all__ = [
    "fisher_param_names",
    "per_group_fisher",
    "naive_per_group_fisher",
    "select_group_samples",
    "normalise",
    "neutralised_importance",
    "disparity",
    "EWCPenalty",
    "canonical_name",
    "fisher_statistics",
    "save_fisher_parquet",
    "plot_disparity",
    "layer_disparity",
    "rank_groups_by_disparity",
    "prior_masks",
]
