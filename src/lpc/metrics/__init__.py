"""Metrics of a classifier's latents and behaviour: pure functions of tensors (geometry, robustness, reliability)."""
from .geometry import (binarity, geometry_summary, hypercube_code, kl_entropy, neural_collapse, norm_coeff_var,
                       within_class_covariance)
from .reliability import (auroc, fit_class_gaussians, mahalanobis_distance, misclassification_summary, msp_score,
                          odin_score, ood_auroc, ood_auroc_from_outputs)
from .robustness import (bisection_radius, deepfool, lipschitz_estimate, pgd_l2_radius, robustness_summary,
                         select_inputs)

__all__ = [
    "within_class_covariance", "neural_collapse", "norm_coeff_var", "kl_entropy", "binarity", "hypercube_code",
    "geometry_summary", "auroc", "fit_class_gaussians", "mahalanobis_distance", "misclassification_summary",
    "msp_score", "odin_score", "ood_auroc", "ood_auroc_from_outputs", "deepfool", "pgd_l2_radius",
    "bisection_radius", "lipschitz_estimate", "robustness_summary", "select_inputs",
]
