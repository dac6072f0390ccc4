"""Element types that carry provenance."""
import torch

#: real floating dtypes: what a source (``Tracked(x)``) may be
FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: dtypes whose values carry provenance: real floating, and complex intermediates (fft, polar ...)
DIFFERENTIABLE = FLOATING + (torch.complex32, torch.complex64, torch.complex128)
