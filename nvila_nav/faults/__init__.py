"""Tools that drive the ROS 2 graph from outside: a scripted robot (`robot.py`), the fault suite
(`suite.py`, `make faults`), the soak run (`soak.py`, `make soak`) and the decision-latency
benchmark (`decision_bench.py`, part of `make bench`)."""
