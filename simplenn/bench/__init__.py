"""The benchmark harness, ``python -m simplenn.bench``: the command (:mod:`.cli`), the
throughput grid (:mod:`.throughput`), the timed work (:mod:`.workloads`), the contenders
by name (:mod:`.contenders`), the PyTorch peer (:mod:`.peers`), the GPU, recipe and
augmentation suites (:mod:`.gpu`, :mod:`.recipe`, :mod:`.augment`), the Markdown table of
a results file (:mod:`.report`), the machine's description (:mod:`.sysinfo`) and the
children that end with the bench (:mod:`.lifeline`)."""
