"""Calibration statistics: the --importance file (`importance`: per-weight input energy, Gram
matrices, row fractions and per-tensor sensitivity, validated on open), the collector that
writes it (`collect`: `quant collect-importance`), and the numpy BERT forward pass the collector
and the benchmarks share (`bert`)."""
