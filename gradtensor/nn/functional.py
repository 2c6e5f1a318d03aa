"""Neural-network functions (PyTorch's torch.nn.functional signatures), built on gradtensor ops."""
