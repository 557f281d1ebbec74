"""Fuzzing of the frame decoder: the contract's reference (oracle) and the libFuzzer target."""
