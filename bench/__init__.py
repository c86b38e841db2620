"""Benchmarks of the clickstream dataflows: throughput (``bench.run``), end-to-end
latency (``bench.latency``) and memory under TTL eviction (``bench.memory``).

See ``docs/performance.md``. These modules only measure: nothing in the
package depends on them.
"""
