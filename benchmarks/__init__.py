"""Speed and memory benchmarks of Luna against softmax attention (paper Table 2); see
`speed_memory`."""
