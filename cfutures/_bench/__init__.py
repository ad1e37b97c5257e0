"""The benchmark runner and its workloads (private).

They ship with the package so that `python -m cfutures` can show its speed
table wherever cfutures is installed; the checkout's `python -m
benchmarks.run` is a thin entry to run.py here that also saves results.
"""
