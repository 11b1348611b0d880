"""nvila_nav: the robot side — frame history, action grammar, controller, simulator and ROS 2 nodes."""

__version__ = "0.1.0"
