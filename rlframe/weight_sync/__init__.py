"""Weight sync from the learners to the generators: what is sent and its checksums (buckets.py), the two
transports (collective.py: tensor buckets broadcast over a gloo/NCCL group of learner rank 0 and the
generators; sender.py and receiver.py: pickled buckets through Ray's object store) and the driver's
orchestration with its log-prob probe (coordinator.py).

Nothing touches the disk. Both ends hash what moves, so a corrupted or partial transfer fails the run, and
a probe compares the learner's and every generator's log-probs on a fixed sequence.
"""
