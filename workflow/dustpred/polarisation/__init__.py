"""Polarisation (issue 28): Stokes Q/U on top of the intensity stages; no rule uses it yet.

- ``spin2``       Q/U on gnomonic cutouts: the cutout frame, its symmetries, flat-sky E/B
- ``sky``         the synthetic polarised dust and its HI-traced part (the oracle)
"""
