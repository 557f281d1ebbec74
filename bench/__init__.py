"""madsidecar benchmarks: `./dev bench` (about 2.5 min) or `./dev bench --quick` (about 30 s).

See docs/performance.md for what each figure means and the targets they are held to.
"""
