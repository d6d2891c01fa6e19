"""Weight sync from the learners to the generators: buckets and checksums (buckets.py), the learner's side
(sender.py), the generator's side (receiver.py) and the driver's orchestration with its probe (coordinator.py).

Transport: learner rank 0 puts each bucket of full tensors into Ray's object store (shared memory on a
node, Ray's object transfer across nodes); each generator pulls the buckets one at a time and streams them
into its engine's in-place reload hook. Nothing touches the disk. Both sides hash the tensors in the same
order, so a corrupted or partial transfer fails the run, and a log-prob probe compares learner and generator.
"""
