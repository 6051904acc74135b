"""engine-pytorch: the lab's PyTorch eager baseline engine and its correctness reference.

`python -m lab_engine_pytorch` is the engine (the lab's protocol on stdin/stdout);
`python -m lab_engine_pytorch.reference` writes the reference outputs from the original GGUF.
"""
