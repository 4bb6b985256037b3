"""Quantum variational Monte Carlo (installed as ``helmholtz.models.quantum``)."""
