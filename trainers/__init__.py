"""Training and generation (see README.md). Importing the package turns off transformers' hub kernels:
models run installed code only (`quiet.no_hub_kernels`)."""

from trainers.quiet import no_hub_kernels

no_hub_kernels()
