"""The payload: a safetensors file whose structure JSON carries the checkpoint's non-tensor part.

safetensors and structure need no torch; the other modules do (encode, decode, lazy, ...)."""
