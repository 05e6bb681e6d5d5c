"""``fabric run SCENARIO.toml``: an experiment against a real local cluster (issue 12).

``runner`` starts the cluster and drives the run; ``workloads`` are the clients whose
every operation goes into the history; ``faults`` applies the fault schedule;
``sampler`` watches the cluster once a second; ``report`` writes the output folder;
``verdicts`` is the one door to the history checkers.
"""
