"""Fault injection for the ROS 2 graph: a scripted robot (`robot.py`), the fault suite
(`suite.py`, `make faults`) and the soak run (`soak.py`, `make soak`)."""
