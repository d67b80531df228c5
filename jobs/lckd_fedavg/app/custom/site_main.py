"""The client script of the federated LCKD job (NVIDIA FLARE runs it at each site)."""

from bundle.federated.site import main

main()
