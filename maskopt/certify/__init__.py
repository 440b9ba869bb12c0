"""Certified lower bounds on the best possible layer error, and the optimality gap of a mask."""
from .bounds import SHIFTS, LayerCertificate, certify_layer, jacobi_shift, layer_shift, relaxation_bound, rowwise_shifts

__all__ = ["SHIFTS", "LayerCertificate", "certify_layer", "jacobi_shift", "layer_shift", "relaxation_bound", "rowwise_shifts"]
