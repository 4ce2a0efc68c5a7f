"""Adapters of the model families beyond CogVideoX, HunyuanVideo and Wan: one module each, registered on first use."""
