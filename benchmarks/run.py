"""python -m benchmarks.run: the benchmark runner, run from the checkout.

The runner and its workloads live in cfutures/_bench/, inside the package,
so that `python -m cfutures` shows its speed table wherever cfutures is
installed; this entry adds what only a checkout has: a full run saves its
results in benchmarks/results/ (the README's table and chart).
"""
import os
import sys

from cfutures._bench.run import main

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "results")

if __name__ == "__main__":
    sys.exit(main(results_dir=RESULTS_DIR))
