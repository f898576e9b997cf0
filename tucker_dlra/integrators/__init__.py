"""DLRA time integrators for Tucker tensors (filled in by the integrators issue)."""
