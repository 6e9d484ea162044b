"""The benchmark harness, ``python -m simplenn.bench``: the command (:mod:`.cli`), the
timed work (:mod:`.workloads`), the contenders by name (:mod:`.contenders`), the
PyTorch peer (:mod:`.peers`), the GPU suite (:mod:`.gpu`), the Markdown table of a
results file (:mod:`.report`) and the machine's description (:mod:`.sysinfo`)."""
