"""Compilation of the model forward: torch.compile (`torch_compile.py`) and CUDA graphs
(`cuda_graph.py`), chosen by `compilation.mode`."""
