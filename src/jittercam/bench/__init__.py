"""The benchmark: experiments over a dataset, stored row by row in SQLite, and the report.

`Settings` and `run` are one `jittercam bench` command; `jittercam.bench.experiments` holds the experiments
(one module each, registered), `store` the results store, `report` the tables and page."""
from .runner import Settings, Summary, run

__all__ = ["Settings", "Summary", "run"]
