"""Certified lower bounds on the best possible layer error, and the optimality gap of a mask."""
from .bounds import LayerCertificate, certify_layer, jacobi_shift, relaxation_bound, rowwise_shifts

__all__ = ["LayerCertificate", "certify_layer", "jacobi_shift", "relaxation_bound", "rowwise_shifts"]
