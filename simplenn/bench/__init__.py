"""The benchmark harness, ``python -m simplenn.bench``: the command (:mod:`.cli`), the
timed work (:mod:`.workloads`), the PyTorch peer (:mod:`.peers`), the contenders by
name (:mod:`.contenders`) and the machine's description (:mod:`.sysinfo`)."""
