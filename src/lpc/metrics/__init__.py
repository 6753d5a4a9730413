"""Metrics of a classifier's latents and behaviour, one module per family: pure functions of tensors.

collapse (Σ_W, NC1–NC4, norm spread), entropy (Kozachenko–Leonenko), hypercube (binarity and codes),
geometry (all of those in one summary), robustness, reliability.
"""
from .collapse import neural_collapse, norm_coeff_var, within_class_covariance, within_class_variance_share
from .entropy import kl_entropy
from .geometry import geometry_summary
from .hypercube import binarity, hypercube_code
from .reliability import (auroc, fit_class_gaussians, mahalanobis_distance, misclassification_summary, msp_score,
                          odin_score, ood_auroc, ood_auroc_from_outputs)
from .robustness import (bisection_radius, deepfool, lipschitz_estimate, pgd_l2_radius, robustness_summary,
                         select_inputs)

__all__ = [
    "within_class_covariance", "within_class_variance_share", "neural_collapse", "norm_coeff_var", "kl_entropy",
    "binarity", "hypercube_code", "geometry_summary", "auroc", "fit_class_gaussians", "mahalanobis_distance",
    "misclassification_summary", "msp_score", "odin_score", "ood_auroc", "ood_auroc_from_outputs", "deepfool",
    "pgd_l2_radius", "bisection_radius", "lipschitz_estimate", "robustness_summary", "select_inputs",
]
