"""The largest batch that fits under a memory cap (``python -m bench.fit``): probes in their own processes under
an enforced limit (:mod:`bench.fit.probe`), the search (:mod:`bench.fit.search`), confirmation by an epoch."""
