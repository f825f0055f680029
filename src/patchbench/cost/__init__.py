"""What a run will cost, before it runs: FLOPs, seconds and memory of the workflow's jobs."""
