"""Reproductions of the papers' experiments at small scale on offline data.

Shared by ``make demo`` (quick settings) and the method benchmarks in ``benchmarks/``.
"""
