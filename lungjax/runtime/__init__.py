"""Runtime plumbing around the loop: the device mesh, multi-host set-up, preemption, the run fingerprint and
its declared fields, workdirs and safe writes, progress bars, TensorBoard event files."""
