"""Where and how a run computes: the device, mixed precision and DDP."""
