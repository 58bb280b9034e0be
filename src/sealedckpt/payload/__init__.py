"""The payload: safetensors layout and the structure of a checkpoint (torch only in codec/lazy)."""
