"""cupmon benchmarks: speed, latency, memory and scaling (issue 8).

``python -m benchmarks`` runs every section and prints a table with the
targets beside the figures; ``--quick`` runs a short version, ``--smoke`` the
smallest run that still exercises every section, ``--json FILE`` writes the
figures. Sections:

* :mod:`benchmarks.decode_check` - Decoder + MonitorPipeline throughput
  against a per-frame / per-line Python baseline in the same run;
* :mod:`benchmarks.latency` - frame written to a pty -> alarm event emitted;
* :mod:`benchmarks.gui` - wraps :mod:`benchmarks.gui_redraw` (GUI engineer's);
* :mod:`benchmarks.replay_memory` - an hour replayed with recording: RSS, DB size;
* :mod:`benchmarks.simspeed` - simulator real-time factor (write_capture);
* :mod:`benchmarks.scaling` - cost and memory against cups and rate, plot.

Benchmarks are not tests: nothing here asserts on time. docs/performance.md
holds the method and the latest figures.
"""
