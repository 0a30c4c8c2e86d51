"""The VANS models: the Qwen2.5-VL reasoner, the Wan2.1 renderer and the pipeline joining them."""
