"""ament_python package nvila_nav: the ROS 2 nodes, nvila_core and trt_kernels in one distribution."""

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
            "nvila-nav-report = nvila_nav.report:main",
            "nvila-nav-agreement = nvila_nav.agreement:main",
            "navigator = nvila_nav.nodes.navigator:main",
            "motion_controller = nvila_nav.nodes.motion_controller:main",
            "sim = nvila_nav.nodes.simulator:main",
            "evaluator = nvila_nav.nodes.evaluator:main",
            "voice_teleop = nvila_nav.nodes.voice_teleop:main",
        ],
    },
)
