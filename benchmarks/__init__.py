"""Benchmarks and the evidence behind the README's figures: speed and memory of Luna against
softmax attention (paper Table 2; `speed_memory`, `step_cost`, `causal_speed`), luna_jax against the
authors' PyTorch Luna (`vs_pytorch`, on one GPU `gpu_session`), the sweep of LRA runs
(`reproduce`) and its leaderboard (`report`), the precision studies (`precision_gradients`,
`precision_curves`) and the converter's equivalence with the authors' code
(`fairseq_equivalence`)."""
