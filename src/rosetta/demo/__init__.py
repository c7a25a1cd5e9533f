"""The coherent fictional enterprise used for demos, development and benchmarks."""
