"""Benchmark scenarios: each module has `async def run(cfg: BenchConfig) -> list[Metric]`."""
