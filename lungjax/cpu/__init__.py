"""The CPU fast path: C++ XLA:CPU kernels for the study CNN (kernels.py, kernels.cc) and the host-memory policy
(host_memory.py, glibc keeping a train step's freed buffers for the next one).

Only two places use it: lungjax.models.create_model, which chooses the CNN's lowering when the model is built, and
lungjax.main's start-up, which applies config.train.keep_freed_host_memory_gb. The model code itself is portable JAX.
"""
