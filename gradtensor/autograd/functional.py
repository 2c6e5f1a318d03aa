"""Higher-level autograd: vjp, jvp, hvp, vhp, jacobian, hessian."""
