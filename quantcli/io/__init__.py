"""Files in and out: readers of weight files (`sources`: .npy/.npz/.safetensors, sharded, lazily,
never unpickling), the safetensors container (`safetensors`), atomic outputs and folder
publication (`output`), and the signal handling that keeps them whole (`signals`).

Nothing here knows about quantization: an input format is one reader in `sources` (and its
container module), an output format one writer in `output`."""
