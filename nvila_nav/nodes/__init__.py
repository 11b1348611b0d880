"""ROS 2 nodes, one per module; each is thin over the pure-Python logic in nvila_nav."""
