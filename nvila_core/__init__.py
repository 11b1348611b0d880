"""nvila_core: a ROS-free implementation of the NVILA vision-language model and its tooling.

Model (config, vision tower, tiling, projector, temporal pooling, LLM, prompting, checkpoint IO),
and the runtime `Engine` that the robot side calls. Never imports rclpy or nvila_nav.
"""

__version__ = "0.1.0"
