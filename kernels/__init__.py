"""CUDA kernel sources, shipped inside gradtensor as the package `gradtensor._kernels`.

gradtensor/_kernels is a symlink to this folder, so package discovery finds it (this file makes it
a package), wheels carry the sources, and editable installs and plain checkouts read them in place.
Locate the files with `gradtensor._kernel_files`.
"""
