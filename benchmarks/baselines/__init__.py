"""Baseline exporters the pipeline is measured against (see ``benchmarks.compare``)."""
