"""madsidecar benchmarks: `./dev bench` (about 90 s) or `./dev bench --quick` (about 20 s).

See docs/performance.md for what each figure means and the targets they are held to.
"""
