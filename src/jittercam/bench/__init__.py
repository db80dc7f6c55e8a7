"""The benchmark: the paper's experiments (§4) over a dataset, stored row by row in SQLite, and the report."""
