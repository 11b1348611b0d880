"""ament_python package nvila_nav: the ROS 2 nodes, nvila_core and trt_kernels in one distribution.

Every console script has a project prefix (nvila-core, nvila-sim, nvila-nav-*), so a pip install
puts no generic name such as `navigator` or `sim` on PATH. ROS users keep `ros2 run nvila_nav
navigator` and the launch files' `executable="navigator"`: the node names are small wrapper
scripts (resource/executables/) installed to lib/nvila_nav, where ros2 run looks, each running
the node's nvila-nav-<node> console script (setup.cfg puts those in lib/nvila_nav under colcon).
"""

import os
from glob import glob

from setuptools import find_packages, setup

package_name = "nvila_nav"


def data_tree(folder: str) -> list[tuple[str, list[str]]]:
    """Install every file under `folder` to share/nvila_nav/<folder>/..., keeping sub-folders."""
    entries = []
    for dirpath, _, filenames in os.walk(folder):
        files = [os.path.join(dirpath, f) for f in sorted(filenames) if not f.endswith(".pyc")]
        if files:
            entries.append((os.path.join("share", package_name, dirpath), files))
    return entries


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={"nvila_nav.voice": ["data/*.txt.gz"]},
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*launch.py")),
        ("lib/" + package_name, sorted(glob("resource/executables/*"))),
        *data_tree("config"),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest", "pytest-timeout", "ruff"]},
    zip_safe=False,
    maintainer="nvila_nav maintainers",
    maintainer_email="maintainers@nvila-nav.dev",
    description="Language-instructed robot navigation with NVILA on ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "nvila-core = nvila_core.cli:main",
            "nvila-sim = nvila_nav.sim.cli:main",
            "nvila-nav-bringup = nvila_nav.nodes.bringup:main",
            "nvila-nav-demo = nvila_nav.demo:main",
            "nvila-nav-report = nvila_nav.report:main",
            "nvila-nav-agreement = nvila_nav.agreement:main",
            "nvila-nav-grounding = nvila_nav.grounding:main",
            "nvila-nav-landmark-probe = nvila_nav.landmark_probe:main",
            "nvila-nav-close-ahead = nvila_nav.close_ahead:main",
            "nvila-nav-closed-loop = nvila_nav.closed_loop:main",
            "nvila-nav-dagger = nvila_nav.dagger:main",
            "nvila-nav-decision-bench = nvila_nav.faults.decision_bench:main",
            "nvila-nav-navila-bench = nvila_nav.navila_bench:main",
            "nvila-nav-voice-bench = nvila_nav.voice.bench:main",
            # the nodes; `ros2 run nvila_nav <node>` runs them through resource/executables/<node>
            "nvila-nav-navigator = nvila_nav.nodes.navigator:main",
            "nvila-nav-motion-controller = nvila_nav.nodes.motion_controller:main",
            "nvila-nav-sim = nvila_nav.nodes.simulator:main",
            "nvila-nav-evaluator = nvila_nav.nodes.evaluator:main",
            "nvila-nav-voice-teleop = nvila_nav.nodes.voice_teleop:main",
        ],
    },
)
