"""Tools beside the service: synthetic data for demos and benchmarks (``generate``)."""
