"""Training: dataset readers -> prepare (align, cache) -> fit regression -> train refiner -> evaluate."""
